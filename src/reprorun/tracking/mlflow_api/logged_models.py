"""Logged models (MLflow 3): create, search, read, finalize, delete, tags, params, files."""

from __future__ import annotations

from reprorun.tracking.entities import LoggedModelStatus
from reprorun.tracking.mlflow_api.context import ApiContext
from reprorun.tracking.mlflow_api.errors import Json, invalid
from reprorun.tracking.mlflow_api.parsing import (
    _field,
    _file_info,
    _int_or,
    _key_values,
    _need,
    _paged,
    _string_list,
    _text,
)
from reprorun.tracking.mlflow_api.routing import route

# --- logged models (MLflow 3) ----------------------------------------------------------------


@route("POST", "/logged-models")
def create_logged_model(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
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
def search_logged_models(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
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
def get_logged_model(api: ApiContext, body: Json, path: dict[str, str]) -> Json:
    """Get a logged model."""
    allow = str(body.get("allow_deleted", "")).lower() == "true"
    return {
        "model": api.logged_model(api.store.get_logged_model(path["model_id"], allow_deleted=allow))
    }


@route("PATCH", "/logged-models/{model_id}")
def finalize_logged_model(api: ApiContext, body: Json, path: dict[str, str]) -> Json:
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
def delete_logged_model(api: ApiContext, body: Json, path: dict[str, str]) -> Json:
    """Mark a logged model deleted."""
    api.store.delete_logged_model(path["model_id"])
    return {}


@route("PATCH", "/logged-models/{model_id}/tags")
def set_logged_model_tags(api: ApiContext, body: Json, path: dict[str, str]) -> Json:
    """Set tags on a logged model."""
    api.store.set_logged_model_tags(path["model_id"], _key_values(body, "tags", "model tag"))
    return {}


@route("DELETE", "/logged-models/{model_id}/tags/{tag_key}")
def delete_logged_model_tag(api: ApiContext, body: Json, path: dict[str, str]) -> Json:
    """Delete a tag of a logged model."""
    from urllib.parse import unquote

    api.store.delete_logged_model_tag(path["model_id"], unquote(path["tag_key"]))
    return {}


@route("POST", "/logged-models/{model_id}/params")
def log_logged_model_params(api: ApiContext, body: Json, path: dict[str, str]) -> Json:
    """Log parameters of a logged model."""
    api.store.log_logged_model_params(
        path["model_id"], _key_values(body, "params", "model parameter")
    )
    return {}


@route("GET", "/logged-models/{model_id}/artifacts/directories")
def list_logged_model_artifacts(api: ApiContext, body: Json, path: dict[str, str]) -> Json:
    """List a logged model's files."""
    from reprorun.tracking.artifacts import list_artifacts as listing

    model = api.store.get_logged_model(path["model_id"])
    sub = _text(body, "artifact_directory_path") or ""
    files = listing(model.artifact_location, sub)
    return {
        "root_uri": api.uris.public(model.artifact_location),
        "files": [_file_info(f.path, f.is_dir, f.file_size) for f in files],
    }
