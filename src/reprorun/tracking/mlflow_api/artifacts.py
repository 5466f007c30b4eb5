"""A run's artifact listing (files themselves go through the server's artifact proxy)."""

from __future__ import annotations

from reprorun.tracking.mlflow_api.context import ApiContext
from reprorun.tracking.mlflow_api.errors import Json
from reprorun.tracking.mlflow_api.parsing import (
    _file_info,
    _text,
)
from reprorun.tracking.mlflow_api.routing import route


@route("GET", "/artifacts/list")
def list_artifacts(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """List a run's artifacts under a path."""
    from reprorun.tracking.artifacts import list_artifacts as listing

    run = api.store.get_run(api.run_id(body))
    path = _text(body, "path") or ""
    files = listing(run.info.artifact_uri, path)
    return {
        "root_uri": api.uris.public(run.info.artifact_uri),
        "files": [_file_info(f.path, f.is_dir, f.file_size) for f in files],
    }
