"""Server authentication that cannot turn itself off, and password guesses that cannot stall it:
an empty or short secret is refused before anything listens, scrypt runs off the event loop,
and a client sending new wrong passwords backs off."""

from __future__ import annotations

import base64
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import Message
from pathlib import Path

import pytest
from click.testing import CliRunner

from reprorun.cli import cli
from reprorun.errors import UserInputError
from reprorun.server import auth
from reprorun.server.auth import Authenticator, Backoff, add_user, check_token

TOKEN = "t0ken-0123456789abcdef"


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--auth-token", ""], {}, "--auth-token is empty"),
        (["--auth-token", "   "], {}, "--auth-token is empty"),
        (["--auth-token", "short"], {}, "--auth-token is 5 characters long"),
        ([], {"REPRORUN_SERVER_TOKEN": ""}, "REPRORUN_SERVER_TOKEN is empty"),
        ([], {"REPRORUN_SERVER_TOKEN": "abc"}, "REPRORUN_SERVER_TOKEN is 3 characters long"),
    ],
)
def test_an_empty_or_short_token_is_refused_before_serving(
    args: list[str], env: dict[str, str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*_: object, **__: object) -> None:
        raise AssertionError("the server must not start")

    monkeypatch.setattr("reprorun.server.run.serve", never)
    result = CliRunner().invoke(cli, ["server", "--port", "0", *args], env=env)
    assert result.exit_code != 0
    assert expected in result.output
    assert "Traceback" not in result.output


def test_a_password_file_without_users_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "users.txt"
    empty.write_text("# nobody yet\n")
    with pytest.raises(UserInputError, match="has no users"):
        Authenticator.from_options(None, str(empty))


def test_short_passwords_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="at least 8"):
        add_user(tmp_path / "users.txt", "alice", "short")
    assert not (tmp_path / "users.txt").exists()


def test_token_rules() -> None:
    check_token(None)
    check_token(TOKEN)
    with pytest.raises(UserInputError, match="at least 16"):
        check_token("x" * 15)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_quick_check_answers_without_hashing_where_it_can(tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    add_user(users, "alice", "s3cret-Alice")
    checker = Authenticator.from_options(TOKEN, str(users))
    assert checker is not None
    assert checker.quick_check(f"Bearer {TOKEN}") is True
    assert checker.quick_check("Bearer wrong") is False
    assert checker.quick_check(_basic("mallory", "x")) is False  # unknown user
    assert checker.quick_check("Basic not-base64!") is False
    assert checker.quick_check(_basic("alice", "guess")) is None  # scrypt must decide
    assert checker.check(_basic("alice", "guess")) is False
    assert checker.quick_check(_basic("alice", "guess")) is False  # a repeat costs nothing
    assert checker.check(_basic("alice", "s3cret-Alice")) is True
    assert checker.quick_check(_basic("alice", "s3cret-Alice")) is True


def test_backoff_doubles_after_the_free_failures_and_forgets() -> None:
    now = [1000.0]
    backoff = Backoff(free=2, base=1.0, cap=8.0, forget_after=100.0, clock=lambda: now[0])
    assert backoff.retry_after("a") == 0
    backoff.failed("a")
    backoff.failed("a")
    assert backoff.retry_after("a") == 1.0
    assert backoff.retry_after("b") == 0  # per client
    for _ in range(10):
        backoff.failed("a")
    assert backoff.retry_after("a") == 8.0  # capped
    now[0] += 5
    assert backoff.retry_after("a") == 3.0
    now[0] += 200
    assert backoff.retry_after("a") == 0  # forgotten
    backoff.failed("c")
    backoff.succeeded("c")
    assert backoff.retry_after("c") == 0


def test_backoff_remembers_a_bounded_number_of_clients() -> None:
    backoff = Backoff(free=0, max_clients=3)
    for n in range(100):
        backoff.failed(f"10.0.0.{n}")
    assert backoff.retry_after("10.0.0.0") == 0  # the oldest were forgotten
    assert backoff.retry_after("10.0.0.99") > 0


@contextmanager
def _served(tmp_path: Path, backoff: Backoff | None = None) -> Iterator[str]:
    """The real app under uvicorn on a free loopback port, in a thread of this process."""
    import socket

    import uvicorn

    from reprorun.server.app import ServerConfig, create_app
    from reprorun.server.guards import AuthMiddleware

    users = tmp_path / "users.txt"
    add_user(users, "alice", "s3cret-Alice")
    add_user(users, "bob", "hunter2-bob")
    config = ServerConfig(
        backend_store_uri=str(tmp_path / "store.db"),
        basic_auth_file=str(users),
        allowed_hosts=("127.0.0.1",),
    )
    app = create_app(config)
    if backoff is not None:
        # The same middleware with a back-off the test controls (the stack is built lazily).
        for m in app.user_middleware:
            if m.cls is AuthMiddleware:
                m.kwargs["backoff"] = backoff
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _get(url: str, authorization: str | None = None) -> tuple[int, Message]:
    request = urllib.request.Request(url)
    if authorization:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.headers
    except urllib.error.HTTPError as error:
        return error.code, error.headers


def test_password_checks_do_not_stall_other_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A password check that takes long (scrypt under load) holds only its own request."""
    real_verify = auth.verify_password

    def slow_verify(password: str, encoded: str) -> bool:
        time.sleep(3)
        return real_verify(password, encoded)

    monkeypatch.setattr(auth, "verify_password", slow_verify)
    with _served(tmp_path) as url:
        guess = threading.Thread(target=_get, args=(f"{url}/health", _basic("alice", "guess")))
        guess.start()
        time.sleep(0.3)  # the guess is being hashed
        started = time.monotonic()
        status, _ = _get(f"{url}/health", _basic("mallory", "x"))  # needs no hashing
        answered_in = time.monotonic() - started
        guess.join()
    assert status == 401
    assert answered_in < 2, f"a request waited {answered_in:.1f} s behind a password check"


def test_a_client_guessing_passwords_is_told_to_wait(tmp_path: Path) -> None:
    with _served(tmp_path, Backoff(free=2, base=30.0)) as url:
        assert _get(f"{url}/health", _basic("alice", "guess-1"))[0] == 401
        assert _get(f"{url}/health", _basic("alice", "guess-2"))[0] == 401
        status, headers = _get(f"{url}/health", _basic("alice", "guess-3"))
        assert status == 429
        assert 1 <= int(headers["Retry-After"]) <= 30
        # Even the right password waits (it would cost a hash), but nothing that costs none:
        assert _get(f"{url}/health", _basic("alice", "s3cret-Alice"))[0] == 429
        assert _get(f"{url}/health", _basic("alice", "guess-1"))[0] == 401
        # Another user signing in from the same address is not locked out by those guesses.
        assert _get(f"{url}/health", _basic("bob", "hunter2-bob"))[0] == 200
