"""Runs: create, read, search, update, delete, restore; params, metrics, tags, inputs, outputs."""

from __future__ import annotations

import json
from typing import Any

from reprorun import _json
from reprorun.tracking.entities import RunStatus, SystemTags
from reprorun.tracking.mlflow_api.context import OUTPUTS_TAG, ApiContext
from reprorun.tracking.mlflow_api.errors import Json, bad_value, invalid
from reprorun.tracking.mlflow_api.parsing import (
    _check_depth,
    _field,
    _int,
    _int_or,
    _json_tag,
    _key_values,
    _metric,
    _need,
    _paged,
    _string_list,
    _text,
    _view_type,
)
from reprorun.tracking.mlflow_api.routing import route
from reprorun.tracking.search import INPUTS_TAG

# MLflow's log-batch limits (mlflow/utils/validation.py).
MAX_BATCH_METRICS = 1000
MAX_BATCH_PARAMS = 100
MAX_BATCH_TAGS = 100
MAX_BATCH_TOTAL = 1000


# --- runs ---------------------------------------------------------------------------------------


@route("POST", "/runs/create")
def create_run(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
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
def get_run(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Get a run with its latest metrics, params and tags."""
    # A local run whose supervisor died is closed here too: nothing reads as RUNNING forever.
    run = api.refresh(api.store.get_run(api.run_id(body)))
    return {"run": api.run(run, api.metric_points([run]).get(run.info.run_id))}


@route("POST", "/runs/update")
def update_run(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
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
def delete_run(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Mark a run deleted."""
    api.store.delete_run(api.run_id(body))
    return {}


@route("POST", "/runs/restore")
def restore_run(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Restore a deleted run."""
    api.store.restore_run(api.run_id(body))
    return {}


@route("POST", "/runs/log-metric")
def log_metric(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Log one metric value."""
    run_id = api.run_id(body)  # checked first, as MLflow does
    api.store.log_metric(run_id, _metric(body))
    return {}


@route("POST", "/runs/log-parameter")
def log_param(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Log one parameter (immutable once logged)."""
    run_id = api.run_id(body)
    key = _need(body, "key")
    value = _need(body, "value")
    api.store.log_param(run_id, key, value)
    return {}


@route("POST", "/runs/set-tag")
def set_tag(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
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
def delete_tag(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Delete a tag of a run."""
    api.store.delete_tag(api.run_id(body), _need(body, "key"))
    return {}


@route("POST", "/runs/log-batch")
def log_batch(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
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
def log_model(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
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
def log_inputs(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
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


@route("POST", "/runs/outputs")
def log_outputs(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
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


def _set_json_tag(api: ApiContext, run_id: str, key: str, value: Any) -> None:
    text = json.dumps(value, separators=(",", ":"))
    if len(text) > 8000:
        raise invalid(f"Too many inputs or outputs on run {run_id} to record ({len(text)} bytes).")
    api.store.set_tag(run_id, key, text)


def _search_runs(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    page = api.store.search_runs(
        _string_list(body, "experiment_ids"),
        _text(body, "filter"),
        run_view_type=_view_type(_field(body, "run_view_type")),
        max_results=_int_or(body, "max_results", 1000),
        order_by=_string_list(body, "order_by"),
        page_token=_text(body, "page_token"),
    )
    runs = [api.refresh(r) for r in page]
    points = api.metric_points(runs)
    return _paged("runs", [api.run(r, points.get(r.info.run_id)) for r in runs], page.token)


route("POST", "/runs/search")(_search_runs)
route("GET", "/runs/search")(_search_runs)
_search_runs.__doc__ = "Search runs with MLflow's filter grammar, order_by and page tokens."
