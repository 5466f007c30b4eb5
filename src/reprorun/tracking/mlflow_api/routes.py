"""Every endpoint of the API: importing the handler modules registers them; ``find`` picks
the handler of a request, ``openapi`` describes them all."""

from __future__ import annotations

import re
from collections.abc import Sequence

# Imported for their routes, in the order of the OpenAPI description.
# isort: off
from reprorun.tracking.mlflow_api import experiments, runs, datasets, metrics  # noqa: F401
from reprorun.tracking.mlflow_api import artifacts, logged_models  # noqa: F401
from reprorun.tracking.mlflow_api import registry  # noqa: F401

# isort: on
from reprorun.tracking.mlflow_api.context import ApiContext
from reprorun.tracking.mlflow_api.errors import ApiError, Json
from reprorun.tracking.mlflow_api.routing import _ROUTES, API3, Handler, route


@route("GET", "/server-info", prefix=API3)
def server_info(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """What the server supports (MLflow 3.18 clients ask before using workspaces)."""
    # As MLflow's server: a proxied S3 root signs multipart uploads and downloads, and MLflow's
    # clients then move large files straight to and from the bucket (mlflow-artifacts/mpu,
    # mlflow-artifacts/presigned) without being told by a variable.
    signs = api.uris.proxied and api.uris.root.startswith("s3://")
    return {
        "store_type": "SqlStore",
        "workspaces_enabled": False,
        "trace_archival_enabled": False,
        "multipart_uploads_enabled": signs,
        "multipart_downloads_enabled": signs,
        "presigned_upload_run_id_supported": True,
        "presigned_upload_model_id_supported": True,
    }


def find(method: str, path: str) -> tuple[Handler, dict[str, str]]:
    """The handler of ``method path`` (``path`` under ``/api/``) and its path parameters;
    MLflow's 405 or 404 when there is none."""
    allowed: list[str] = []
    for route_method, _, pattern, fn in _ROUTES:
        match = pattern.match(path)
        if match is None:
            continue
        if route_method != method:
            allowed.append(route_method)
            continue
        return fn, match.groupdict()
    if allowed:
        raise ApiError(
            405, "ENDPOINT_NOT_FOUND", f"{method} is not allowed on {path}; use {allowed[0]}."
        )
    raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No API endpoint {method} {path}.")


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
