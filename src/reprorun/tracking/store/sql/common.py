"""What the SQL store's parts share: limits, the default experiment, page and argument
checks, and ``StoreBase`` (the database and artifact root every part works on)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from reprorun.errors import ResourceNotFound, SearchError, UserInputError
from reprorun.tracking import validation
from reprorun.tracking.entities import Page
from reprorun.tracking.store.database import Connection, Database

MAX_RESULTS = 50_000  # the largest page a search returns (MLflow's limit)
DEFAULT_EXPERIMENT_ID = "0"
DEFAULT_EXPERIMENT_NAME = "Default"
MAX_PARAM_VALUE = 8000
MAX_TAG_VALUE = 8000
MAX_KEY = 250


class StoreBase:
    """The state the store's parts share: its database and artifact root."""

    db: Database
    artifact_root: str

    def _require_run(self, conn: Connection, run_id: str) -> None:
        """The run exists and is active: a deleted run takes no writes (as MLflow)."""
        rows = conn.fetch("SELECT lifecycle_stage FROM runs WHERE run_uuid = :id", {"id": run_id})
        if not rows:
            raise ResourceNotFound(f"Run with id={run_id} not found.")
        if rows[0][0] != "active":
            raise UserInputError(
                f"The run {run_id} must be in the 'active' state. Current state is {rows[0][0]}."
                " Restore it first (runs/restore)."
            )


def artifact_path(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def search_error(message: str) -> UserInputError:
    return SearchError(f"Invalid order_by: {message}.")


def check_max_results(max_results: int) -> int:
    if not isinstance(max_results, int) or isinstance(max_results, bool) or max_results < 1:
        raise UserInputError(f"max_results must be a positive integer, got {max_results!r}.")
    if max_results > MAX_RESULTS:
        raise UserInputError(  # MLflow's wording, which its clients match
            f"Invalid value {max_results} for parameter 'max_results' supplied: "
            f"it must be at most {MAX_RESULTS}."
        )
    return max_results


def page_clause(conditions: list[str], terms: list[str], limit: int, offset: int) -> str:
    """WHERE, ORDER BY and one row more than a page (``page`` tells a next page by it)."""
    return (
        f"WHERE {' AND '.join(conditions)} ORDER BY {', '.join(terms)} "
        f"LIMIT {limit + 1} OFFSET {offset}"
    )


def page(found: list[Any], limit: int, offset: int) -> Page[Any]:
    """One more row than asked was fetched: its presence means there is a next page."""
    from reprorun.tracking.search import encode_page_token

    if len(found) > limit:
        return Page(found[:limit], encode_page_token(offset + limit))
    return Page(found)


def exp_int(experiment_id: str) -> int:
    """An experiment id as the database keeps it; an id that cannot be one is not found."""
    try:
        number = int(experiment_id)
    except (TypeError, ValueError):
        number = None
    if number is None or not -(2**63) <= number < 2**63:  # a 64-bit integer column
        raise ResourceNotFound(f"No experiment with id {experiment_id!r} (ids are integers).")
    return number


def check_length(key: str, kind: str) -> None:
    """A logged model's tag or parameter key: MLflow checks only its length."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY:
        raise UserInputError(f"Invalid {kind} key {key!r}: expected 1 to {MAX_KEY} characters.")


def check_items(
    items: Mapping[str, str],
    max_value: int,
    kind: str,
    check_key: Callable[[str, str], None] = validation.check_key,
) -> None:
    """Keys as MLflow accepts them (``validation.check_key`` unless told), string values of at
    most ``max_value`` characters."""
    for key, value in items.items():
        check_key(key, kind)
        if not isinstance(value, str):
            raise UserInputError(
                f"The {kind} {key!r} must be a string, got {type(value).__name__}."
            )
        if len(value) > max_value:
            raise UserInputError(
                f"The {kind} {key!r} is {len(value)} characters long; the limit is {max_value}."
            )


_ADJECTIVES = (
    "bold",
    "calm",
    "eager",
    "gentle",
    "keen",
    "lucid",
    "merry",
    "nimble",
    "quiet",
    "swift",
    "tidy",
    "witty",
)


_NOUNS = (
    "ash",
    "brook",
    "cedar",
    "dune",
    "fern",
    "grove",
    "heron",
    "iris",
    "lark",
    "moss",
    "oak",
    "reef",
)


def generated_name(run_id: str) -> str:
    """A readable default run name derived from the id, like MLflow's "bold-heron-123"."""
    n = int(run_id[:8], 16)
    return f"{_ADJECTIVES[n % 12]}-{_NOUNS[(n // 12) % 12]}-{n % 1000}"
