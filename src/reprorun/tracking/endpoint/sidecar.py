"""The per-run MLflow endpoint: while a run executes on this machine, the runner serves MLflow's
REST API on an ephemeral loopback port, so code written for the ``mlflow`` client
(``MLFLOW_TRACKING_URI`` / ``MLFLOW_RUN_ID``) logs into the run, whatever the store is.

Only the run's command may use it. Every other local user can connect to a loopback port, and
so can a web page open in the user's browser, so a request is answered only when:

- its ``Host`` is ``127.0.0.1:<port>`` or ``localhost:<port>`` (no DNS rebinding);
- it carries no foreign ``Origin`` and no ``Sec-Fetch-Site: cross-site`` (no browser page);
- it carries ``Authorization: Bearer <token>``, a secret made for this run and given to its
  command only, as ``MLFLOW_TRACKING_TOKEN`` (MLflow's Python and R clients send it);
- its body, on POST/PUT (and PATCH/DELETE with a body), is declared JSON, with a valid
  ``Content-Length`` of at most ``MAX_BODY`` bytes, sent within ``TIMEOUT`` seconds;
- it stays within what the run's code may do (``scope.py``): its run, the runs and logged
  models it creates in its experiment, reads of that experiment; never store administration.

``/health`` answers 200 without the token (it reveals nothing); the Host and Origin rules apply.
Refusals are MLflow's JSON error bodies (401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 400, 413,
415); no CORS header is ever sent. Nothing is printed: the terminal shows the run's output.

Standard library only. The port is bound at once (connections queue in the kernel), while
``http.server`` (~40 ms of imports) loads in a background thread, off the run's start-up path.
Artifact locations are shown as stored (file:// on this machine), so the ``mlflow`` client
writes artifact files directly.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reprorun.tracking.mlflow_api.context import Refresh

MAX_BODY = 16 * 1024 * 1024
MAX_DRAIN = 1024 * 1024  # a refused request's body is read (and dropped) up to this size
# Seconds a connection may stay silent (an idle keep-alive connection, a request line, a body
# that stops coming) and the longest a whole body may take to arrive; then it is closed.
TIMEOUT = 60.0
API_PREFIX = "/api/2.0/mlflow/"
# Connections served at once; more are closed at once (each holds a thread of the run's
# process: a local user opening thousands must not exhaust them).
MAX_CONNECTIONS = 128
# The token reaches MLflow's clients as the variables below. Their Python and R clients send a
# username and password in preference to a token, and the Python client reads them from
# ~/.mlflow/credentials when the variables are not set: so the run's command gets the token
# as the password too (the endpoint accepts Bearer TOKEN or Basic ANYONE:TOKEN), and none of
# the credentials that would be sent instead (an auth plugin, AWS signing) is inherited.
TOKEN_USER = "reprorun-run"  # noqa: S105 - a user name; the token is the password
SHADOWING_CREDENTIALS = (
    "MLFLOW_TRACKING_AUTH",
    "MLFLOW_TRACKING_AWS_SIGV4",
    "MLFLOW_USERNAME",
    "MLFLOW_PASSWORD",
)


def token_env(token: str) -> dict[str, str]:
    """The variables through which MLflow's clients send the endpoint's ``token``."""
    return {
        "MLFLOW_TRACKING_TOKEN": token,
        "MLFLOW_TRACKING_USERNAME": TOKEN_USER,
        "MLFLOW_TRACKING_PASSWORD": token,
    }


class Sidecar:
    """An MLflow endpoint for run ``run_id`` of ``store`` on 127.0.0.1, in a daemon thread,
    until ``close()``. ``url`` and ``token`` are what the run's command gets. ``refresh``
    brings a run read through it up to date (the runner passes backends' stale-run check)."""

    def __init__(self, store: Any, run_id: str, refresh: Refresh | None = None):
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(128)
        self._address = self._socket.getsockname()[:2]
        self.url = f"http://127.0.0.1:{self._address[1]}"
        self.token = secrets.token_urlsafe(32)
        self._lock = threading.Lock()
        self._closed = False
        self._server: Any = None
        self._thread = threading.Thread(
            target=self._serve, args=(store, run_id, refresh), name="mlflow-endpoint", daemon=True
        )
        self._thread.start()

    def _serve(self, store: Any, run_id: str, refresh: Refresh | None) -> None:
        server = _http_server(self._socket, self._address, store, run_id, self.token, refresh)
        with self._lock:
            if self._closed:
                return
            self._server = server
        server.serve_forever()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            server = self._server
        if server is None:  # never started serving: nothing can be waiting on it
            self._socket.close()
            return
        # shutdown() waits for serve_forever's next poll (0.5 s); a connection wakes it now.
        stopper = threading.Thread(target=server.shutdown)
        stopper.start()
        with contextlib.suppress(OSError):
            socket.create_connection(self._address, timeout=1).close()
        stopper.join()
        server.server_close()


class _Refused(Exception):
    """A request answered with an error before it reaches the API; the connection is closed
    (its body, if any, is never read)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.body = {"error_code": code, "message": message}
        self.headers = headers or {}


def _http_server(
    sock: socket.socket,
    address: tuple[str, int],
    store: Any,
    run_id: str,
    token: str,
    refresh: Refresh | None,
) -> Any:
    """A ThreadingHTTPServer on the already-bound ``sock`` answering MLflow's REST API for
    the run ``run_id``, to requests bearing ``token``; the runs it reads pass through
    ``refresh``."""
    import hmac
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlsplit

    from reprorun import _json
    from reprorun.tracking.endpoint.request_rules import body_type_refusal, content_length
    from reprorun.tracking.endpoint.scope import RunScope, known_route
    from reprorun.tracking.mlflow_api.api import MlflowApi
    from reprorun.tracking.mlflow_api.context import ArtifactUris
    from reprorun.tracking.mlflow_api.errors import ApiError
    from reprorun.tracking.mlflow_api.parsing import parse_request

    api = MlflowApi(store, ArtifactUris("", proxied=False), refresh)
    scope = RunScope(store, run_id)
    port = address[1]
    hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}
    origins = {f"http://{host}" for host in hosts}
    secret = token.encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: one connection for a whole training loop
        # Headers and body leave in two writes: with Nagle's algorithm the body would wait
        # for the client's delayed ACK (~40 ms a request).
        disable_nagle_algorithm = True
        timeout = TIMEOUT  # for every read and write of the connection (socketserver)
        unread: int | None = None  # the body's size until it is read (None: not known yet)

        def _serve(self) -> None:
            try:
                self._answer()
            except _Refused as refused:
                self.close_connection = True
                with contextlib.suppress(OSError, ValueError):
                    self._drain()
                with contextlib.suppress(OSError):
                    self._reply(refused.status, refused.body, refused.headers)
            except OSError:  # the client went away, or stalled past TIMEOUT: drop it
                self.close_connection = True
            except Exception as exc:  # a bug: an answer, never a traceback on the terminal
                self.close_connection = True
                message = f"The run's endpoint failed: {type(exc).__name__}: {exc}"
                with contextlib.suppress(OSError):
                    self._reply(500, {"error_code": "INTERNAL_ERROR", "message": message})

        def _answer(self) -> None:
            self.unread = None
            self._check_sender()
            parts = urlsplit(self.path)
            if parts.path == "/health" and self.command == "GET":
                self._reply(200, None)
                return
            self._check_token()
            body = self._body()
            if not parts.path.startswith(API_PREFIX) or not known_route(parts.path):
                self._reply(
                    404,
                    {"error_code": "ENDPOINT_NOT_FOUND", "message": f"No endpoint {parts.path}."},
                )
                return
            query = parse_qs(parts.query)
            request = self._request(query, body)
            why = scope.refusal(self.command, parts.path, request)
            if why is not None:
                raise _Refused(403, "PERMISSION_DENIED", why)
            status, payload = api.handle(self.command, parts.path, query, body)
            if status == 200:
                scope.record(self.command, parts.path, payload)
            self._reply(status, payload)

        def _check_sender(self) -> None:
            host = (self.headers.get("Host") or "").strip().lower()
            if host not in hosts:
                raise _Refused(
                    403,
                    "PERMISSION_DENIED",
                    f"This run's endpoint answers to Host 127.0.0.1:{port} or localhost:{port} "
                    f"only, not {host!r}.",
                )
            origin = self.headers.get("Origin")
            fetch_site = (self.headers.get("Sec-Fetch-Site") or "").strip().lower()
            if (origin is not None and origin.strip().lower() not in origins) or fetch_site in (
                "cross-site",
                "same-site",
            ):
                raise _Refused(
                    403,
                    "PERMISSION_DENIED",
                    f"Cross-site request refused: a page from {origin or 'another site'} cannot "
                    "use this run's endpoint.",
                )

        def _check_token(self) -> None:
            if not hmac.compare_digest(_presented(self.headers.get("Authorization")), secret):
                raise _Refused(
                    401,
                    "UNAUTHENTICATED",
                    "This run's endpoint needs the run's token: send it as `Authorization: "
                    "Bearer $MLFLOW_TRACKING_TOKEN` (the run's command has it in its "
                    "environment; MLflow's clients send it).",
                    {"WWW-Authenticate": 'Bearer realm="reprorun run"'},
                )

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding"):
                raise _Refused(
                    400,
                    "MALFORMED_REQUEST",
                    "Chunked request bodies are not accepted: send a Content-Length.",
                )
            try:
                length = content_length(self.headers.get("Content-Length"))
            except ValueError as exc:
                raise _Refused(400, "MALFORMED_REQUEST", str(exc)) from None
            if length > MAX_BODY:
                raise _Refused(
                    413,
                    "REQUEST_LIMIT_EXCEEDED",
                    f"The request body ({length} bytes) is larger than this endpoint accepts "
                    f"({MAX_BODY} bytes).",
                )
            why = body_type_refusal(self.command, self.headers.get("Content-Type"), length > 0)
            if why is not None:
                raise _Refused(415, "INVALID_PARAMETER_VALUE", why)
            return self._read(length)

        def _read(self, length: int) -> bytes:
            self.unread = 0
            chunks: list[bytes] = []
            deadline = time.monotonic() + TIMEOUT
            while length > 0:
                if time.monotonic() > deadline:
                    raise TimeoutError  # a body trickling in: drop the connection
                chunk = self.rfile.read1(min(length, 1 << 16))
                if not chunk:
                    raise ConnectionError  # the client closed before sending it all
                chunks.append(chunk)
                length -= len(chunk)
            return b"".join(chunks)

        def _drain(self) -> None:
            """Read a refused request's small body before answering: closing a connection
            with unread data resets it, and the client could lose the answer."""
            if self.unread is None:
                self.unread = content_length(self.headers.get("Content-Length"))
            if 0 < self.unread <= MAX_DRAIN and not self.headers.get("Transfer-Encoding"):
                self._read(self.unread)

        def _request(self, query: dict[str, list[str]], body: bytes) -> dict[str, Any]:
            """The request as MLflowApi reads it (for the scope to decide on)."""
            try:
                return parse_request(self.command, query, body)
            except ApiError as exc:
                raise _Refused(exc.status, exc.code, exc.message) from None

        def _reply(
            self,
            status: int,
            payload: dict[str, Any] | None,
            headers: dict[str, str] | None = None,
        ) -> None:
            data = b"OK" if payload is None else _json.dumps(payload)
            self.send_response(status)
            kind = "text/plain" if payload is None else "application/json"
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the run's log is the user's output, not an access log

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

        def process_request(self, request: Any, client_address: Any) -> None:
            if not self.slots.acquire(blocking=False):
                self.shutdown_request(request)  # too many at once: this one is closed
                return
            try:
                super().process_request(request, client_address)
            except BaseException:
                self.slots.release()
                raise

        def process_request_thread(self, request: Any, client_address: Any) -> None:
            try:
                super().process_request_thread(request, client_address)
            finally:
                self.slots.release()

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a connection that failed concerns its client, not the run's output

    server = Server(address, Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    return server


def _presented(header: str | None) -> bytes:
    """The secret an ``Authorization`` header presents: a bearer token, or a basic password
    (whatever the user name); empty for anything else."""
    import base64
    import binascii

    scheme, _, value = (header or "").strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip().encode("utf-8", "replace")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return b""
        return decoded.partition(b":")[2]
    return b""
