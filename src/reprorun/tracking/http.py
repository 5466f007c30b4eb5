"""A small HTTP client: keep-alive connections per thread, retries with back-off on connection
failures and 429/5xx, MLflow's credentials from the environment. MLflow's REST protocol uses it
as it is; the Ray and Databricks backends give their own credentials, retries and message for a
server that cannot be reached.

The standard library's ``http.client`` is used on purpose: it imports in a few milliseconds and
costs less per call than the general-purpose clients, which matters for ``log_metric`` in a loop.
Proxies are honoured as urllib and requests honour them (``https_proxy``/``HTTPS_PROXY``,
``http_proxy``/``HTTP_PROXY``, ``no_proxy``/``NO_PROXY``), except that loopback addresses are
never sent through a proxy (a run's own endpoint and a local server are on 127.0.0.1).
Redirects are not followed: the APIs called here answer directly.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import quote, unquote, urlencode, urlparse

from reprorun import _json
from reprorun.errors import (
    ResourceAlreadyExists,
    ResourceNotFound,
    ServerUnavailable,
    TrackingError,
    UserInputError,
)

RETRY_DELAYS = (0.1, 0.5, 1.0, 2.0, 4.0)  # about 8 s in all, as MLflow's default back-off
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_MAX_RETRY_AFTER = 30.0  # seconds: the longest Retry-After honoured


@dataclass(frozen=True)
class Retries:
    """When a request is sent again: after each of ``delays`` (seconds), on 429/5xx answers,
    and, with ``unreachable``, when the server cannot be reached. With ``retry_after`` a
    Retry-After header (at most 30 s) replaces the next delay."""

    delays: tuple[float, ...] = RETRY_DELAYS
    unreachable: bool = True
    retry_after: bool = False


# Raised when the server cannot be reached: ``(what, cause) -> error`` ("GET /path").
Unreachable = Callable[[str, Exception], Exception]


class HttpClient:
    """Calls one server (``base_url``); safe to share between threads. ``auth``: the
    authorization headers to send (default: MLflow's credentials from the environment);
    without ``keep_alive`` each request has its own connection (for occasional calls from
    objects that come and go, which would otherwise leave connections open)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 120.0,
        auth: Mapping[str, str] | None = None,
        retries: Retries = Retries(),
        unreachable: Unreachable | None = None,
        keep_alive: bool = True,
    ):
        parsed = urlparse(base_url)
        # As messages name it: never with the user:password it may carry.
        netloc = parsed.netloc.rpartition("@")[2]
        self.base_url = parsed._replace(netloc=netloc).geturl().rstrip("/")
        self.scheme = parsed.scheme
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port
        self.prefix = parsed.path.rstrip("/")
        self.timeout = timeout
        if auth is None:
            auth = _auth_header(parsed.username, parsed.password)
        self.headers = {"User-Agent": "reprorun", **auth}
        if not keep_alive:
            self.headers["Connection"] = "close"
        self.retries = retries
        self._unreachable = unreachable
        self._local = threading.local()
        self.proxy = proxy_for(self.scheme, self.host)
        if self.proxy is not None and self.proxy.auth and self.scheme != "https":
            self.headers["Proxy-Authorization"] = self.proxy.auth

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            proxy = self.proxy
            if self.scheme == "https" and proxy is not None:  # a CONNECT tunnel through it
                conn = http.client.HTTPSConnection(proxy.host, proxy.port, timeout=self.timeout)
                tunnel = {"Proxy-Authorization": proxy.auth} if proxy.auth else None
                conn.set_tunnel(self.host, self.port, headers=tunnel)
            elif self.scheme == "https":
                conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout)
            elif proxy is not None:  # plain HTTP: the proxy gets the absolute URL
                conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=self.timeout)
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: bytes | IO[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        retry: bool = True,
    ) -> http.client.HTTPResponse:
        """One request, retried on failures that are safe to retry (not at all with
        ``retry=False``). With ``stream`` the response is returned unread (the caller reads and
        closes it)."""
        url = self.prefix + quote(path, safe="/:@-._~")
        if query:
            url += "?" + urlencode({k: v for k, v in query.items() if v is not None}, doseq=True)
        if self.proxy is not None and self.scheme != "https":
            port = f":{self.port}" if self.port else ""
            url = f"http://{self.host}{port}{url}"
        all_headers = {**self.headers, **(headers or {})}
        start = body.tell() if body is not None and not isinstance(body, bytes) else None
        delays = list(self.retries.delays if retry else ())
        last: Exception | None = None
        delay = 0.0
        stale_retried = False
        while True:
            if delay:
                time.sleep(delay)
            if start is not None:
                body.seek(start)  # type: ignore[union-attr]
            conn = self._connection()
            reused = conn.sock is not None
            try:
                conn.request(method, url, body=body, headers=all_headers)
                response = conn.getresponse()
            except (OSError, http.client.HTTPException, ValueError) as exc:
                # Refused, reset, or a kept-alive connection the server closed: reconnect.
                # (ValueError: a header http.client cannot send, such as a non-latin-1 token.)
                self._drop_connection()
                last = exc
                if reused and not stale_retried:
                    stale_retried, delay = True, 0.0  # a closed kept-alive connection
                    continue
                if self.retries.unreachable and delays:
                    delay = delays.pop(0)
                    continue
                break
            if response.status in _RETRY_STATUSES and delays:
                response.read()
                last = ServerUnavailable(f"{method} {self.base_url}{path}: HTTP {response.status}")
                delay = delays.pop(0)
                if self.retries.retry_after:
                    delay = _retry_after(response.getheader("Retry-After"), delay)
                continue
            if not stream or response.status >= 400:
                response.data = response.read()  # type: ignore[attr-defined]
            return response
        if self._unreachable is not None and isinstance(last, Exception):
            raise self._unreachable(f"{method} {path}", last) from None
        raise ServerUnavailable(
            f"Cannot reach the tracking server at {self.base_url} ({last}). Check that it is "
            "running and the URI is right (reprorun server starts one)."
        )

    def call(
        self, method: str, path: str, payload: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """A JSON API call: GET sends ``payload`` as the query string, the others as the body."""
        if method == "GET":
            response = self.request(method, path, query=payload)
        else:
            body = _json.dumps(payload or {})
            response = self.request(
                method, path, body=body, headers={"Content-Type": "application/json"}
            )
        data: bytes = response.data  # type: ignore[attr-defined]
        if response.status >= 400:
            raise error_from_response(response.status, data, f"{method} {path}")
        if not data:
            return {}
        try:
            parsed = _json.loads(data)
        except ValueError as exc:  # json's and orjson's decode errors both are ValueErrors
            raise TrackingError(
                f"{self.base_url}{path} answered with something other than JSON ({exc}); is "
                "this a tracking server?"
            ) from None
        return parsed if isinstance(parsed, dict) else {}

    def download(self, path: str, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
        response = self.request("GET", path, stream=True)
        if response.status >= 400:
            raise error_from_response(
                response.status,
                response.data,  # type: ignore[attr-defined]
                f"GET {path}",
            )
        try:
            while chunk := response.read(chunk_size):
                yield chunk
        finally:
            response.close()

    def close(self) -> None:
        self._drop_connection()


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    auth: str | None  # the Proxy-Authorization header, from user:password in the proxy URL


_LOOPBACK = ("localhost", "127.", "::1")


def proxy_for(scheme: str, host: str) -> Proxy | None:
    """The proxy the environment names for ``scheme://host``, as urllib reads it (None for
    loopback hosts, hosts in ``no_proxy``, or when no proxy is set)."""
    if not any(os.environ.get(n) for n in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY")):
        return None  # the common case, without importing urllib.request
    if host.startswith(_LOOPBACK):
        return None
    import urllib.request

    url = urllib.request.getproxies().get(scheme)
    if not url or urllib.request.proxy_bypass(host):
        return None
    parsed = urlparse(url if "://" in url else f"http://{url}")
    if not parsed.hostname:
        raise UserInputError(f"{scheme}_proxy={url!r} names no proxy host (http://host:port).")
    auth = None
    if parsed.username:
        pair = f"{unquote(parsed.username)}:{unquote(parsed.password or '')}"
        auth = "Basic " + base64.b64encode(pair.encode()).decode()
    return Proxy(parsed.hostname, parsed.port or 80, auth)


_clients: dict[str, HttpClient] = {}
_clients_lock = threading.Lock()


def client_for(base_url: str) -> HttpClient:
    """One client per server and process: the REST store and artifact transfers to the same
    server share its kept-alive connections."""
    base_url = base_url.rstrip("/")
    with _clients_lock:
        if base_url not in _clients:
            _clients[base_url] = HttpClient(base_url)
        return _clients[base_url]


def error_from_response(status: int, data: bytes, what: str) -> Exception:
    """The reprorun error for an MLflow error body."""
    code, message = "", data.decode("utf-8", "replace")[:2000]
    try:
        parsed = json.loads(data)
        if isinstance(parsed, dict):
            code = str(parsed.get("error_code", ""))
            message = str(parsed.get("message", message))
    except (json.JSONDecodeError, UnicodeDecodeError):
        pass
    text = f"{message} ({what}: HTTP {status}{', ' + code if code else ''})"
    if code == "RESOURCE_DOES_NOT_EXIST" or status == 404:
        return ResourceNotFound(text)
    if code == "RESOURCE_ALREADY_EXISTS":
        return ResourceAlreadyExists(text)
    if status in (401, 403):
        return TrackingError(
            f"{text}. Set MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD."
        )
    if status >= 500:
        return ServerUnavailable(text)
    if code == "INVALID_PARAMETER_VALUE" or status == 400:
        return UserInputError(text)
    return TrackingError(text)


def _retry_after(header: str | None, default: float) -> float:
    try:
        return min(max(float(header), 0.0), _MAX_RETRY_AFTER) if header else default
    except ValueError:
        return default


def _auth_header(user: str | None, password: str | None) -> dict[str, str]:
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user = user or os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = password or os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password is not None:
        pair = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {pair}"}
    return {}
