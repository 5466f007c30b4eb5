"""``reprorun server``: the ASGI app (Starlette) serving MLflow's REST API, the artifact proxy,
the web UI (``ui.py``), ``/health`` and ``/openapi.json``, behind optional authentication and
body-size limits.

The REST logic lives in ``tracking/mlflow_api``; this module only adapts HTTP to it and wires
the pieces: the artifact proxy (``artifacts.py``, streamed to and from disk in chunks, never a
whole file in memory), the middlewares (``guards.py``) and the small response helpers
(``responses.py``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from reprorun import __version__
from reprorun.server.artifacts import (
    MAX_UPLOAD_ARTIFACT_BYTES,
    not_serving,
    storage_failure,
    write_run_file,
)
from reprorun.server.auth import Authenticator
from reprorun.server.bucket import MULTIPART_DOCS, artifact_response, multipart_routes, proxy_for
from reprorun.server.files import safe_artifact_path
from reprorun.server.guards import AuthMiddleware, CrossSiteMiddleware, HostMiddleware
from reprorun.server.responses import (
    BodyTooLarge,
    MiB,
    error_response,
    has_body,
    json_response,
    no_endpoint,
    read_body,
    too_large,
)
from reprorun.server.ui import ui_routes
from reprorun.tracking.endpoint.request_rules import body_type_refusal
from reprorun.tracking.mlflow_api.api import MlflowApi
from reprorun.tracking.mlflow_api.context import ArtifactUris
from reprorun.tracking.mlflow_api.errors import ApiError, invalid
from reprorun.tracking.mlflow_api.routes import is_endpoint, openapi
from reprorun.tracking.mlflow_api.routing import API, ARTIFACTS_API, MLFLOW_API_VERSION

if TYPE_CHECKING:
    from reprorun.app import Reprorun

CONFIG_ENV = "REPRORUN_SERVER_CONFIG"  # how --workers processes receive the configuration
UPLOAD_ARTIFACT = "/upload-artifact"  # MLflow's web UI's upload, under API and ajax-api
LOGGED_MODEL_FILES = "/logged-models/{model_id}/artifacts/files"


@dataclass(frozen=True)
class ServerConfig:
    backend_store_uri: str | None = None
    artifacts_destination: str | None = None
    serve_artifacts: bool = True
    auth_token: str | None = None
    basic_auth_file: str | None = None
    max_request_bytes: int = 16 * MiB  # JSON API bodies
    max_artifact_bytes: int = 8 * 1024 * MiB  # one uploaded artifact file
    # Host names requests may be addressed to (empty: any). A server on loopback answers only
    # to loopback names, so a web page cannot reach it through DNS rebinding.
    allowed_hosts: tuple[str, ...] = ()

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServerConfig:
        fields = json.loads(os.environ.get(CONFIG_ENV, "{}"))
        fields["allowed_hosts"] = tuple(fields.get("allowed_hosts", ()))
        return cls(**fields)


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def default_allowed_hosts(bind_host: str) -> tuple[str, ...]:
    """Loopback names for a server bound to loopback; any name otherwise."""
    return LOOPBACK_NAMES if bind_host in LOOPBACK_NAMES else ()


def application_for(config: ServerConfig) -> Reprorun:
    """The application object over the store ``config`` names (the embedded default if none),
    its new experiments' artifacts under ``--artifacts-destination`` when given."""
    from reprorun.app import Reprorun
    from reprorun.config import artifact_location

    artifact_root = None
    if config.artifacts_destination:  # a folder or s3://bucket/prefix; any other scheme refused
        artifact_root = artifact_location(config.artifacts_destination, "--artifacts-destination")
    return Reprorun(config.backend_store_uri, artifact_root=artifact_root)


def create_app(
    config: ServerConfig | None = None, application: Reprorun | None = None
) -> Starlette:
    """The server's ASGI app over ``application``'s store (by default the application
    ``config`` names; ``config`` by default from the environment, as ``--workers`` processes
    get it)."""
    from reprorun.backends.notify import refuse_tag_commands
    from reprorun.backends.status import refresh

    # Clients tag experiments: a command their reprorun.notify tag names must never run here.
    refuse_tag_commands()
    config = config or ServerConfig.from_env()
    store = (application or application_for(config)).store
    uris = ArtifactUris(store.artifact_root, proxied=config.serve_artifacts)
    # Reads close the local runs whose supervisor died: nothing reads as RUNNING forever.
    api = MlflowApi(store, uris, functools.partial(refresh, store, engines=False))
    # SQLite answers in microseconds under one lock: calling it on the event loop is faster
    # than a thread hop. Other databases wait on the network: keep the loop free for them.
    inline = getattr(getattr(store, "db", None), "dialect", "") == "sqlite"

    async def rest(request: Request) -> Response:
        if not is_endpoint(request.url.path):  # MLflow's JSON 404, whatever the body
            return error_response(no_endpoint(request.method, request.url.path))
        # Only a JSON body, which another site's page cannot send without the browser asking
        # this server first (no cross-site form or text/plain posts), as MLflow's server.
        why = body_type_refusal(
            request.method, request.headers.get("content-type"), has_body(request)
        )
        if why is not None:
            return error_response(ApiError(415, "INVALID_PARAMETER_VALUE", why))
        try:
            body = await read_body(request, config.max_request_bytes)
        except BodyTooLarge:
            return error_response(too_large(config.max_request_bytes))
        query = {k: request.query_params.getlist(k) for k in request.query_params}
        args = (request.method, request.url.path, query, body)
        status, payload = (
            api.handle(*args) if inline else await run_in_threadpool(api.handle, *args)
        )
        return json_response(status, payload)

    artifacts = proxy_for(uris.root, config.max_artifact_bytes)

    async def artifact(request: Request) -> Response:
        if not config.serve_artifacts:
            return error_response(not_serving())
        try:
            return await artifacts.handle(request)
        except ApiError as exc:
            return error_response(exc)

    async def get_artifact(request: Request) -> Response:
        """MLflow's ``GET /get-artifact?run_id=&path=``: one file of a run's artifacts, as a
        download with its type (the same rules as the proxy's downloads)."""
        query = request.query_params
        try:
            run_id = query.get("run_id") or query.get("run_uuid")
            if not run_id:
                raise invalid("Missing value for required parameter 'run_id'.")
            run = await run_in_threadpool(store.get_run, run_id)
            return await artifact_response(run.info.artifact_uri, query.get("path", ""))
        except Exception as exc:
            return error_response(storage_failure(exc))

    async def logged_model_file(request: Request) -> Response:
        """MLflow's ``GET logged-models/{id}/artifacts/files?artifact_file_path=``: one file of
        a logged model, with the same rules as a run's downloads."""
        try:
            raw = request.query_params.get("artifact_file_path", "")
            if not raw:
                raise invalid("Missing value for required parameter 'artifact_file_path'.")
            model_id = request.path_params["model_id"]
            model = await run_in_threadpool(store.get_logged_model, model_id)
            return await artifact_response(model.artifact_location, raw)
        except Exception as exc:
            return error_response(storage_failure(exc))

    async def upload_artifact(request: Request) -> Response:
        """MLflow's ``POST upload-artifact?run_uuid=&path=`` (its web UI's): the body becomes
        one file of the run's artifacts, at most 10 MB, checked in MLflow's order. Only runs
        whose artifacts are under this server's artifact root take files (with or without
        --no-serve-artifacts, as MLflow), through the same path rules as the artifact proxy."""
        query = request.query_params
        try:
            run_id = query.get("run_uuid") or query.get("run_id")
            if not run_id:
                raise invalid("Request must specify run_uuid.")
            raw = query.get("path")
            if not raw:
                raise invalid("Request must specify path.")
            safe_artifact_path(raw, what="path")
            try:
                data = await read_body(request, MAX_UPLOAD_ARTIFACT_BYTES)
            except BodyTooLarge:
                raise invalid("Artifact size is too large. Max size is 10MB.") from None
            if not data:
                raise invalid("Request must specify data.")
            run = await run_in_threadpool(store.get_run, run_id)
            await run_in_threadpool(write_run_file, uris.root, run.info.artifact_uri, raw, data)
        except Exception as exc:
            return error_response(storage_failure(exc))
        return json_response(200, {})

    # /version answers the MLflow version whose API is served (MLflow's clients compare it);
    # reprorun's own version is in this header of both answers.
    own_version = {"X-Reprorun-Version": __version__}

    async def health(_: Request) -> Response:
        return PlainTextResponse("OK", headers=own_version)

    async def version(_: Request) -> Response:
        return PlainTextResponse(MLFLOW_API_VERSION, headers=own_version)

    async def unknown_api(request: Request) -> Response:
        path = request.url.path
        if path == ARTIFACTS_API or path.startswith(ARTIFACTS_API + "/"):  # a wrong method
            message = f"{request.method} is not allowed on {path}; use GET, PUT or DELETE."
            return error_response(ApiError(405, "ENDPOINT_NOT_FOUND", message))
        return error_response(no_endpoint(request.method, path))

    spec = openapi(
        "reprorun tracking server",
        __version__,
        extra=[
            ("GET", ARTIFACTS_API, "List artifacts under ?path= (artifact proxy)."),
            ("GET", ARTIFACTS_API + "/{artifact_path}", "Download an artifact (streamed)."),
            ("PUT", ARTIFACTS_API + "/{artifact_path}", "Upload an artifact (streamed)."),
            ("DELETE", ARTIFACTS_API + "/{artifact_path}", "Delete an artifact."),
            *MULTIPART_DOCS,
            ("GET", "/", "The web UI (static page; assets under /static)."),
            ("GET", "/ui-api/experiments", "Experiments with runs count and last activity."),
            ("GET", "/ui-api/keys", "Param, metric and tag keys of experiments' runs."),
            ("GET", "/ui-api/runs/{run_id}/log", "A run's log from ?offset= (live follow)."),
            ("GET", "/ui-api/runs/{run_id}/artifact", "A run's artifact file ?path=."),
            ("GET", "/ui-api/runs/{run_id}/models", "A run's logged models, with MLmodel."),
            ("GET", "/ui-api/models/{model_id}/artifact", "A logged model's file ?path=."),
            ("GET", "/get-artifact", "A run's artifact file ?run_id=&path= (MLflow's)."),
            ("POST", API + UPLOAD_ARTIFACT, "Write a run's file ?run_uuid=&path= (MLflow's)."),
            ("GET", API + LOGGED_MODEL_FILES, "A logged model's file ?artifact_file_path=."),
            ("GET", "/health", "Liveness: 200 OK."),
            ("GET", "/version", "The MLflow version whose API is served (header: reprorun's)."),
        ],
    )

    async def openapi_json(_: Request) -> Response:
        return json_response(200, spec)

    methods = ["GET", "POST", "PATCH", "DELETE", "PUT"]
    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/get-artifact", get_artifact, methods=["GET"]),
            Route("/version", version),
            Route("/openapi.json", openapi_json),
            Route(ARTIFACTS_API, artifact, methods=["GET"]),
            Route(ARTIFACTS_API + "/{path:path}", artifact, methods=["GET", "PUT", "DELETE"]),
            *multipart_routes(artifacts, config.serve_artifacts),
            *[
                Route(prefix + UPLOAD_ARTIFACT, upload_artifact, methods=["POST"])
                for prefix in ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow")
            ],
            *[
                Route(prefix + LOGGED_MODEL_FILES, logged_model_file, methods=["GET"])
                for prefix in ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow")
            ],
            Route("/api/2.0/mlflow/{rest:path}", rest, methods=methods),
            Route("/ajax-api/2.0/mlflow/{rest:path}", rest, methods=methods),
            Route("/api/3.0/mlflow/{rest:path}", rest, methods=methods),
            Route("/ajax-api/3.0/mlflow/{rest:path}", rest, methods=methods),
            *ui_routes(store, json_response),
            # Any other API path: MLflow's JSON 404 (clients read its error_code).
            Route("/api/{rest:path}", unknown_api, methods=methods),
            Route("/ajax-api/{rest:path}", unknown_api, methods=methods),
        ],
        lifespan=_closing(store),
    )
    authenticator = Authenticator.from_options(config.auth_token, config.basic_auth_file)
    if authenticator is not None:
        app.add_middleware(AuthMiddleware, authenticator=authenticator)
    app.add_middleware(CrossSiteMiddleware)
    if config.allowed_hosts:
        app.add_middleware(HostMiddleware, allowed=config.allowed_hosts)
    return app


def _closing(store: Any) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        store.close()

    return lifespan
