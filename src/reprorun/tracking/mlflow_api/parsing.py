"""Reading MLflow's request fields (query string or JSON body) into typed values, with the
messages MLflow's clients expect, and the small JSON helpers the handlers share."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from reprorun import _json
from reprorun.tracking.entities import Metric, ViewType
from reprorun.tracking.mlflow_api.errors import ApiError, Json, bad_value, invalid

INT64 = range(-(2**63), 2**63)  # what MLflow's int64 fields (and the databases) hold


def _field(body: Mapping[str, Any], *names: str, required: bool = False) -> Any:
    for name in names:
        if name in body and body[name] is not None:
            return body[name]
    if required:
        raise invalid(f"Missing value for required parameter '{names[0]}'.")
    return None


def _text(body: Mapping[str, Any], *names: str, required: bool = False) -> str | None:
    value = _field(body, *names, required=required)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_value(value, names[0], f"expected a string, got {type(value).__name__}")
    return value


def _need(body: Mapping[str, Any], *names: str) -> str:
    """A required string parameter (MLflow's INVALID_PARAMETER_VALUE when missing)."""
    value = _text(body, *names, required=True)
    assert value is not None
    return value


def _int(body: Mapping[str, Any], name: str, *, required: bool = False) -> int | None:
    value = _field(body, name, required=required)
    if value is None:
        return None
    expected = bad_value(value, name, "expected a 64-bit integer")
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise expected
    try:
        number = int(value)
    except ValueError:
        raise expected from None
    if number not in INT64:
        raise expected
    return number


def _int_or(body: Mapping[str, Any], name: str, default: int) -> int:
    value = _int(body, name)
    return default if value is None else value


_SPECIAL_DOUBLES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _double(value: Any, name: str) -> float:
    if isinstance(value, str) and value in _SPECIAL_DOUBLES:
        return _SPECIAL_DOUBLES[value]
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise bad_value(value, name, "expected a number")
    try:
        return float(value)
    except (ValueError, OverflowError):
        raise bad_value(value, name, "expected a number") from None


def _json_double(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _key_values(body: Mapping[str, Any], name: str, what: str) -> dict[str, str]:
    items = _field(body, name) or []
    if not isinstance(items, list):
        raise bad_value(items, name, "expected a list of {key, value} objects")
    result: dict[str, str] = {}
    for item in items:
        if not isinstance(item, dict):
            raise invalid(f"Invalid {what} {item!r}: expected an object with key and value.")
        key = _need(item, "key")
        value = _field(item, "value")
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise invalid(
                f"Invalid value {value!r} for {what} {key!r}: expected a string, "
                f"got {type(value).__name__}."
            )
        result[key] = value
    return result


def _metric(item: Any, where: str = "") -> Metric:
    """A metric from its JSON object; ``where`` prefixes the names in messages
    (``metrics[0].``). Its timestamp is required, as MLflow requires it. A ``model_id``
    (with ``dataset_name``/``dataset_digest``) attaches it to that logged model too."""
    if not isinstance(item, dict):
        raise invalid(f"Invalid metric {item!r}: expected an object with key and value.")
    point = _metric_point(item, where)
    if "model_id" in item or "dataset_name" in item or "dataset_digest" in item:
        return replace(
            point,
            model_id=_text(item, "model_id") or None,
            dataset_name=_text(item, "dataset_name") or None,
            dataset_digest=_text(item, "dataset_digest") or None,
        )
    return point


def _metric_point(item: Json, where: str) -> Metric:
    # The common, well-typed case in a few checks (a log-batch carries up to 1,000 of them).
    key = item.get("key")
    value = item.get("value")
    timestamp = item.get("timestamp")
    step = item.get("step", 0)
    if (
        type(key) is str
        and key
        and (type(value) is float or (type(value) is int and -(2**63) <= value < 2**63))
        and type(timestamp) is int
        and type(step) is int
        and -(2**63) <= timestamp < 2**63
        and -(2**63) <= step < 2**63
    ):
        return Metric(key, float(value), timestamp, step)
    key = _need(item, "key")
    value = _double(_field(item, "value", required=True), f"value of metric {key!r}")
    if item.get("timestamp") is None:
        raise invalid(f"Missing value for required parameter '{where}timestamp'.")
    timestamp = _int(item, "timestamp")
    step = _int(item, "step")
    assert timestamp is not None
    return Metric(key, value, timestamp, step or 0)


def _view_type(value: Any) -> ViewType:
    if value is None:
        return ViewType.ACTIVE_ONLY
    names = {1: "ACTIVE_ONLY", 2: "DELETED_ONLY", 3: "ALL"}
    name = names.get(value, value) if isinstance(value, int) else value
    try:
        return ViewType(str(name).upper())
    except ValueError:
        raise invalid(
            f"Invalid view type {value!r}: expected ACTIVE_ONLY, DELETED_ONLY or ALL."
        ) from None


def _string_list(body: Mapping[str, Any], name: str) -> list[str]:
    value = _field(body, name) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
        raise invalid(f"Invalid value {value!r} for '{name}': expected a list of strings.")
    return [str(v) for v in value]


def parse_request(method: str, query: Mapping[str, list[str]], body: bytes) -> Json:
    """GET parameters come from the query string, the others from a JSON object body
    (MLflow also accepts query parameters on DELETE/PATCH, merged under the body)."""
    request: Json = {k: v[0] if len(v) == 1 else v for k, v in query.items()}
    if method == "GET" or not body.strip():
        return request
    try:
        parsed = _json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(
            400, "MALFORMED_REQUEST", f"The request body is not valid JSON: {exc}"
        ) from None
    if not isinstance(parsed, dict):
        raise ApiError(400, "MALFORMED_REQUEST", "The request body must be a JSON object.")
    request.update(parsed)
    return request


MAX_DEPTH = 32  # how deeply free-form JSON a run records may nest (MLflow's messages: ~6)


def _check_depth(value: Any, field: str) -> None:
    """Refuse free-form JSON nested deeper than MAX_DEPTH: once stored, it is sent back in
    every answer about the run, and JSON encoders refuse deep nesting (orjson at 255)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > MAX_DEPTH:
            raise invalid(f"Invalid value for '{field}': nested deeper than {MAX_DEPTH} levels.")
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))


def _json_tag(tags: Mapping[str, str], key: str, kind: type[Any]) -> Any:
    """The JSON ``kind`` (dict or list) a tag holds; empty if it is missing or holds something
    else (any client can set any tag: a bad value must not break reading the run)."""
    try:
        value = _json.loads(tags.get(key) or "null")
    except ValueError:
        return kind()
    return value if isinstance(value, kind) else kind()


def _paged(field: str, items: list[Json], token: str | None) -> Json:
    """A page of a search answer: the items, and the next page's token when there is one."""
    return {field: items, "next_page_token": token} if token else {field: items}


def _file_info(path: str, is_dir: bool, size: int | None) -> Json:
    info: Json = {"path": path, "is_dir": is_dir}
    if size is not None:
        info["file_size"] = size
    return info
