"""MLflow's REST API 2.0 over a tracking store, independent of any web framework.

``MlflowApi.handle(method, path, query, body)`` returns ``(status, json_dict)``; the Starlette
app (``app.py``) and the per-run endpoint (``sidecar.py``) are thin adapters around it. Request
and response shapes follow MLflow's protos as its server renders them in JSON: int64 as
numbers (numeric strings accepted too), doubles that are not finite as "NaN"/"Infinity",
repeated fields as lists of ``{"key", "value"}``. Errors use MLflow's body
``{"error_code": ..., "message": ...}`` and its HTTP statuses.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from reprorun import _json
from reprorun.errors import (
    ParamConflict,
    ResourceAlreadyExists,
    ResourceNotFound,
    ServerUnavailable,
    StoreFileError,
    TrackingError,
    UserInputError,
)
from reprorun.tracking.entities import (
    Experiment,
    LoggedModel,
    LoggedModelStatus,
    Metric,
    Run,
    RunStatus,
    SystemTags,
    ViewType,
)
from reprorun.tracking.store.base import TrackingStore

API = "/api/2.0/mlflow"
API3 = "/api/3.0/mlflow"  # MLflow 3's newer endpoints (server-info)
# The MLflow version whose REST API this server answers, reported by GET /version: MLflow's
# clients turn features off for older servers (reprorun's own version is in /health).
MLFLOW_API_VERSION = "3.17.2"
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"
# MLflow's log-batch limits (mlflow/utils/validation.py).
MAX_BATCH_METRICS = 1000
MAX_BATCH_PARAMS = 100
MAX_BATCH_TAGS = 100
MAX_BATCH_TOTAL = 1000

Json = dict[str, Any]
INPUTS_TAG = "reprorun.inputs"  # JSON {"datasets": [...], "models": [...]} as MLflow sent them
OUTPUTS_TAG = "reprorun.outputs"  # JSON [{"model_id", "step"}]


class ApiError(Exception):
    """An error answered to the client in MLflow's format."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> Json:
        return {"error_code": self.code, "message": self.message}


def invalid(message: str) -> ApiError:
    return ApiError(400, "INVALID_PARAMETER_VALUE", message)


def error_for(exc: Exception) -> ApiError:
    """MLflow's code and status for a reprorun error."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ResourceNotFound):
        return ApiError(404, "RESOURCE_DOES_NOT_EXIST", str(exc))
    if isinstance(exc, ResourceAlreadyExists):
        return ApiError(400, "RESOURCE_ALREADY_EXISTS", str(exc))
    if isinstance(exc, (UserInputError, ParamConflict)):
        return invalid(str(exc))
    if isinstance(exc, RecursionError):  # JSON nested deeper than Python can follow
        return invalid("The request nests arrays or objects too deeply.")
    if isinstance(exc, (ServerUnavailable, StoreFileError)):
        return ApiError(503, "TEMPORARILY_UNAVAILABLE", str(exc))
    if isinstance(exc, TrackingError):
        return ApiError(400, "INVALID_STATE", str(exc))
    return ApiError(500, "INTERNAL_ERROR", f"{type(exc).__name__}: {exc}")


# --- artifact URIs as clients see them ----------------------------------------------------------


@dataclass(frozen=True)
class ArtifactUris:
    """How stored artifact locations are shown to clients.

    With ``proxied`` (``reprorun server``), locations under the artifact root are shown as
    ``mlflow-artifacts:/<relative path>`` so remote clients upload and download through the
    server's proxy; otherwise (the per-run endpoint, same machine) they are shown as stored.
    """

    root: str  # the store's artifact root (a file:// URI or a path)
    proxied: bool

    @property
    def root_dir(self) -> Path:
        from reprorun.tracking.artifacts import local_dir

        return local_dir(self.root)

    def public(self, stored: str) -> str:
        # A string prefix test, no file-system call: locations under the root were made by
        # joining onto it (resolving paths cost more than the whole search of 100 runs).
        root = self.root.rstrip("/")
        if not self.proxied or not stored.startswith(root + "/"):
            return stored
        return "mlflow-artifacts:/" + stored[len(root) + 1 :]


# --- JSON field readers ------------------------------------------------------------------------


def _shown(value: Any) -> str:
    """A request value as MLflow's messages show it: as JSON (``31``, ``"foo"``)."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def bad_value(value: Any, name: str, expected: str) -> ApiError:
    """MLflow's message for a parameter of the wrong type or range, which its clients match:
    ``Invalid value 31 for parameter 'run_id' supplied``."""
    return invalid(f"Invalid value {_shown(value)} for parameter '{name}' supplied: {expected}.")


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


INT64 = range(-(2**63), 2**63)  # what MLflow's int64 fields (and the databases) hold


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


# --- the API ----------------------------------------------------------------------------------

Handler = Callable[["MlflowApi", Json, dict[str, str]], Json]
_ROUTES: list[tuple[str, str, re.Pattern[str], Handler]] = []


def path_pattern(template: str) -> re.Pattern[str]:
    """The pattern of a route's path: ``{name}`` segments become path parameters."""
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+)" for i, part in enumerate(parts)
    )
    return re.compile(f"^{regex}\\Z")  # \Z: "runs/get\n" is not a route


def route(method: str, path: str, prefix: str = API) -> Callable[[Handler], Handler]:
    """Register a handler for ``method prefix+path``; ``{name}`` segments become path
    parameters."""
    pattern = path_pattern(prefix + path)

    def register(fn: Handler) -> Handler:
        _ROUTES.append((method, prefix + path, pattern, fn))
        return fn

    return register


def routes() -> list[tuple[str, str, str]]:
    """(method, path, summary) of every REST endpoint, for the OpenAPI description."""
    return [
        (method, path, (fn.__doc__ or fn.__name__).strip().splitlines()[0])
        for method, path, _, fn in _ROUTES
    ]


def is_endpoint(path: str) -> bool:
    """Whether ``path`` (``/api/...`` or ``/ajax-api/...``) names an endpoint, by any method."""
    path = path.replace("/ajax-api/", "/api/", 1)
    return any(pattern.match(path) for _, _, pattern, _ in _ROUTES)


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


class MlflowApi:
    """The REST API over a tracking store."""

    def __init__(self, store: TrackingStore, uris: ArtifactUris):
        self.store = store
        self.uris = uris

    def handle(
        self, method: str, path: str, query: Mapping[str, list[str]], body: bytes
    ) -> tuple[int, Json]:
        try:
            return 200, self._dispatch(method, path, query, body)
        except Exception as exc:  # every failure becomes MLflow's error body, never a traceback
            error = error_for(exc)
            if error.status >= 500:  # a bug or an outage: the operator needs the traceback
                logging.getLogger("reprorun.server").exception("%s %s failed", method, path)
            return error.status, error.body()

    def _dispatch(
        self, method: str, path: str, query: Mapping[str, list[str]], body: bytes
    ) -> Json:
        path = path.replace("/ajax-api/", "/api/", 1)
        allowed: list[str] = []
        for route_method, _, pattern, fn in _ROUTES:
            match = pattern.match(path)
            if match is None:
                continue
            if route_method != method:
                allowed.append(route_method)
                continue
            request = parse_request(method, query, body)
            return fn(self, request, match.groupdict())
        if allowed:
            raise ApiError(
                405, "ENDPOINT_NOT_FOUND", f"{method} is not allowed on {path}; use {allowed[0]}."
            )
        raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No API endpoint {method} {path}.")

    # --- rendering ----------------------------------------------------------------------

    def experiment(self, exp: Experiment) -> Json:
        result: Json = {
            "experiment_id": exp.experiment_id,
            "name": exp.name,
            "artifact_location": self.uris.public(exp.artifact_location),
            "lifecycle_stage": exp.lifecycle_stage,
            "tags": [{"key": k, "value": v} for k, v in exp.tags.items()],
        }
        if exp.creation_time is not None:
            result["creation_time"] = exp.creation_time
        if exp.last_update_time is not None:
            result["last_update_time"] = exp.last_update_time
        return result

    def run_info(self, run: Run) -> Json:
        info = run.info
        result: Json = {
            "run_id": info.run_id,
            "run_uuid": info.run_id,
            "run_name": info.run_name,
            "experiment_id": info.experiment_id,
            "user_id": info.user_id,
            "status": info.status.value,
            "start_time": info.start_time,
            "artifact_uri": self.uris.public(info.artifact_uri),
            "lifecycle_stage": info.lifecycle_stage,
        }
        if info.end_time is not None:
            result["end_time"] = info.end_time
        return result

    def metric_points(self, runs: Sequence[Run]) -> dict[str, dict[str, tuple[int, int]]]:
        """(timestamp, step) of the runs' latest metrics, when the store keeps them."""
        points = getattr(self.store, "latest_metric_points", None)
        return points([r.info.run_id for r in runs]) if points else {}

    def run(self, run: Run, points: Mapping[str, tuple[int, int]] | None = None) -> Json:
        """A run as MLflow renders it; ``points``: its latest metrics' (timestamp, step)."""
        data = run.data
        metrics = []
        for key, value in data.metrics.items():
            metric: Json = {"key": key, "value": _json_double(value)}
            if points and key in points:
                metric["timestamp"], metric["step"] = points[key]
            metrics.append(metric)
        # Inputs and outputs are kept in two tags; MLflow shows them as their own fields.
        inputs = _json_tag(data.tags, INPUTS_TAG, dict)
        outputs = _json_tag(data.tags, OUTPUTS_TAG, list)
        return {
            "info": self.run_info(run),
            "data": {
                "metrics": metrics,
                "params": [{"key": k, "value": v} for k, v in data.params.items()],
                "tags": [
                    {"key": k, "value": v}
                    for k, v in data.tags.items()
                    if k not in (INPUTS_TAG, OUTPUTS_TAG)
                ],
            },
            "inputs": {
                "dataset_inputs": inputs.get("datasets", []),
                "model_inputs": inputs.get("models", []),
            },
            "outputs": {"model_outputs": outputs},
        }

    def logged_model(self, model: LoggedModel) -> Json:
        status = {"PENDING": "LOGGED_MODEL_PENDING", "READY": "LOGGED_MODEL_READY"}.get(
            model.status.value, "LOGGED_MODEL_UPLOAD_FAILED"
        )
        info: Json = {
            "model_id": model.model_id,
            "experiment_id": model.experiment_id,
            "name": model.name,
            "creation_timestamp_ms": model.creation_timestamp,
            "last_updated_timestamp_ms": model.last_updated_timestamp,
            "artifact_uri": self.uris.public(model.artifact_location),
            "status": status,
            "tags": [{"key": k, "value": v} for k, v in model.tags.items()],
        }
        for key, value in (
            ("model_type", model.model_type),
            ("source_run_id", model.source_run_id),
            ("status_message", model.status_message),
        ):
            if value:
                info[key] = value
        metrics = []
        for m in model.metrics:
            point: Json = {
                "key": m.key,
                "value": _json_double(m.value),
                "timestamp": m.timestamp,
                "step": m.step,
                "model_id": model.model_id,
                "run_id": m.run_id,
            }
            if m.dataset_name:
                point["dataset_name"] = m.dataset_name
            if m.dataset_digest:
                point["dataset_digest"] = m.dataset_digest
            metrics.append(point)
        return {
            "info": info,
            "data": {
                "params": [{"key": k, "value": v} for k, v in model.params.items()],
                "metrics": metrics,
            },
        }

    def run_id(self, body: Json) -> str:
        run_id = _need(body, "run_id", "run_uuid")
        return run_id


# --- experiments ----------------------------------------------------------------------------------


@route("POST", "/experiments/create")
def create_experiment(api: MlflowApi, body: Json, _: dict[str, str]) -> Json:
    """Create an experiment."""
    name = _need(body, "name")
    location = _text(body, "artifact_location") or None
    if location and "://" not in location and ":" not in location.split("/", 1)[0]:
        # A relative folder is the server's (MLflow resolves it against its working folder).
        location = str(Path.cwd() / location)
    tags = _key_values(body, "tags", "experiment tag")
    return {"experiment_id": api.store.create_experiment(name, location, tags)}


@route("GET", "/experiments/get")
def get_experiment(api: MlflowApi, body: Json, _: dict[str, str]) -> Json:
    """Get an experiment by id."""
    exp_id = _need(body, "experiment_id")
    return {"experiment": api.experiment(api.store.get_experiment(exp_id))}


@route("GET", "/experiments/get-by-name")
def get_experiment_by_name(api: MlflowApi, body: Json, _: dict[str, str]) -> Json:
    """Get an experiment by name."""
    name = _need(body, "experiment_name")
    exp = api.store.get_experiment_by_name(name)
    if exp is None:
        raise ResourceNotFound(f"Could not find experiment with name '{name}'")
    return {"experiment": api.experiment(exp)}


def _search_experiments(api: MlflowApi, body: Json, _: dict[str, str]) -> Json:
    page = api.store.search_experiments(
        view_type=_view_type(_field(body, "view_type")),
        max_results=_int_or(body, "max_results", 1000),
        filter_string=_text(body, "filter"),
        order_by=_string_list(body, "order_by"),
        page_token=_text(body, "page_token"),
    )
    return _paged("experiments", [api.experiment(e) for e in page], page.token)


route("POST", "/experiments/search")(_search_experiments)
route("GET", "/experiments/search")(_search_experiments)
_search_experiments.__doc__ = "Search experiments (filter, order_by, max_results, page_token)."


@route("POST", "/experiments/update")
def update_experiment(api: MlflowApi, body: Json, _: dict[str, str]) -> Json:
    """Rename an experiment."""
    exp_id = _need(body, "experiment_id")
    new_name = _text(body, "new_name")
    if new_name:
        api.store.rename_experiment(exp_id, new_name)
    return {}


@route("POST", "/experiments/delete")
def delete_experiment(api: MlflowApi, body: Json, _: dict[str, str]) -> Json:
    """Mark an experiment and its runs deleted."""
    api.store.delete_experiment(_need(body, "experiment_id"))
    return {}


@route("POST", "/experiments/restore")
def restore_experiment(api: MlflowApi, body: Json, _: dict[str, str]) -> Json:
    """Restore a deleted experiment and its runs."""
    api.store.restore_experiment(_need(body, "experiment_id"))
    return {}


@route("POST", "/experiments/set-experiment-tag")
def set_experiment_tag(api: MlflowApi, body: Json, _: dict[str, str]) -> Json:
    """Set a tag on an experiment."""
    api.store.set_experiment_tag(
        _need(body, "experiment_id"),
        _need(body, "key"),
        _text(body, "value") or "",
    )
    return {}


@route("POST", "/experiments/delete-experiment-tag")
def delete_experiment_tag(api: MlflowApi, body: Json, _: dict[str, str]) -> Json:
    """Delete a tag of an experiment."""
    api.store.delete_experiment_tag(_need(body, "experiment_id"), _need(body, "key"))
    return {}


# --- runs ---------------------------------------------------------------------------------------


@route("POST", "/runs/create")
def create_run(api: MlflowApi, body: Json, _: dict[str, str]) -> Json:
    """Create a run."""
    tags = _key_values(body, "tags", "tag")
    run = api.store.create_run(
        _text(body, "experiment_id") or "0",
        run_name=_text(body, "run_name") or tags.get(SystemTags.RUN_NAME) or None,
        user_id=_text(body, "user_id") or tags.get(SystemTags.USER) or "",
        start_time=_int(body, "start_time"),
        tags=tags,
    )
    return {"run": api.run(run)}


@route("GET", "/runs/get")
def get_run(api: MlflowApi, body: Json, _: dict[str, str]) -> Json:
    """Get a run with its latest metrics, params and tags."""
    from reprorun.backends.status import refresh

    # A local run whose supervisor died is closed here too: nothing reads as RUNNING forever.
    run = refresh(api.store, api.store.get_run(api.run_id(body)), engines=False)
    return {"run": api.run(run, api.metric_points([run]).get(run.info.run_id))}


@route("POST", "/runs/update")
def update_run(api: MlflowApi, body: Json, _: dict[str, str]) -> Json:
    """Update a run's status, end time or name."""
    run_id = api.run_id(body)
    status_text = _text(body, "status")
    status = None
    if status_text:
        try:
            status = RunStatus(status_text)
        except ValueError:
            raise invalid(
                f"Invalid run status {status_text!r}: expected one of "
                f"{', '.join(s.value for s in RunStatus)}."
            ) from None
    api.store.update_run(
        run_id, status=status, end_time=_int(body, "end_time"), run_name=_text(body, "run_name")
    )
    return {"run_info": api.run_info(api.store.get_run(run_id))}


@route("POST", "/runs/delete")
def delete_run(api: MlflowApi, body: Json, _: dict[str, str]) -> Json:
    """Mark a run deleted."""
    api.store.delete_run(api.run_id(body))
    return {}


@route("POST", "/runs/restore")
def restore_run(api: MlflowApi, body: Json, _: dict[str, str]) -> Json:
    """Restore a deleted run."""
    api.store.restore_run(api.run_id(body))
    return {}


@route("POST", "/runs/log-metric")
def log_metric(api: MlflowApi, body: Json, _: dict[str, str]) -> Json:
    """Log one metric value."""
    run_id = api.run_id(body)  # checked first, as MLflow does
    api.store.log_metric(run_id, _metric(body))
    return {}


@route("POST", "/runs/log-parameter")
def log_param(api: MlflowApi, body: Json, _: dict[str, str]) -> Json:
    """Log one parameter (immutable once logged)."""
    run_id = api.run_id(body)
    key = _need(body, "key")
    value = _need(body, "value")
    api.store.log_param(run_id, key, value)
    return {}


@route("POST", "/runs/set-tag")
def set_tag(api: MlflowApi, body: Json, _: dict[str, str]) -> Json:
    """Set a tag on a run."""
    run_id = api.run_id(body)
    key = _need(body, "key")
    value = _text(body, "value") or ""
    if key == SystemTags.RUN_NAME:
        api.store.update_run(run_id, run_name=value)
    else:
        api.store.set_tag(run_id, key, value)
    return {}


@route("POST", "/runs/delete-tag")
def delete_tag(api: MlflowApi, body: Json, _: dict[str, str]) -> Json:
    """Delete a tag of a run."""
    api.store.delete_tag(api.run_id(body), _need(body, "key"))
    return {}


@route("POST", "/runs/log-batch")
def log_batch(api: MlflowApi, body: Json, _: dict[str, str]) -> Json:
    """Log metrics, params and tags in one transaction (all or nothing)."""
    run_id = api.run_id(body)
    raw_metrics = _field(body, "metrics") or []
    if not isinstance(raw_metrics, list):
        raise bad_value(raw_metrics, "metrics", "expected a list of metric objects")
    metrics = [_metric(m, f"metrics[{i}].") for i, m in enumerate(raw_metrics)]
    params = _key_values(body, "params", "param")
    tags = _key_values(body, "tags", "tag")
    for what, count, limit in (
        ("metrics", len(metrics), MAX_BATCH_METRICS),
        ("params", len(params), MAX_BATCH_PARAMS),
        ("tags", len(tags), MAX_BATCH_TAGS),
        ("metrics, params and tags", len(metrics) + len(params) + len(tags), MAX_BATCH_TOTAL),
    ):
        if count > limit:
            raise invalid(
                f"A batch logging request can contain at most {limit} {what}. Got {count}."
            )
    api.store.log_batch(run_id, metrics=metrics, params=params, tags=tags)
    return {}


@route("POST", "/runs/log-model")
def log_model(api: MlflowApi, body: Json, _: dict[str, str]) -> Json:
    """Record a logged model's MLmodel description in the run's model history tag."""
    run_id = api.run_id(body)
    model_json = _need(body, "model_json")
    try:
        model = _json.loads(model_json)
    except ValueError as exc:
        raise invalid(f"model_json is not valid JSON: {exc}") from None
    run = api.store.get_run(run_id)
    history = _json_tag(run.data.tags, SystemTags.LOGGED_MODELS, list)
    history.append(model)
    api.store.set_tag(run_id, SystemTags.LOGGED_MODELS, json.dumps(history))
    return {}


@route("POST", "/runs/log-inputs")
def log_inputs(api: MlflowApi, body: Json, _: dict[str, str]) -> Json:
    """Record a run's input datasets and models."""
    run_id = api.run_id(body)
    run = api.store.get_run(run_id)
    known = _json_tag(run.data.tags, INPUTS_TAG, dict)
    for field in ("datasets", "models"):
        items = body.get(field) or []
        if not isinstance(items, list):
            raise invalid(f"Invalid value for '{field}': expected a list.")
        _check_depth(items, field)
        if not isinstance(known.get(field, []), list):
            known[field] = []
        known.setdefault(field, []).extend(items)
    _set_json_tag(api, run_id, INPUTS_TAG, known)
    return {}


MAX_DATASET_EXPERIMENTS = 20  # MLflow's limit of experiment ids in one search-datasets
MAX_DATASET_SUMMARIES = 1000  # and of the summaries it answers
DATASET_CONTEXT_TAG = "mlflow.data.context"


@route("POST", "/experiments/search-datasets")
def search_datasets(api: MlflowApi, body: Json, _: dict[str, str]) -> Json:
    """The datasets the experiments' runs logged as inputs: name, digest and context."""
    experiment_ids = _string_list(body, "experiment_ids")
    if not experiment_ids:
        raise invalid("SearchDatasets request must specify at least one experiment_id.")
    if len(experiment_ids) > MAX_DATASET_EXPERIMENTS:
        raise invalid(
            f"SearchDatasets request cannot specify more than {MAX_DATASET_EXPERIMENTS} "
            f"experiment_ids. Received {len(experiment_ids)} experiment_ids."
        )
    read = getattr(api.store, "run_tag_values", None)
    if read is None:
        raise ApiError(501, "NOT_IMPLEMENTED", "This store cannot search datasets.")
    summaries: dict[tuple[str, str, str, str], Json] = {}
    for experiment_id, value in read(experiment_ids, INPUTS_TAG):
        datasets = _json_tag({INPUTS_TAG: value}, INPUTS_TAG, dict).get("datasets")
        for item in datasets if isinstance(datasets, list) else []:
            dataset = item.get("dataset") if isinstance(item, dict) else None
            if not isinstance(dataset, dict):
                continue
            tags = item.get("tags")
            context = next(
                (
                    t.get("value")
                    for t in (tags if isinstance(tags, list) else [])
                    if isinstance(t, dict) and t.get("key") == DATASET_CONTEXT_TAG
                ),
                None,
            )
            summary: Json = {
                "experiment_id": experiment_id,
                "name": str(dataset.get("name", "")),
                "digest": str(dataset.get("digest", "")),
            }
            if context:
                summary["context"] = str(context)
            key = (experiment_id, summary["name"], summary["digest"], str(context or ""))
            summaries.setdefault(key, summary)
            if len(summaries) >= MAX_DATASET_SUMMARIES:
                return {"dataset_summaries": list(summaries.values())}
    return {"dataset_summaries": list(summaries.values())}


@route("POST", "/runs/outputs")
def log_outputs(api: MlflowApi, body: Json, _: dict[str, str]) -> Json:
    """Record the logged models a run produced."""
    run_id = api.run_id(body)
    models = body.get("models") or []
    if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
        raise invalid("Invalid value for 'models': expected a list of {model_id, step}.")
    _check_depth(models, "models")
    run = api.store.get_run(run_id)
    known = _json_tag(run.data.tags, OUTPUTS_TAG, list)
    known += [{"model_id": str(m.get("model_id", "")), "step": m.get("step", 0)} for m in models]
    _set_json_tag(api, run_id, OUTPUTS_TAG, known)
    return {}


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


def _set_json_tag(api: MlflowApi, run_id: str, key: str, value: Any) -> None:
    text = json.dumps(value, separators=(",", ":"))
    if len(text) > 8000:
        raise invalid(f"Too many inputs or outputs on run {run_id} to record ({len(text)} bytes).")
    api.store.set_tag(run_id, key, text)


def _search_runs(api: MlflowApi, body: Json, _: dict[str, str]) -> Json:
    page = api.store.search_runs(
        _string_list(body, "experiment_ids"),
        _text(body, "filter"),
        run_view_type=_view_type(_field(body, "run_view_type")),
        max_results=_int_or(body, "max_results", 1000),
        order_by=_string_list(body, "order_by"),
        page_token=_text(body, "page_token"),
    )
    from reprorun.backends.status import refresh

    runs = [refresh(api.store, r, engines=False) for r in page]
    points = api.metric_points(runs)
    return _paged("runs", [api.run(r, points.get(r.info.run_id)) for r in runs], page.token)


route("POST", "/runs/search")(_search_runs)
route("GET", "/runs/search")(_search_runs)
_search_runs.__doc__ = "Search runs with MLflow's filter grammar, order_by and page tokens."


@route("GET", "/metrics/get-history")
def get_metric_history(api: MlflowApi, body: Json, _: dict[str, str]) -> Json:
    """Every value a run logged for one metric."""
    from reprorun.tracking.search import decode_page_token, encode_page_token

    key = _need(body, "metric_key")
    history = api.store.get_metric_history(api.run_id(body), key)
    offset = decode_page_token(_text(body, "page_token"))
    limit = _int_or(body, "max_results", max(len(history), 1))
    if limit < 1:
        raise invalid(f"max_results must be a positive integer, got {limit}.")
    page = history[offset : offset + limit]
    result: Json = {
        "metrics": [
            {"key": m.key, "value": _json_double(m.value), "timestamp": m.timestamp, "step": m.step}
            for m in page
        ]
    }
    if offset + limit < len(history):
        result["next_page_token"] = encode_page_token(offset + limit)
    return result


MAX_BULK_RUNS = 100  # run ids per bulk history request (MLflow's limit)
MAX_BULK_RESULTS = 25000  # points per run of a bulk history (MLflow's default and limit)
MAX_INTERVAL_RESULTS = 2500  # sampled steps per run of an interval history (MLflow's)


def _run_ids(body: Json, name: str) -> list[str]:
    value = body.get(name)
    ids = value if isinstance(value, list) else [] if value in (None, "") else [value]
    if not all(isinstance(i, str) for i in ids):
        raise bad_value(value, name, "expected a list of run ids")
    return ids


def _point(metric: Metric, run_id: str) -> Json:
    return {
        "key": metric.key,
        "value": _json_double(metric.value),
        "timestamp": metric.timestamp,
        "step": metric.step,
        "run_id": run_id,
    }


def _history(api: MlflowApi, run_id: str, key: str) -> list[Metric]:
    points = api.store.get_metric_history(run_id, key)
    return sorted(points, key=lambda m: (m.timestamp, m.step, m.value))


@route("GET", "/metrics/get-history-bulk")
def get_metric_history_bulk(api: MlflowApi, body: Json, _: dict[str, str]) -> Json:
    """One metric's history for several runs (?run_id= repeated), by run id."""
    run_ids = _run_ids(body, "run_id")
    if not run_ids:
        raise invalid("GetMetricHistoryBulk request must specify at least one run_id.")
    if len(run_ids) > MAX_BULK_RUNS:
        raise invalid(
            f"GetMetricHistoryBulk request cannot specify more than {MAX_BULK_RUNS} run_ids. "
            f"Received {len(run_ids)} run_ids."
        )
    key = _text(body, "metric_key")
    if not key:
        raise invalid("GetMetricHistoryBulk request must specify a metric_key.")
    limit = _int_or(body, "max_results", MAX_BULK_RESULTS)
    if not 1 <= limit <= MAX_BULK_RESULTS:
        raise bad_value(limit, "max_results", f"expected 1 to {MAX_BULK_RESULTS}")
    return {
        "metrics": [
            _point(m, run_id)
            for run_id in sorted(run_ids)
            for m in _history(api, run_id, key)[:limit]
        ]
    }


def sampled_steps(steps: list[int], start: int, end: int, count: int) -> set[int]:
    """At most ``count`` of the sorted ``steps`` within [start, end], evenly spaced, and
    the last of them (MLflow's sampling, so a chart shows the same points)."""
    inside = [s for s in steps if start <= s <= end]
    if len(inside) <= count:
        return set(inside)
    interval = len(inside) / count
    return {inside[int(i * interval)] for i in range(count)} | {inside[-1]}


@route("GET", "/metrics/get-history-bulk-interval")
def get_metric_history_bulk_interval(api: MlflowApi, body: Json, _: dict[str, str]) -> Json:
    """One metric of several runs (?run_ids=) at sampled steps, for charts."""
    run_ids = _run_ids(body, "run_ids")
    if not run_ids:
        raise invalid("Missing value for required parameter 'run_ids'.")
    if len(run_ids) > MAX_BULK_RUNS:
        raise invalid(
            f"GetMetricHistoryBulkInterval request must specify at most {MAX_BULK_RUNS} "
            f"run_ids. Received {len(run_ids)} run_ids."
        )
    key = _need(body, "metric_key")
    if not key:
        raise invalid("Missing value for required parameter 'metric_key'.")
    count = _int_or(body, "max_results", MAX_INTERVAL_RESULTS)
    if not 1 <= count <= MAX_INTERVAL_RESULTS:
        raise invalid(f"max_results must be between 1 and {MAX_INTERVAL_RESULTS}.")
    start, end = _int(body, "start_step"), _int(body, "end_step")
    if (start is None) != (end is None):
        raise invalid("If either start step or end step are specified, both must be specified.")
    if start is not None and end is not None and start > end:
        raise invalid(
            f"end_step must be greater than start_step. Found start_step={start} and "
            f"end_step={end}."
        )
    histories = {run_id: _history(api, run_id, key) for run_id in run_ids}
    steps = sorted({m.step for points in histories.values() for m in points})
    if start is None or end is None:
        start, end = 0, (steps[-1] if steps else 0)
    # Each run's first and last step are always kept.
    ends = {
        step
        for points in histories.values()
        if points
        for step in (min(m.step for m in points), max(m.step for m in points))
        if start <= step <= end
    }
    keep = sampled_steps(steps, start, end, count) | ends
    return {
        "metrics": [
            _point(m, run_id)
            for run_id, points in histories.items()
            for m in sorted(points, key=lambda m: (m.step, m.timestamp))
            if m.step in keep
        ]
    }


@route("GET", "/artifacts/list")
def list_artifacts(api: MlflowApi, body: Json, _: dict[str, str]) -> Json:
    """List a run's artifacts under a path."""
    from reprorun.tracking.artifacts import list_artifacts as listing

    run = api.store.get_run(api.run_id(body))
    path = _text(body, "path") or ""
    files = listing(run.info.artifact_uri, path)
    return {
        "root_uri": api.uris.public(run.info.artifact_uri),
        "files": [_file_info(f.path, f.is_dir, f.file_size) for f in files],
    }


def _paged(field: str, items: list[Json], token: str | None) -> Json:
    """A page of a search answer: the items, and the next page's token when there is one."""
    return {field: items, "next_page_token": token} if token else {field: items}


def _file_info(path: str, is_dir: bool, size: int | None) -> Json:
    info: Json = {"path": path, "is_dir": is_dir}
    if size is not None:
        info["file_size"] = size
    return info


# --- logged models (MLflow 3) ----------------------------------------------------------------


@route("POST", "/logged-models")
def create_logged_model(api: MlflowApi, body: Json, _: dict[str, str]) -> Json:
    """Create a logged model (PENDING until finalized); its files go under the source run."""
    model = api.store.create_logged_model(
        _need(body, "experiment_id"),
        name=_text(body, "name"),
        source_run_id=_text(body, "source_run_id"),
        tags=_key_values(body, "tags", "model tag"),
        params=_key_values(body, "params", "model parameter"),
        model_type=_text(body, "model_type"),
    )
    return {"model": api.logged_model(model)}


@route("POST", "/logged-models/search")
def search_logged_models(api: MlflowApi, body: Json, _: dict[str, str]) -> Json:
    """Search logged models of experiments."""
    order_by = body.get("order_by") or []
    if not isinstance(order_by, list) or not all(isinstance(o, dict) for o in order_by):
        raise invalid("Invalid value for 'order_by': expected a list of {field_name, ascending}.")
    datasets = body.get("datasets") or []
    if not isinstance(datasets, list) or not all(
        isinstance(d, dict)
        and all(isinstance(d.get(k, ""), str) for k in ("dataset_name", "dataset_digest"))
        for d in datasets
    ):
        raise invalid(
            "Invalid value for 'datasets': expected a list of {dataset_name, dataset_digest}."
        )
    page = api.store.search_logged_models(
        _string_list(body, "experiment_ids"),
        filter_string=_text(body, "filter"),
        max_results=_int_or(body, "max_results", 100),
        order_by=order_by,
        page_token=_text(body, "page_token"),
        datasets=datasets,
    )
    return _paged("models", [api.logged_model(m) for m in page], page.token)


@route("GET", "/logged-models/{model_id}")
def get_logged_model(api: MlflowApi, body: Json, path: dict[str, str]) -> Json:
    """Get a logged model."""
    allow = str(body.get("allow_deleted", "")).lower() == "true"
    return {
        "model": api.logged_model(api.store.get_logged_model(path["model_id"], allow_deleted=allow))
    }


@route("PATCH", "/logged-models/{model_id}")
def finalize_logged_model(api: MlflowApi, body: Json, path: dict[str, str]) -> Json:
    """Finalize a logged model: READY or FAILED."""
    raw = _field(body, "status", required=True)
    statuses = {
        "LOGGED_MODEL_READY": LoggedModelStatus.READY,
        "LOGGED_MODEL_UPLOAD_FAILED": LoggedModelStatus.FAILED,
        "LOGGED_MODEL_PENDING": LoggedModelStatus.PENDING,
        2: LoggedModelStatus.READY,
        3: LoggedModelStatus.FAILED,
        1: LoggedModelStatus.PENDING,
    }
    if not isinstance(raw, (str, int)) or raw not in statuses:
        raise invalid(
            f"Invalid logged model status {raw!r}: expected LOGGED_MODEL_READY or "
            "LOGGED_MODEL_UPLOAD_FAILED."
        )
    model = api.store.finalize_logged_model(path["model_id"], statuses[raw])
    return {"model": api.logged_model(model)}


@route("DELETE", "/logged-models/{model_id}")
def delete_logged_model(api: MlflowApi, body: Json, path: dict[str, str]) -> Json:
    """Mark a logged model deleted."""
    api.store.delete_logged_model(path["model_id"])
    return {}


@route("PATCH", "/logged-models/{model_id}/tags")
def set_logged_model_tags(api: MlflowApi, body: Json, path: dict[str, str]) -> Json:
    """Set tags on a logged model."""
    api.store.set_logged_model_tags(path["model_id"], _key_values(body, "tags", "model tag"))
    return {}


@route("DELETE", "/logged-models/{model_id}/tags/{tag_key}")
def delete_logged_model_tag(api: MlflowApi, body: Json, path: dict[str, str]) -> Json:
    """Delete a tag of a logged model."""
    from urllib.parse import unquote

    api.store.delete_logged_model_tag(path["model_id"], unquote(path["tag_key"]))
    return {}


@route("POST", "/logged-models/{model_id}/params")
def log_logged_model_params(api: MlflowApi, body: Json, path: dict[str, str]) -> Json:
    """Log parameters of a logged model."""
    api.store.log_logged_model_params(
        path["model_id"], _key_values(body, "params", "model parameter")
    )
    return {}


@route("GET", "/logged-models/{model_id}/artifacts/directories")
def list_logged_model_artifacts(api: MlflowApi, body: Json, path: dict[str, str]) -> Json:
    """List a logged model's files."""
    from reprorun.tracking.artifacts import list_artifacts as listing

    model = api.store.get_logged_model(path["model_id"])
    sub = _text(body, "artifact_directory_path") or ""
    files = listing(model.artifact_location, sub)
    return {
        "root_uri": api.uris.public(model.artifact_location),
        "files": [_file_info(f.path, f.is_dir, f.file_size) for f in files],
    }


# --- server ---------------------------------------------------------------------------------


@route("GET", "/server-info", prefix=API3)
def server_info(api: MlflowApi, body: Json, _: dict[str, str]) -> Json:
    """What the server supports (MLflow 3.18 clients ask before using workspaces)."""
    return {"store_type": "SqlStore", "workspaces_enabled": False, "trace_archival_enabled": False}


def openapi(title: str, version: str, extra: Sequence[tuple[str, str, str]] = ()) -> Json:
    """An OpenAPI 3 description of every endpoint served (request bodies are MLflow's)."""
    paths: Json = {}
    for method, path, summary in [*routes(), *extra]:
        operation: Json = {
            "summary": summary,
            "responses": {
                "200": {"description": "MLflow's response message as JSON"},
                "400": {"description": "INVALID_PARAMETER_VALUE and other client errors"},
                "404": {"description": "RESOURCE_DOES_NOT_EXIST"},
            },
        }
        params = re.findall(r"\{(\w+)\}", path)
        if params:
            operation["parameters"] = [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                for p in params
            ]
        if method in ("POST", "PATCH", "PUT"):
            operation["requestBody"] = {
                "content": {"application/json": {"schema": {"type": "object"}}}
            }
        paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {
            "title": title,
            "version": version,
            "description": "MLflow REST API 2.0 (tracking, logged models, artifact proxy).",
        },
        "paths": paths,
    }
