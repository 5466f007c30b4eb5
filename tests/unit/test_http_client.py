"""tracking/http.py's client with the options the Ray and Databricks backends give it (their
credentials, retries, message for a server that cannot be reached), against a real local
HTTP server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from reprorun.errors import ExecutionError, ServerUnavailable
from reprorun.tracking.http import HttpClient, Retries, proxy_for


class Server:
    """Answers each request with the next of ``answers`` (status, headers), then 200."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict[str, str]]] = []
        self.seen: list[dict[str, str]] = []
        self.requests: list[str] = []  # "METHOD target" as the request line gave it
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_CONNECT(self) -> None:  # as a proxy: refuse the tunnel, after noting it
                server.seen.append(dict(self.headers))
                server.requests.append(f"CONNECT {self.path}")
                self.send_response(502)
                self.end_headers()

            def do_GET(self) -> None:
                server.seen.append(dict(self.headers))
                server.requests.append(f"GET {self.path}")
                status, headers = server.answers.pop(0) if server.answers else (200, {})
                body = b'{"ok": true}'
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def test_given_auth_replaces_mlflows_and_keep_alive_can_be_off(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "mlflow-secret")
    assert HttpClient(server.url).call("GET", "/a") == {"ok": True}
    client = HttpClient(server.url, auth={"Authorization": "Bearer other"}, keep_alive=False)
    assert client.call("GET", "/b") == {"ok": True}
    assert server.seen[0]["Authorization"] == "Bearer mlflow-secret"
    assert server.seen[1]["Authorization"] == "Bearer other"
    assert server.seen[1]["Connection"] == "close"


def test_busy_answers_are_retried_as_told_and_retry_after_is_honoured(server: Server) -> None:
    client = HttpClient(server.url, retries=Retries(delays=(5.0, 5.0), retry_after=True))
    server.answers = [(503, {"Retry-After": "0"}), (429, {"Retry-After": "0"})]
    response = client.request("GET", "/x")  # the 5 s delays would time the test out
    assert response.status == 200 and len(server.seen) == 3

    server.answers = [(503, {})]
    assert client.request("GET", "/y", retry=False).status == 503  # not retried
    assert len(server.seen) == 4

    no_retries = HttpClient(server.url, retries=Retries(delays=()))
    server.answers = [(502, {})]
    assert no_retries.request("GET", "/z").status == 502
    assert len(server.seen) == 5


def test_an_unreachable_server_raises_the_callers_error_at_once() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    seen = []

    def unreachable(what: str, exc: Exception) -> Exception:
        seen.append((what, type(exc)))
        return ExecutionError(f"no cluster ({what})")

    client = HttpClient(
        f"http://127.0.0.1:{port}",
        retries=Retries(delays=(30.0,), unreachable=False),
        unreachable=unreachable,
    )
    with pytest.raises(ExecutionError, match=r"no cluster \(GET /api/x\)"):
        client.request("GET", "/api/x")
    assert seen == [("GET /api/x", ConnectionRefusedError)]

    mlflow = HttpClient(f"http://127.0.0.1:{port}", retries=Retries(delays=(0.0,)))
    with pytest.raises(ServerUnavailable, match="Cannot reach the tracking server"):
        mlflow.request("GET", "/api/x")


# --- proxies, as urllib and requests read them from the environment -------------------------


@pytest.fixture
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


def test_plain_http_goes_through_the_proxy_with_the_absolute_url_and_its_credentials(
    server: Server, no_proxies: pytest.MonkeyPatch
) -> None:
    proxy = server.url.replace("http://", "http://me:s%40cret@")
    no_proxies.setenv("HTTP_PROXY", proxy)
    client = HttpClient("http://workspace.example.test:8080/api", auth={})
    assert client.call("GET", "/jobs") == {"ok": True}
    assert server.requests == ["GET http://workspace.example.test:8080/api/jobs"]
    assert server.seen[0]["Proxy-Authorization"] == "Basic bWU6c0BjcmV0"  # me:s@cret


def test_https_opens_a_connect_tunnel_through_the_proxy(
    server: Server, no_proxies: pytest.MonkeyPatch
) -> None:
    no_proxies.setenv("https_proxy", server.url.replace("http://", "http://me:pw@"))
    client = HttpClient("https://workspace.example.test", auth={}, retries=Retries(delays=()))
    with pytest.raises(ServerUnavailable, match="502"):
        client.call("GET", "/api/2.1/jobs/list")
    assert server.requests == ["CONNECT workspace.example.test:443"]
    assert server.seen[0]["Proxy-Authorization"] == "Basic bWU6cHc="


def test_loopback_and_no_proxy_hosts_are_reached_directly(
    server: Server, no_proxies: pytest.MonkeyPatch
) -> None:
    no_proxies.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    no_proxies.setenv("NO_PROXY", "internal.example.test,.corp.example.test")
    assert HttpClient(server.url).call("GET", "/direct") == {"ok": True}
    assert server.requests == ["GET /direct"]
    assert proxy_for("http", "internal.example.test") is None
    assert proxy_for("http", "db.corp.example.test") is None
    assert proxy_for("http", "localhost") is None
    found = proxy_for("http", "workspace.example.test")
    assert found is not None and (found.host, found.port) == ("127.0.0.1", 9)
    assert proxy_for("https", "workspace.example.test") is None  # only HTTP_PROXY is set


def test_messages_never_show_the_password_of_the_servers_url() -> None:
    from reprorun.errors import ServerUnavailable
    from reprorun.tracking.http import HttpClient, Retries

    client = HttpClient("http://ana:s3cret@127.0.0.1:9/api", retries=Retries(delays=()))
    with pytest.raises(ServerUnavailable) as caught:
        client.request("GET", "/x")
    assert "s3cret" not in str(caught.value) and "ana@" not in str(caught.value)
    assert "http://127.0.0.1:9/api" in str(caught.value)
    assert client.headers["Authorization"].startswith("Basic ")  # still sent, never shown
