"""The per-run MLflow endpoint: while a run executes on this machine, the runner serves MLflow's
REST API on an ephemeral loopback port, so code written for the ``mlflow`` client
(``MLFLOW_TRACKING_URI`` / ``MLFLOW_RUN_ID``) logs into the run, whatever the store is.

Standard library only. The port is bound at once (connections queue in the kernel), while
``http.server`` (~40 ms of imports) loads in a background thread, off the run's start-up path.
Artifact locations are shown as stored (file:// on this machine), so the ``mlflow`` client
writes artifact files directly.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

MAX_BODY = 16 * 1024 * 1024


class Sidecar:
    """An MLflow endpoint for ``store`` on 127.0.0.1, in a daemon thread, until ``close()``."""

    def __init__(self, store: Any):
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(128)
        self._address = self._socket.getsockname()[:2]
        self.url = f"http://127.0.0.1:{self._address[1]}"
        self._lock = threading.Lock()
        self._closed = False
        self._server: Any = None
        self._thread = threading.Thread(
            target=self._serve, args=(store,), name="mlflow-endpoint", daemon=True
        )
        self._thread.start()

    def _serve(self, store: Any) -> None:
        server = _http_server(self._socket, self._address, store)
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


def _http_server(sock: socket.socket, address: tuple[str, int], store: Any) -> Any:
    """A ThreadingHTTPServer on the already-bound ``sock`` answering MLflow's REST API."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlsplit

    from reprorun import _json
    from reprorun.server.rest_mlflow import ArtifactUris, MlflowApi

    api = MlflowApi(store, ArtifactUris("", proxied=False))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: one connection for a whole training loop
        # Headers and body leave in two writes: with Nagle's algorithm the body would wait
        # for the client's delayed ACK (~40 ms a request).
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._reply(413, {"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "too large"})
                self.close_connection = True
                return
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            if parts.path == "/health":
                self._reply(200, None)
                return
            status, payload = api.handle(self.command, parts.path, parse_qs(parts.query), body)
            self._reply(status, payload)

        def _reply(self, status: int, payload: dict[str, Any] | None) -> None:
            data = b"OK" if payload is None else _json.dumps(payload)
            self.send_response(status)
            kind = "text/plain" if payload is None else "application/json"
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the run's log is the user's output, not an access log

    server = ThreadingHTTPServer(address, Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    server.daemon_threads = True
    return server
