"""The UI's read-only view of the model registry, under ``/ui-api``: registered models with
their aliases and latest version, and a model's versions joined to the run each came from
(its name, status, commit and repository, environment lock), so the models page needs one
request. A run page learns which registered versions it produced the same way.

Names come from the store and go to the page as JSON; ``app.js`` renders them as text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from reprorun.errors import ResourceNotFound
from reprorun.tracking.entities import Run, SystemTags
from reprorun.tracking.mlflow_api.errors import invalid
from reprorun.tracking.registry_entities import ModelVersion, RegisteredModel

MAX_MODELS = 1000  # models listed on the page (the registry's own search pages beyond)
MAX_VERSIONS = 1000  # versions of one model shown
_COMMIT = "mlflow.source.git.commit"
_REPO = "mlflow.source.git.repoURL"


def registry_routes(store: Any, endpoint: Callable[[Callable[[Request], Any]], Any]) -> list[Any]:
    """The registry's UI endpoints over ``store``, each wrapped by ``endpoint`` (JSON and
    MLflow's error shape)."""

    def models(request: Request) -> Any:
        text = request.query_params.get("filter", "").strip()
        if len(text) > 250:
            raise invalid("The model name filter is too long (250 characters at most).")
        pattern = "%" + text.replace("'", "''") + "%"
        found = store.search_registered_models(
            f"name ILIKE '{pattern}'" if text else None,
            max_results=MAX_MODELS,
            order_by=["last_updated_timestamp DESC"],
        )
        return {"models": [_model_summary(m) for m in found]}

    def model(request: Request) -> Any:
        name = request.path_params["name"]
        registered = store.get_registered_model(name)
        versions = store.search_model_versions(
            f"name = '{name.replace(chr(39), chr(39) * 2)}'", max_results=MAX_VERSIONS
        )
        runs: dict[str, Run | None] = {}
        for version in versions:
            if version.run_id and version.run_id not in runs:
                runs[version.run_id] = _run_or_none(store, version.run_id)
        return {
            "model": _model_summary(registered),
            "versions": [_version(v, runs.get(v.run_id or "")) for v in versions],
        }

    def run_versions(request: Request) -> Any:
        run_id = request.path_params["run_id"]
        store.get_run(run_id)  # an unknown run is a 404, not an empty list
        found = store.search_model_versions(f"run_id = '{run_id}'", max_results=MAX_VERSIONS)
        listed = [
            {"name": v.name, "version": str(v.version), "aliases": v.aliases, "source": v.source}
            for v in found
        ]
        return {"versions": listed}

    return [
        Route("/ui-api/registered-models", endpoint(models)),
        Route("/ui-api/registered-models/{name:path}", endpoint(model)),
        Route("/ui-api/runs/{run_id}/model-versions", endpoint(run_versions)),
    ]


def _model_summary(model: RegisteredModel) -> dict[str, Any]:
    latest = max((v.version for v in model.latest_versions), default=None)
    return {
        "name": model.name,
        "description": model.description or "",
        "tags": model.tags,
        "aliases": {alias: str(version) for alias, version in sorted(model.aliases.items())},
        "latest_version": str(latest) if latest is not None else None,
        "created": model.creation_timestamp,
        "updated": model.last_updated_timestamp,
    }


def _run_or_none(store: Any, run_id: str) -> Run | None:
    try:
        return store.get_run(run_id)  # type: ignore[no-any-return]
    except ResourceNotFound:
        return None  # deleted for good since: the version keeps its files


def _version(version: ModelVersion, run: Run | None) -> dict[str, Any]:
    tags = run.data.tags if run is not None else {}
    return {
        "version": str(version.version),
        "aliases": version.aliases,
        "stage": version.current_stage,
        "status": version.status,
        "source": version.source,
        "description": version.description or "",
        "tags": version.tags,
        "created": version.creation_timestamp,
        "model_id": version.model_id or "",
        "run_id": version.run_id or "",
        "run": None
        if run is None
        else {
            "name": run.info.run_name or "",
            "status": run.info.status.value,
            "experiment_id": run.info.experiment_id,
            "commit": tags.get(_COMMIT, ""),
            "repo": tags.get(_REPO, ""),
            "dirty": tags.get("reprorun.git.dirty", ""),
            "lock": tags.get(SystemTags.ENV_LOCK, ""),
            "env": tags.get(SystemTags.ENV, ""),
        },
    }
