"""``reprorun server``: the ASGI app (Starlette) serving MLflow's REST API, the artifact proxy,
the web UI (``ui.py``), ``/health`` and ``/openapi.json``, behind optional authentication and
body-size limits.

The REST logic lives in ``tracking/mlflow_api``; this module only adapts HTTP to it and streams
artifacts to and from disk in chunks (never a whole file in memory).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
import tempfile
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from reprorun import __version__
from reprorun import _json as fastjson
from reprorun.server.auth import Authenticator, Backoff, basic_user
from reprorun.server.files import (
    DOWNLOAD_HEADERS,
    artifact_file,
    download_type,
    resolve_under,
    safe_artifact_path,
)
from reprorun.server.ui import ui_routes
from reprorun.tracking.endpoint.request_rules import body_type_refusal
from reprorun.tracking.mlflow_api.api import MlflowApi
from reprorun.tracking.mlflow_api.context import ArtifactUris
from reprorun.tracking.mlflow_api.errors import ApiError, error_for, invalid
from reprorun.tracking.mlflow_api.routes import is_endpoint, openapi
from reprorun.tracking.mlflow_api.routing import API, ARTIFACTS_API, MLFLOW_API_VERSION

if TYPE_CHECKING:
    from reprorun.app import Reprorun

CONFIG_ENV = "REPRORUN_SERVER_CONFIG"  # how --workers processes receive the configuration
MiB = 1024 * 1024
_TOKEN_NAME = re.compile(r"[A-Za-z0-9!#$&+.^_`|~-]+")  # a file name HTTP needs no quotes for
UPLOAD_ARTIFACT = "/upload-artifact"  # MLflow's web UI's upload, under API and ajax-api
LOGGED_MODEL_FILES = "/logged-models/{model_id}/artifacts/files"
MAX_UPLOAD_ARTIFACT_BYTES = 10 * MiB  # MLflow's limit for upload-artifact


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


class _BodyTooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def json_response(status: int, body: dict[str, Any]) -> Response:
    # Non-finite doubles are already "NaN"/"Infinity" strings (mlflow_api renders them).
    return Response(
        fastjson.dumps(body),
        status_code=status,
        media_type="application/json",
    )


def _error(error: ApiError) -> Response:
    return json_response(error.status, error.body())


def application_for(config: ServerConfig) -> Reprorun:
    """The application object over the store ``config`` names (the embedded default if none),
    its new experiments' artifacts under ``--artifacts-destination`` when given."""
    from reprorun.app import Reprorun

    artifact_root = None
    if config.artifacts_destination:
        artifact_root = Path(config.artifacts_destination).expanduser().resolve().as_uri()
    return Reprorun(config.backend_store_uri, artifact_root=artifact_root)


def create_app(
    config: ServerConfig | None = None, application: Reprorun | None = None
) -> Starlette:
    """The server's ASGI app over ``application``'s store (by default the application
    ``config`` names; ``config`` by default from the environment, as ``--workers`` processes
    get it)."""
    from reprorun.backends.status import refresh

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
            return _error(_no_endpoint(request.method, request.url.path))
        # Only a JSON body, which another site's page cannot send without the browser asking
        # this server first (no cross-site form or text/plain posts), as MLflow's server.
        why = body_type_refusal(
            request.method, request.headers.get("content-type"), _has_body(request)
        )
        if why is not None:
            return _error(ApiError(415, "INVALID_PARAMETER_VALUE", why))
        try:
            body = await _read_body(request, config.max_request_bytes)
        except _BodyTooLarge:
            return _error(_too_large(config.max_request_bytes))
        query = {k: request.query_params.getlist(k) for k in request.query_params}
        args = (request.method, request.url.path, query, body)
        status, payload = (
            api.handle(*args) if inline else await run_in_threadpool(api.handle, *args)
        )
        return json_response(status, payload)

    artifacts = ArtifactProxy(uris.root_dir, config.max_artifact_bytes)

    async def artifact(request: Request) -> Response:
        if not config.serve_artifacts:
            return _error(_not_serving())
        try:
            return await artifacts.handle(request)
        except ApiError as exc:
            return _error(exc)

    async def get_artifact(request: Request) -> Response:
        """MLflow's ``GET /get-artifact?run_id=&path=``: one file of a run's artifacts, as a
        download with its type (the same rules as the proxy's downloads)."""
        query = request.query_params
        try:
            run_id = query.get("run_id") or query.get("run_uuid")
            if not run_id:
                raise invalid("Missing value for required parameter 'run_id'.")
            run = await run_in_threadpool(store.get_run, run_id)
            target = artifact_file(run.info.artifact_uri, query.get("path", ""))
        except Exception as exc:
            return _error(error_for(exc))
        return _download(target)

    async def logged_model_file(request: Request) -> Response:
        """MLflow's ``GET logged-models/{id}/artifacts/files?artifact_file_path=``: one file of
        a logged model, with the same rules as a run's downloads."""
        try:
            raw = request.query_params.get("artifact_file_path", "")
            if not raw:
                raise invalid("Missing value for required parameter 'artifact_file_path'.")
            model_id = request.path_params["model_id"]
            model = await run_in_threadpool(store.get_logged_model, model_id)
            target = artifact_file(model.artifact_location, raw)
        except Exception as exc:
            return _error(error_for(exc))
        return _download(target)

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
                data = await _read_body(request, MAX_UPLOAD_ARTIFACT_BYTES)
            except _BodyTooLarge:
                raise invalid("Artifact size is too large. Max size is 10MB.") from None
            if not data:
                raise invalid("Request must specify data.")
            run = await run_in_threadpool(store.get_run, run_id)
            await run_in_threadpool(
                _write_run_file, uris.root_dir.resolve(), run.info.artifact_uri, raw, data
            )
        except Exception as exc:
            return _error(error_for(exc))
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
            return _error(ApiError(405, "ENDPOINT_NOT_FOUND", message))
        return _error(_no_endpoint(request.method, path))

    spec = openapi(
        "reprorun tracking server",
        __version__,
        extra=[
            ("GET", ARTIFACTS_API, "List artifacts under ?path= (artifact proxy)."),
            ("GET", ARTIFACTS_API + "/{artifact_path}", "Download an artifact (streamed)."),
            ("PUT", ARTIFACTS_API + "/{artifact_path}", "Upload an artifact (streamed)."),
            ("DELETE", ARTIFACTS_API + "/{artifact_path}", "Delete an artifact."),
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


SAFE_METHODS = (b"GET", b"HEAD", b"OPTIONS")


class _Guard:
    """An ASGI middleware that lets each HTTP request through or answers it itself."""

    def __init__(self, app: ASGIApp):
        self.app = app

    def refusal(self, method: str, headers: dict[bytes, str]) -> Response | None:
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {k: v.decode("latin-1") for k, v in scope.get("headers") or []}
            refused = self.refusal(scope["method"], headers)
            if refused is not None:
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _denied(message: str) -> Response:
    return json_response(403, {"error_code": "PERMISSION_DENIED", "message": message})


class CrossSiteMiddleware(_Guard):
    """Refuses requests that change something when a browser says another site sent them
    (``Sec-Fetch-Site: cross-site``, or an ``Origin`` other than this server): a page on
    any site could otherwise post to a server on 127.0.0.1. MLflow's clients send neither
    header; reading stays open (links to runs from elsewhere work)."""

    def refusal(self, method: str, headers: dict[bytes, str]) -> Response | None:
        if method.encode() in SAFE_METHODS:
            return None
        origin = headers.get(b"origin", "")
        cross = headers.get(b"sec-fetch-site") == "cross-site"
        if origin == "null":  # sandboxed frames and file:// pages
            cross = True
        elif origin:
            cross = cross or urlsplit(origin).netloc.lower() != headers.get(b"host", "").lower()
        if not cross:
            return None
        return _denied(
            f"Cross-site request refused: a page from {origin or 'another site'} cannot change "
            "this server. Use the server's own page, or a client that is not a browser."
        )


def _host_name(header: str) -> str:
    """``example.com:5000`` -> ``example.com``; ``[::1]:5000`` -> ``::1``."""
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostMiddleware(_Guard):
    """Refuses requests addressed to a host name not in ``allowed`` (403)."""

    def __init__(self, app: ASGIApp, allowed: tuple[str, ...]):
        super().__init__(app)
        self.allowed = {name.lower() for name in allowed}

    def refusal(self, method: str, headers: dict[bytes, str]) -> Response | None:
        host = headers.get(b"host", "").strip()
        if _host_name(host).lower() in self.allowed:
            return None
        return _denied(
            f"This server does not answer to the host name {host!r}: it answers to "
            f"{', '.join(sorted(self.allowed))}. Start it with --allowed-hosts to add names."
        )


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length", "0").strip()
    return "transfer-encoding" in request.headers or length not in ("", "0")


def _closing(store: Any) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        store.close()

    return lifespan


def _no_endpoint(method: str, path: str) -> ApiError:
    return ApiError(404, "ENDPOINT_NOT_FOUND", f"No API endpoint {method} {path}.")


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "REQUEST_LIMIT_EXCEEDED",
        f"The request body is larger than this server accepts ({limit} bytes).",
    )


class AuthMiddleware(_Guard):
    """Rejects every request without valid credentials (bearer token or basic auth).

    Checks that need scrypt run in worker threads, ``SCRYPT_AT_ONCE`` at a time and at most
    ``SCRYPT_QUEUE`` waiting (beyond that: 503), so guesses never stall the event loop; a
    client that keeps sending new wrong passwords for a user is told to retry later (429)
    before its next one is hashed. Tokens, unknown users and passwords seen before cost no
    hashing and are answered at once."""

    SCRYPT_AT_ONCE = 2
    SCRYPT_QUEUE = 64

    def __init__(self, app: ASGIApp, authenticator: Authenticator, backoff: Backoff | None = None):
        super().__init__(app)
        self.authenticator = authenticator
        self.backoff = backoff or Backoff()
        self._limiter: Any = None  # an anyio.CapacityLimiter, made inside the event loop
        self._waiting = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k: v.decode("latin-1") for k, v in scope.get("headers") or []}
        header = headers.get(b"authorization", "")
        # Per address and user name: on a loopback server every local user is 127.0.0.1, and
        # one who guesses alice's password must not lock bob out.
        client = f"{(scope.get('client') or ('?', 0))[0]} {basic_user(header)}"
        refused = await self._refusal(header, client)
        if refused is not None:
            await refused(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _refusal(self, header: str, client: str) -> Response | None:
        verdict = self.authenticator.quick_check(header)
        if verdict is None:  # a password scrypt must check: the guesses back-off counts
            wait = self.backoff.retry_after(client)
            if wait > 0:
                return _retry_later(429, "Too many wrong passwords from this address", wait)
            if self._waiting >= self.SCRYPT_QUEUE:
                return _retry_later(503, "Too many sign-ins are being checked", 1.0)
            verdict = await self._slow_check(header)
            if verdict:
                self.backoff.succeeded(client)
            else:
                self.backoff.failed(client)
        if verdict:
            return None
        body = {
            "error_code": "UNAUTHENTICATED",
            "message": "Authentication required: send a bearer token "
            "(MLFLOW_TRACKING_TOKEN) or basic credentials "
            "(MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD).",
        }
        response = json_response(401, body)
        response.headers["WWW-Authenticate"] = 'Basic realm="reprorun"'
        return response

    async def _slow_check(self, header: str) -> bool:
        import anyio.to_thread

        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.SCRYPT_AT_ONCE)
        self._waiting += 1
        try:
            return await anyio.to_thread.run_sync(
                self.authenticator.check, header, limiter=self._limiter
            )
        finally:
            self._waiting -= 1


def _retry_later(status: int, what: str, seconds: float) -> Response:
    wait = max(1, math.ceil(seconds))
    response = json_response(
        status,
        {
            "error_code": "REQUEST_LIMIT_EXCEEDED",
            "message": f"{what}; retry in {wait} s.",
        },
    )
    response.headers["Retry-After"] = str(wait)
    return response


def _not_serving() -> ApiError:
    return ApiError(
        503,
        "ENDPOINT_NOT_FOUND",
        "This server does not serve artifacts (started with --no-serve-artifacts).",
    )


def _download(target: Path) -> Response:
    """A file as a download with its type (see ``download_type``), never a page."""
    headers = {**DOWNLOAD_HEADERS, "Content-Type": download_type(target.name)}
    if _TOKEN_NAME.fullmatch(target.name):  # as MLflow (werkzeug) writes a plain name
        headers["Content-Disposition"] = f"attachment; filename={target.name}"
    return FileResponse(target, filename=target.name, headers=headers)


def _write_run_file(root: Path, artifact_uri: str, raw: str, data: bytes) -> None:
    """Write ``data`` as the file ``raw`` of the run whose artifacts are at ``artifact_uri``,
    which must be under the server's resolved artifact ``root``; the path must stay in the
    run's artifact folder (no '..', no link pointing out)."""
    from reprorun.tracking.artifacts import local_dir

    try:
        run_dir = local_dir(artifact_uri).resolve()
    except Exception as exc:
        raise invalid(f"Cannot write to the run's artifacts at {artifact_uri}: {exc}") from None
    if not run_dir.is_relative_to(root):
        raise invalid(
            f"Cannot write to the run's artifacts at {artifact_uri}: this server only writes "
            "under its own artifact root. Log the file with the client instead."
        )
    target = resolve_under(run_dir, raw, "the run's artifact folder", what="path")
    if target == run_dir:
        raise invalid(f"Invalid path {raw!r}: name a file under the run's artifact folder.")
    _check_writable(run_dir, target)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        Path(tmp).replace(target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_writable(root: Path, target: Path) -> None:
    """``target`` can become a file under ``root``: it is no folder and none of its parents
    is a file; the missing parents are created."""
    if target.is_dir():
        raise invalid(f"Cannot upload to {target.name!r}: it is a folder.")
    for parent in target.parents:
        if parent == root:
            break
        if parent.exists() and not parent.is_dir():
            raise invalid(f"Cannot upload under {parent.name!r}: it is a file.")
    target.parent.mkdir(parents=True, exist_ok=True)


class ArtifactProxy:
    """MLflow's ``mlflow-artifacts`` endpoints over a local folder."""

    def __init__(self, root: Path, max_bytes: int):
        self.root = root.resolve()
        self.max_bytes = max_bytes

    def _boundary(self, raw: str) -> Path:
        """The folder a path must stay in: its run's or logged model's artifact folder (the
        first ``artifacts`` component: ``<exp>/<run>/artifacts``, ``<exp>/models/<id>/
        artifacts``), else the root. A link from one run to another is not followed."""
        parts = safe_artifact_path(raw).parts
        if "artifacts" not in parts:
            return self.root
        return (self.root.joinpath(*parts[: parts.index("artifacts") + 1])).resolve()

    def _chain(self, raw: str) -> list[Path]:
        """The real paths of ``raw``'s artifact folder (see ``_boundary``) and of each step of
        ``raw`` under it, ``raw``'s own last; refused if a step leaves the root or that
        folder."""
        from reprorun.tracking.artifacts import real_chain

        resolve_under(self.root, raw)
        parts = safe_artifact_path(raw).parts
        below = parts[parts.index("artifacts") + 1 :] if "artifacts" in parts else parts
        boundary = self._boundary(raw)
        chain = None
        if boundary.is_relative_to(self.root):
            chain = real_chain(boundary, PurePosixPath(*below))
        if chain is None:
            raise invalid(f"Invalid artifact path {raw!r}: it leaves its artifact folder.")
        return chain

    def _resolve(self, raw: str) -> Path:
        return self._chain(raw)[-1]

    async def handle(self, request: Request) -> Response:
        raw = request.path_params.get("path")
        if raw is None:  # GET .../artifacts?path=...: a listing
            return await run_in_threadpool(self._list, request.query_params.get("path") or "")
        target = self._resolve(raw)
        if request.method != "GET" and target == self.root:
            raise invalid(
                f"Invalid artifact path {raw!r}: name a file or folder under the artifact root."
            )
        if request.method == "GET":
            if not target.is_file():
                raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"No artifact {raw!r}.")
            # An attachment with the file's type, never a page: an uploaded .html or .svg is
            # plain bytes, so it cannot run script in the origin the web UI shares.
            return FileResponse(
                target,
                filename=target.name,
                # As a header: a media_type of text/* would get "; charset=utf-8" appended.
                headers={**DOWNLOAD_HEADERS, "Content-Type": download_type(target.name)},
            )
        if request.method == "DELETE":
            # A link is deleted itself, never what it points to (``sub/loop -> ..`` would
            # otherwise take the run's whole folder with it).
            named = self._chain(raw)[-2] / safe_artifact_path(raw).name
            await run_in_threadpool(_delete, named)
            return json_response(200, {})
        await self._upload(request, target)
        return json_response(200, {})

    def _list(self, raw: str) -> Response:
        from reprorun.tracking.artifacts import entries_inside, loops

        chain = self._chain(raw) if raw else [self.root]
        base = chain[-1]
        files = []
        # Symbolic links pointing out of the artifact folder (or nowhere) are not shown, and a
        # path through a link back to a folder it passes already has no entries (as a local
        # recursive listing shows it): a client walking these listings comes to an end.
        if base.is_dir() and not loops(chain):
            for entry in entries_inside(base, chain[0]):
                info: dict[str, Any] = {"path": entry.name, "is_dir": entry.is_dir}
                if not entry.is_dir:
                    info["file_size"] = entry.size
                files.append(info)
        elif base.is_file():
            files.append({"path": base.name, "is_dir": False, "file_size": base.stat().st_size})
        return json_response(200, {"files": files})

    async def _upload(self, request: Request, target: Path) -> None:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise _too_large(self.max_bytes)
        _check_writable(self.root, target)
        # Write beside the target and rename: a failed upload never leaves a partial file.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise _too_large(self.max_bytes)
                    out.write(chunk)
            Path(tmp).replace(target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _delete(target: Path) -> None:
    import shutil

    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        shutil.rmtree(target)
