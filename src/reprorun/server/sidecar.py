"""The per-run MLflow endpoint: while a run executes on this machine, the runner serves MLflow's
REST API on an ephemeral loopback port, so code written for the ``mlflow`` client
(``MLFLOW_TRACKING_URI`` / ``MLFLOW_RUN_ID``) logs into the run, whatever the store is.

Standard library only (``http.server``): it starts in a millisecond and adds nothing to
``reprorun run``'s import time. Artifact locations are shown as stored (file:// on this machine),
so the ``mlflow`` client writes artifact files directly.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from reprorun.server.rest_mlflow import ArtifactUris, MlflowApi

MAX_BODY = 16 * 1024 * 1024


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection for a whole training loop
    api: MlflowApi  # set on the subclass made per sidecar

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
        status, payload = self.api.handle(self.command, parts.path, parse_qs(parts.query), body)
        self._reply(status, payload)

    def _reply(self, status: int, payload: dict[str, Any] | None) -> None:
        data = b"OK" if payload is None else json.dumps(payload, allow_nan=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if payload is None else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the run's log is the user's output, not our access log


class Sidecar:
    """An MLflow endpoint for ``store`` on 127.0.0.1, in a daemon thread, until ``close()``."""

    def __init__(self, store: Any):
        handler = type("Handler", (_Handler,), {"api": MlflowApi(store, ArtifactUris("", False))})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="mlflow-endpoint", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
