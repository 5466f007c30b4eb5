"""A real S3 API server for the tests: moto's standalone server on a free port of 127.0.0.1.

``moto_server`` (session) starts ``python -m moto.server`` once per test session and stops it at
the end, so the S3 tests need nothing started beforehand (a fresh clone with the dev extra
runs them). ``s3`` (per test) points the environment at it the way a deployment would:
``MLFLOW_S3_ENDPOINT_URL``, fake ``AWS_*`` credentials, nothing of the developer's own
``~/.aws``; and creates an empty bucket of the test's own. ``CutProxy`` forwards TCP to it and
can cut every connection at once: a network failure mid-upload, with the server's state kept. ``moto_auth_server`` is a second
server that checks credentials (``INITIAL_NO_AUTH_ACTION_COUNT=0``: every key is unknown), for
the wrong-credentials cases.

Import the fixtures into a test module: ``from tests.s3 import moto_server, s3_bucket``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import stop_process

START_TIMEOUT = 30.0
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/dev/null",  # nothing of the developer's own AWS set-up
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",  # no 2 s wait on an instance-metadata lookup
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MotoServer:
    """``python -m moto.server`` on 127.0.0.1; ``stop()`` and ``start()`` again on the same port
    (a test may kill it mid-upload)."""

    def __init__(self, log: Path, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, **self.env}
        env.pop("AWS_PROFILE", None)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"moto server exited with {self.process.returncode}:\n{self.output()}"
                )
            try:
                with urllib.request.urlopen(self.url + "/moto-api/", timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # it answers
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto server did not answer within {START_TIMEOUT} s")
            time.sleep(0.1)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """Kill it at once (SIGKILL): connections break mid-request."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_process(self.process, grace=5)


_TEST_CLIENTS: dict[str, Any] = {}


def bucket_client(endpoint: str) -> Any:
    """A boto3 client of the tests' own for ``endpoint`` (one per endpoint, closed at the end)."""
    if endpoint not in _TEST_CLIENTS:
        import boto3

        _TEST_CLIENTS[endpoint] = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
    return _TEST_CLIENTS[endpoint]


def close_clients() -> None:
    """Close the boto3 clients the tests and reprorun made (their pooled connections)."""
    from reprorun.tracking import s3 as tracking_s3

    for made in (*_TEST_CLIENTS.values(), *tracking_s3._CLIENTS.values()):
        made.close()
    _TEST_CLIENTS.clear()
    tracking_s3._CLIENTS.clear()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    server.start()
    try:
        yield server
    finally:
        close_clients()
        server.stop()


@pytest.fixture(scope="session")
def moto_auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(
        tmp_path_factory.mktemp("moto-auth") / "moto.log", {"INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    )
    server.start()
    try:
        yield server
    finally:
        close_clients()
        server.stop()


@dataclass(frozen=True)
class S3:
    """The test's bucket on the moto server, and the environment that reaches it."""

    endpoint: str
    bucket: str
    env: dict[str, str]  # the variables set for the test (for subprocesses too)

    @property
    def root(self) -> str:
        return f"s3://{self.bucket}/root"

    def client(self) -> Any:
        return bucket_client(self.endpoint)

    def keys(self, prefix: str = "") -> dict[str, bytes]:
        """Every object of the bucket under ``prefix``, with its bytes."""
        c = self.client()
        found = {}
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                found[obj["Key"]] = c.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read()
        return found

    def uploads(self) -> list[str]:
        """Keys with a multipart upload still open (neither completed nor aborted)."""
        answer = self.client().list_multipart_uploads(Bucket=self.bucket)
        return [u["Key"] for u in answer.get("Uploads", [])]


def s3_environment(endpoint: str) -> dict[str, str]:
    return {**CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": endpoint, "NO_PROXY": "127.0.0.1,localhost"}


@pytest.fixture
def s3_bucket(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> S3:
    env = s3_environment(moto_server.url)
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    found = S3(moto_server.url, f"test-{uuid.uuid4().hex[:12]}", env)
    found.client().create_bucket(Bucket=found.bucket)
    return found


class CutProxy:
    """A TCP forwarder on 127.0.0.1 to ``upstream_port``; ``cut()`` closes every connection
    and refuses new ones (a network that fails mid-transfer, the server itself unharmed)."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.cut_off = threading.Event()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if self.cut_off.is_set():
                conn.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self.lock:
                self.sockets += [conn, upstream]
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        self.cut_off.set()
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self.cut()
        self.listener.close()
