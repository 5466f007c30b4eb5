"""The HTTP server: ``GET /ping``, ``/health``, ``/version`` and ``POST /invocations`` on the
standard library's threading server, with body limits (413) and MLflow's error shape for every
failure."""

from __future__ import annotations

import os
import socket
import sys
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from reprorun.clients.scoring.model import Model
from reprorun.clients.scoring.protocol import (
    ScoringError,
    optional,
)

DEFAULT_MAX_BODY = 64 * 1024 * 1024  # bytes; larger requests get 413
DRAIN_LIMIT = 1024 * 1024 * 1024  # read (and drop) up to this much of a too-large body


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], model: Model, max_body: int, version: str) -> None:
        super().__init__(address, _Handler)
        self.model = model
        self.max_body = max_body
        self.version = version


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in one send (flushed after each request), and TCP_NODELAY: a
    # keep-alive client would otherwise wait ~40 ms on Nagle and delayed ACKs.
    wbufsize = 1 << 16
    # A connection silent this long (a client that never sends its request) is closed.
    timeout = 120
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        if os.environ.get("REPRORUN_SCORING_ACCESS_LOG"):
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, media: str, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _error(self, exc: ScoringError, close: bool = False) -> None:
        self._send(exc.status, exc.to_json(), "application/json", close)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/ping", "/health"):
            self._send(200, b"\n", "application/json")
        elif path == "/version":
            self._send(200, self.server.version.encode(), "application/json")
        else:
            self._error(ScoringError(f"No endpoint GET {path}", 404, "ENDPOINT_NOT_FOUND"))

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            body = self._body()
            if body is None:
                return
            if path != "/invocations":
                raise ScoringError(f"No endpoint POST {path}", 404, "ENDPOINT_NOT_FOUND")
            status, payload, media = self.server.model.invocations(
                body, self.headers.get("Content-Type")
            )
            self._send(status, payload, media)
        except ScoringError as exc:
            self._error(exc)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # never let a request take the server down
            traceback.print_exc(file=sys.stderr)
            self._error(ScoringError(f"{type(exc).__name__}: {exc}", 500, "INTERNAL_ERROR"))

    def _too_large(self, size: str) -> None:
        limit = self.server.max_body
        self._error(
            ScoringError(
                f"The request body ({size}) is larger than this server takes "
                f"({limit} bytes; reprorun models serve --max-request-size); send the rows in "
                "smaller batches, or score a file with reprorun models predict.",
                413,
                "REQUEST_TOO_LARGE",
            ),
            close=True,
        )

    def _body(self) -> bytes | None:
        """The request body, or None after answering 413 (or 400 for a bad length)."""
        limit = self.server.max_body
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._chunked(limit)
        raw = self.headers.get("Content-Length", "0")
        try:
            length = int(raw)
            if length < 0:
                raise ValueError(raw)
        except ValueError:
            self._error(ScoringError(f"Bad Content-Length {raw!r}"), close=True)
            return None
        if length > limit:
            if length <= DRAIN_LIMIT:  # read it, so the client sees the answer, not a reset
                self._drain(length)
            self._too_large(f"{length} bytes")
            return None
        return self.rfile.read(length)

    def _drain(self, length: int) -> None:
        while length > 0:
            got = self.rfile.read(min(length, 1 << 20))
            if not got:
                return
            length -= len(got)

    def _chunked(self, limit: int) -> bytes | None:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            except ValueError:
                self._error(ScoringError("Bad chunked request body"), close=True)
                return None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                break
            total += size
            if total > DRAIN_LIMIT:
                break
            if total > limit:  # keep reading (dropping) to the end, then answer 413
                parts.clear()
                self._drain(size)
            else:
                parts.append(self.rfile.read(size))
            self.rfile.readline(1024)
        if total > limit:
            self._too_large(f"{total} bytes" if total <= DRAIN_LIMIT else "over 1 GiB")
            return None
        return b"".join(parts)


def make_server(
    model: Model, host: str, port: int, max_body: int = DEFAULT_MAX_BODY, version: str = ""
) -> ThreadingHTTPServer:
    return _Server((host, port), model, max_body, version or _version())


def _version() -> str:
    mlflow = optional("mlflow")
    if mlflow is not None and getattr(mlflow, "__version__", None):
        return str(mlflow.__version__)
    try:
        from reprorun._version import __version__

        return __version__
    except ImportError:
        return "unknown"


def serve(
    model: Model,
    host: str,
    port: int,
    max_body: int = DEFAULT_MAX_BODY,
    announce: Callable[[str, int], None] | None = None,
) -> None:
    """Serve until interrupted; ``announce(host, port)`` once listening."""
    server = make_server(model, host, port, max_body)
    bound_host, bound_port = server.server_address[:2]
    if announce is not None:
        announce(str(bound_host), int(bound_port))
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


# -- batch scoring -----------------------------------------------------------------------
