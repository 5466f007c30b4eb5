"""MLflow's rules for what a run may record (``mlflow/utils/validation.py``), checked by the
store so that every way in (REST server, per-run endpoint, CLI, Python API, runner) refuses
the same things with a ``UserInputError`` (a 400 INVALID_PARAMETER_VALUE over REST).

Metric, parameter and tag keys may hold only letters, digits, ``_ - . / :`` and spaces, and
must not read as a different path once normalised (``a//b``, ``./a``, ``../../etc/x``, ``/x``):
MLflow's file store and artifact layouts treat keys as file names.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

from reprorun.errors import UserInputError

MAX_KEY = 250  # MLflow's MAX_ENTITY_KEY_LENGTH
MAX_EXPERIMENT_NAME = 500  # MLflow's MAX_EXPERIMENT_NAME_LENGTH
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_NAME = re.compile(r"[/\w.\- :]*")  # whole key: fullmatch ('$' would pass "abc\n")
_ALLOWED = (
    "letters, digits, underscores (_), dashes (-), periods (.), spaces ( ), colons (:) and "
    "slashes (/)"
)
_MODEL_NAME_BAD = ("/", ":", ".", "%", '"', "'")


def check_key(key: Any, kind: str) -> None:
    """A metric, parameter or (run or experiment) tag key, as MLflow accepts it."""
    if not isinstance(key, str) or not key:
        raise UserInputError(f"Invalid {kind} key {key!r}: a non-empty string is required.")
    if len(key) > MAX_KEY:
        raise UserInputError(
            f"Invalid {kind} key {key[:40]!r}...: it is {len(key)} characters long; "
            f"the limit is {MAX_KEY}."
        )
    if not _NAME.fullmatch(key):
        raise UserInputError(f"Invalid {kind} key {key!r}: keys may only contain {_ALLOWED}.")
    norm = posixpath.normpath(key)
    if norm != key or norm == "." or norm.startswith(("..", "/")):
        raise UserInputError(
            f"Invalid {kind} key {key!r}: keys are used as file names, so a key must be a "
            "normalised relative path (no '..', no leading '/', no '//' or './' parts); "
            f"this one resolves to {norm!r}."
        )


def check_int64(value: Any, what: str) -> int:
    """An integer that fits MLflow's int64 fields (and the database's columns)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserInputError(f"Invalid {what} {value!r}: expected an integer.")
    if not INT64_MIN <= value <= INT64_MAX:
        raise UserInputError(
            f"Invalid {what} {value}: it does not fit in a 64-bit integer "
            f"({INT64_MIN} to {INT64_MAX})."
        )
    return value


def check_metric(key: Any, value: Any, timestamp: Any, step: Any) -> None:
    """A metric point: a valid key, a number (NaN and infinities allowed, as in MLflow), a
    non-negative 64-bit timestamp and a 64-bit step."""
    check_key(key, "metric")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserInputError(f"Invalid value {value!r} for metric {key!r}: expected a number.")
    try:
        float(value)
    except OverflowError:
        raise UserInputError(f"Invalid value for metric {key!r}: too large for a double.") from None
    check_int64(timestamp, f"timestamp of metric {key!r}")
    if timestamp < 0:
        raise UserInputError(
            f"Invalid timestamp {timestamp} of metric {key!r}: it must not be negative "
            "(milliseconds since 1970)."
        )
    check_int64(step, f"step of metric {key!r}")


def check_experiment_name(name: Any) -> str:
    """An experiment name: a non-empty string of at most 500 characters (stripped)."""
    if not isinstance(name, str) or not name.strip():
        raise UserInputError("An experiment name must not be empty.")
    stripped: str = name.strip()
    if len(stripped) > MAX_EXPERIMENT_NAME:
        raise UserInputError(
            f"The experiment name {stripped[:40]!r}... is {len(stripped)} characters long; "
            f"the limit is {MAX_EXPERIMENT_NAME}."
        )
    return stripped


def check_logged_model_name(name: Any) -> None:
    """A logged model's name (MLflow 3): non-empty, without / : . % or quotes, since it is
    used in ``runs:/<run>/<name>`` URIs and folder names."""
    if name is None:
        return
    if not isinstance(name, str) or not name or any(c in name for c in _MODEL_NAME_BAD):
        raise UserInputError(
            f"Invalid model name {name!r}: it must be a non-empty string without any of "
            f"{' '.join(_MODEL_NAME_BAD)}."
        )
