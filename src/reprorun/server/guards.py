"""The middlewares every request of ``reprorun server`` passes: the Host header (DNS
rebinding), cross-site browser requests, and authentication (bearer token or basic auth, with
back-off per address and user)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from reprorun.server.auth import Authenticator, Backoff, basic_user
from reprorun.server.responses import json_response, retry_later

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
                return retry_later(429, "Too many wrong passwords from this address", wait)
            if self._waiting >= self.SCRYPT_QUEUE:
                return retry_later(503, "Too many sign-ins are being checked", 1.0)
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
