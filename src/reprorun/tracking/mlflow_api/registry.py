"""MLflow's model registry API: ``registered-models/*`` and ``model-versions/*``, with the
JSON shapes, error codes and source checks of MLflow's server (``mlflow/server/handlers.py``):
a local path is registered only from inside the artifacts of the run (``run_id``) or logged
model (``model_id``) it names, and a remote source may not climb with ``..``."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, unquote_plus, urlparse

from reprorun.tracking.mlflow_api.context import ApiContext
from reprorun.tracking.mlflow_api.errors import ApiError, Json, invalid
from reprorun.tracking.mlflow_api.parsing import (
    _field,
    _int_or,
    _key_values,
    _need,
    _paged,
    _string_list,
    _text,
)
from reprorun.tracking.mlflow_api.routing import route
from reprorun.tracking.registry_entities import ModelVersion, RegisteredModel

# --- MLflow's JSON ------------------------------------------------------------------------------


def model_version_json(api: ApiContext, v: ModelVersion) -> Json:
    """A ``ModelVersion`` message (its version is a string, as in MLflow's proto)."""
    result: Json = {
        "name": v.name,
        "version": str(v.version),
        "creation_timestamp": v.creation_timestamp,
        "last_updated_timestamp": v.last_updated_timestamp,
        "current_stage": v.current_stage,
        "source": v.source,
        "status": v.status,
        "tags": [{"key": k, "value": val} for k, val in v.tags.items()],
        "aliases": list(v.aliases),
    }
    for key in ("user_id", "description", "run_id", "run_link", "status_message", "model_id"):
        value = getattr(v, key)
        if value is not None:
            result[key] = value
    return result


def registered_model_json(api: ApiContext, m: RegisteredModel) -> Json:
    result: Json = {
        "name": m.name,
        "creation_timestamp": m.creation_timestamp,
        "last_updated_timestamp": m.last_updated_timestamp,
        "latest_versions": [model_version_json(api, v) for v in m.latest_versions],
        "tags": [{"key": k, "value": v} for k, v in m.tags.items()],
        "aliases": [{"alias": a, "version": str(v)} for a, v in m.aliases.items()],
    }
    if m.description is not None:
        result["description"] = m.description
    return result


def _version(body: Json) -> str:
    value = _field(body, "version", required=True)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise invalid(f"Parameter 'version' must be an integer, got '{value}'.")
    return str(value)


# --- registered models --------------------------------------------------------------------------


@route("POST", "/registered-models/create")
def create_registered_model(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Create a registered model."""
    model = api.store.create_registered_model(
        _need(body, "name"),
        tags=_key_values(body, "tags", "registered model tag"),
        description=_text(body, "description"),
    )
    return {"registered_model": registered_model_json(api, model)}


@route("GET", "/registered-models/get")
def get_registered_model(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Get a registered model, its latest version of each stage, tags and aliases."""
    model = api.store.get_registered_model(_need(body, "name"))
    return {"registered_model": registered_model_json(api, model)}


@route("PATCH", "/registered-models/update")
def update_registered_model(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Change a registered model's description."""
    model = api.store.update_registered_model(_need(body, "name"), _text(body, "description"))
    return {"registered_model": registered_model_json(api, model)}


@route("POST", "/registered-models/rename")
def rename_registered_model(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Rename a registered model (its versions follow)."""
    model = api.store.rename_registered_model(_need(body, "name"), _need(body, "new_name"))
    return {"registered_model": registered_model_json(api, model)}


@route("DELETE", "/registered-models/delete")
def delete_registered_model(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Delete a registered model and all its versions."""
    api.store.delete_registered_model(_need(body, "name"))
    return {}


@route("POST", "/registered-models/search")
def search_registered_models_post(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Search registered models by POST (the MLflow R package's mlflow_search_registered_models
    sends one; MLflow's server takes only GET)."""
    return search_registered_models(api, body, _)


@route("GET", "/registered-models/search")
def search_registered_models(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Search registered models (name, tags.*)."""
    found = api.store.search_registered_models(
        filter_string=_text(body, "filter"),
        max_results=_int_or(body, "max_results", 100),
        order_by=_string_list(body, "order_by"),
        page_token=_text(body, "page_token"),
    )
    return _paged("registered_models", [registered_model_json(api, m) for m in found], found.token)


def _latest_versions(api: ApiContext, body: Json) -> Json:
    found = api.store.get_latest_versions(_need(body, "name"), _string_list(body, "stages"))
    return {"model_versions": [model_version_json(api, v) for v in found]}


@route("POST", "/registered-models/get-latest-versions")
def get_latest_versions(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """The newest version of each stage (stages: for old clients)."""
    return _latest_versions(api, body)


@route("GET", "/registered-models/get-latest-versions")
def get_latest_versions_get(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """The newest version of each stage, by GET."""
    return _latest_versions(api, body)


@route("POST", "/registered-models/set-tag")
def set_registered_model_tag(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Set a tag on a registered model."""
    api.store.set_registered_model_tag(
        _need(body, "name"), _need(body, "key"), _text(body, "value") or ""
    )
    return {}


@route("DELETE", "/registered-models/delete-tag")
def delete_registered_model_tag(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Delete a tag of a registered model."""
    api.store.delete_registered_model_tag(_need(body, "name"), _need(body, "key"))
    return {}


@route("POST", "/registered-models/alias")
def set_registered_model_alias(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Point an alias (e.g. champion) at a version."""
    api.store.set_registered_model_alias(_need(body, "name"), _need(body, "alias"), _version(body))
    return {}


@route("DELETE", "/registered-models/alias")
def delete_registered_model_alias(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Delete an alias."""
    api.store.delete_registered_model_alias(_need(body, "name"), _need(body, "alias"))
    return {}


@route("GET", "/registered-models/alias")
def get_model_version_by_alias(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """The version an alias points at."""
    found = api.store.get_model_version_by_alias(_need(body, "name"), _need(body, "alias"))
    return {"model_version": model_version_json(api, found)}


# --- model versions -----------------------------------------------------------------------------


@route("POST", "/model-versions/create")
def create_model_version(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Create the next version of a registered model from a run's or logged model's files."""
    name = _need(body, "name")
    source = _need(body, "source")
    run_id = _text(body, "run_id") or None
    model_id = _text(body, "model_id") or None
    tags = _key_values(body, "tags", "model version tag")
    if model_id:
        _check_model_source(api, source, model_id)
    else:
        _check_run_source(api, source, run_id)
    version = api.store.create_model_version(
        name,
        source,
        run_id=run_id,
        tags=tags,
        run_link=_text(body, "run_link") or None,
        description=_text(body, "description"),
        model_id=model_id,
        storage_location=_stored_location(api, source),
    )
    return {"model_version": model_version_json(api, version)}


@route("GET", "/model-versions/get")
def get_model_version(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Get a model version."""
    found = api.store.get_model_version(_need(body, "name"), _version(body))
    return {"model_version": model_version_json(api, found)}


@route("PATCH", "/model-versions/update")
def update_model_version(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Change a model version's description."""
    found = api.store.update_model_version(
        _need(body, "name"), _version(body), _text(body, "description")
    )
    return {"model_version": model_version_json(api, found)}


@route("POST", "/model-versions/transition-stage")
def transition_model_version_stage(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Move a version to None, Staging, Production or Archived (old clients)."""
    archive = _field(body, "archive_existing_versions")
    if isinstance(archive, str):
        archive = archive.lower() == "true"
    found = api.store.transition_model_version_stage(
        _need(body, "name"), _version(body), _need(body, "stage"), bool(archive)
    )
    return {"model_version": model_version_json(api, found)}


@route("DELETE", "/model-versions/delete")
def delete_model_version(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Delete a model version (its number is not given again)."""
    api.store.delete_model_version(_need(body, "name"), _version(body))
    return {}


@route("GET", "/model-versions/search")
def search_model_versions(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Search model versions (name, run_id, source_path, version_number, tags.*)."""
    found = api.store.search_model_versions(
        filter_string=_text(body, "filter"),
        max_results=_int_or(body, "max_results", 10_000),
        order_by=_string_list(body, "order_by"),
        page_token=_text(body, "page_token"),
    )
    return _paged("model_versions", [model_version_json(api, v) for v in found], found.token)


@route("GET", "/model-versions/get-download-uri")
def get_model_version_download_uri(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Where a version's files are."""
    uri = api.store.get_model_version_download_uri(_need(body, "name"), _version(body))
    return {"artifact_uri": api.uris.public(uri)}


@route("POST", "/model-versions/set-tag")
def set_model_version_tag(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Set a tag on a model version."""
    api.store.set_model_version_tag(
        _need(body, "name"), _version(body), _need(body, "key"), _text(body, "value") or ""
    )
    return {}


@route("DELETE", "/model-versions/delete-tag")
def delete_model_version_tag(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Delete a tag of a model version."""
    api.store.delete_model_version_tag(_need(body, "name"), _version(body), _need(body, "key"))
    return {}


# --- where a version's files may come from (MLflow's checks) --------------------------------


def _is_local(uri: str) -> bool:
    """MLflow's ``is_local_uri`` for a server: a path, a file: URI of this machine."""
    parsed = urlparse(uri)
    if parsed.scheme == "":
        return True
    host = parsed.hostname
    remote = bool(host) and not (host == "." or str(host).startswith(("localhost", "127.0.0.1")))
    if parsed.scheme == "file":
        if remote:
            raise ApiError(
                500,
                "INTERNAL_ERROR",
                f"{uri} is not a valid remote uri. For remote access on windows, please "
                "consider using a different scheme such as SMB (e.g. smb://<hostname>/<path>).",
            )
        return True
    return False


def _local_path(uri: str) -> Path:
    parsed = urlparse(uri)
    return Path(unquote(parsed.path) if parsed.scheme == "file" else uri).resolve()


def _inside(source: str, location: str) -> bool:
    if not _is_local(location):
        return False
    root = _local_path(location)
    path = _local_path(source)
    return root == path or root in path.parents


def _check_run_source(api: ApiContext, source: str, run_id: str | None) -> None:
    if _is_local(source):
        if run_id and _inside(source, api.store.get_run(run_id).info.artifact_uri):
            return
        raise invalid(
            f"Invalid model version source: '{_shown(source)}'. To use a local path as a model "
            "version source, the run_id request parameter has to be specified and the local "
            "path has to be contained within the artifact directory of the run specified by "
            "the run_id."
        )
    _check_no_climbing(source)


def _check_model_source(api: ApiContext, source: str, model_id: str) -> None:
    if _is_local(source):
        if _inside(source, api.store.get_logged_model(model_id).artifact_location):
            return
        raise invalid(
            f"Invalid model version source: '{_shown(source)}'. To use a local path as a model "
            "version source, the model_id request parameter has to be specified and the local "
            "path has to be contained within the artifact directory of the run specified by "
            "the model_id."
        )
    _check_no_climbing(source)


def _shown(source: str) -> str:
    try:
        return str(_local_path(source))
    except (OSError, ValueError):
        return source


def _check_no_climbing(source: str) -> None:
    """No ``..`` (also percent-encoded) nor NUL in a remote source's path: it could name the
    server's own files."""
    message = (
        f"Invalid model version source: '{source}'. If supplying a source as an http, https, "
        "local file path, ftp, objectstore, or mlflow-artifacts uri, an absolute path must be "
        "provided without relative path references present. Please provide an absolute path."
    )
    decoded = source
    while (unquoted := unquote_plus(decoded)) != decoded:
        decoded = unquoted
    path = re.sub(r"/+", "/", urlparse(decoded).path.rstrip("/"))
    if "\x00" in path or any(part == ".." for part in decoded.split("/")):
        raise invalid(message)
    try:
        resolved = Path(path).resolve().as_posix()
    except (OSError, ValueError):
        raise invalid(message) from None
    if resolved != path:
        raise invalid(message)


def _stored_location(api: ApiContext, source: str) -> str | None:
    """Where ``mlflow-artifacts:/<path>`` is in the server's artifact root (so that
    reprorun on this machine finds the files without the server); None for other sources."""
    parsed = urlparse(source)
    if parsed.scheme != "mlflow-artifacts" or parsed.netloc or not api.uris.proxied:
        return None
    rel = parsed.path.strip("/")
    if not rel or any(part in ("..", ".") for part in rel.split("/")):
        return None
    return api.uris.root.rstrip("/") + "/" + rel
