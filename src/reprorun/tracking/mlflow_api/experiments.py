"""Experiments: create, read, search, rename, delete, restore, tags."""

from __future__ import annotations

from pathlib import Path

from reprorun.errors import ResourceNotFound
from reprorun.tracking.mlflow_api.context import ApiContext
from reprorun.tracking.mlflow_api.errors import Json
from reprorun.tracking.mlflow_api.parsing import (
    _field,
    _int_or,
    _key_values,
    _need,
    _paged,
    _string_list,
    _text,
    _view_type,
)
from reprorun.tracking.mlflow_api.routing import route

# --- experiments ----------------------------------------------------------------------------------


@route("POST", "/experiments/create")
def create_experiment(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Create an experiment."""
    name = _need(body, "name")
    location = _text(body, "artifact_location") or None
    if location and "://" not in location and ":" not in location.split("/", 1)[0]:
        # A relative folder is the server's (MLflow resolves it against its working folder).
        location = str(Path.cwd() / location)
    elif location:  # a URI: one reprorun can store to (a folder, S3, a server's proxy)
        from reprorun.config import artifact_location

        location = artifact_location(location, "artifact_location", proxied=True)
    tags = _key_values(body, "tags", "experiment tag")
    return {"experiment_id": api.store.create_experiment(name, location, tags)}


@route("GET", "/experiments/get")
def get_experiment(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Get an experiment by id."""
    exp_id = _need(body, "experiment_id")
    return {"experiment": api.experiment(api.store.get_experiment(exp_id))}


@route("GET", "/experiments/get-by-name")
def get_experiment_by_name(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Get an experiment by name."""
    name = _need(body, "experiment_name")
    exp = api.store.get_experiment_by_name(name)
    if exp is None:
        raise ResourceNotFound(f"Could not find experiment with name '{name}'")
    return {"experiment": api.experiment(exp)}


def _search_experiments(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
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
def update_experiment(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Rename an experiment."""
    exp_id = _need(body, "experiment_id")
    new_name = _text(body, "new_name")
    if new_name:
        api.store.rename_experiment(exp_id, new_name)
    return {}


@route("POST", "/experiments/delete")
def delete_experiment(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Mark an experiment and its runs deleted."""
    api.store.delete_experiment(_need(body, "experiment_id"))
    return {}


@route("POST", "/experiments/restore")
def restore_experiment(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Restore a deleted experiment and its runs."""
    api.store.restore_experiment(_need(body, "experiment_id"))
    return {}


@route("POST", "/experiments/set-experiment-tag")
def set_experiment_tag(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Set a tag on an experiment."""
    api.store.set_experiment_tag(
        _need(body, "experiment_id"),
        _need(body, "key"),
        _text(body, "value") or "",
    )
    return {}


@route("POST", "/experiments/delete-experiment-tag")
def delete_experiment_tag(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Delete a tag of an experiment."""
    api.store.delete_experiment_tag(_need(body, "experiment_id"), _need(body, "key"))
    return {}
