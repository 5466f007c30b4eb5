"""``reprorun server`` as a real subprocess on a free 127.0.0.1 port, for integration tests.

    with server_process(tmp_path, "--auth-token", "T") as server:
        urllib.request.urlopen(server.url + "/health")  # (401 here: the token is required)

The server gets a SQLite store (or the database ``store_uri`` names, e.g. a PostgreSQL schema
from ``tests/pg.py``) and an artifact folder of its own under ``workdir``, an environment
without REPRORUN_*/MLFLOW_* (so it never touches the caller's store), and is stopped
(terminate, then kill after a bound) when the block ends; a server that dies early or does not
answer ``/health`` within ``timeout`` seconds raises with its log. ``workers=N`` starts
``--workers N`` and yields once every worker has built its app (``server.workers()`` lists
their pids).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT = 30.0  # seconds for /health to answer
STOP_TIMEOUT = 10.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int
    workdir: Path  # holds store.db, artifacts/, home/ and server.log
    host: str = "127.0.0.1"  # where clients connect

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def artifacts(self) -> Path:
        return self.workdir / "artifacts"

    @property
    def store(self) -> Path:
        return self.workdir / "store.db"

    def connection(self, timeout: float = 60) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def log(self) -> str:
        path = self.workdir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def output(self) -> str:  # as mlflow_env.TrackingServer, for run_client()
        return self.log()

    def alive(self) -> bool:
        return self.process.poll() is None

    def workers(self) -> list[int]:
        """The pids of uvicorn's worker processes (none for a one-process server)."""
        return worker_pids(self.process.pid)


def worker_pids(pid: int) -> list[int]:
    """The processes uvicorn's supervisor ``pid`` started to serve: its children, but for
    multiprocessing's resource tracker (reprorun forks its workers; spawned ones would run
    ``spawn_main``)."""
    found = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return []
    for task in tasks:
        try:
            children = (task / "children").read_text().split()
        except FileNotFoundError:
            continue
        for child in children:
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except FileNotFoundError:
                continue
            if b"resource_tracker" not in cmdline:
                found.append(int(child))
    return found


def started_workers(log: str) -> list[int]:
    """The pids of the workers whose app is built, from the server's log (uvicorn's
    ``Started server process [pid]``, logged after the app factory returned)."""
    return [int(pid) for pid in re.findall(r"Started server process \[(\d+)\]", log)]


def _health_status(host: str, port: int) -> int | None:
    """/health's HTTP status, or None if nothing answers yet (401 still means "up")."""
    conn = http.client.HTTPConnection(host, port, timeout=2)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()  # uvicorn stops its --workers processes on SIGTERM
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 9)  # its own session: the server and its workers only
        process.wait(timeout=STOP_TIMEOUT)


@contextlib.contextmanager
def server_process(
    workdir: Path,
    *args: str,
    host: str | None = "127.0.0.1",
    port: int | None = None,
    store: bool = True,
    store_uri: str | None = None,
    workers: int = 1,
    timeout: float = START_TIMEOUT,
    env: dict[str, str] | None = None,
) -> Iterator[ServerProcess]:
    """Start ``reprorun server *args`` in ``workdir``; yield it once /health answers (and,
    with ``workers`` > 1, once every worker has started); stop it.

    ``host=None`` leaves ``--host`` out (the server's default bind; clients use 127.0.0.1).
    ``store=False`` leaves out ``--backend-store-uri``/``--artifacts-destination``;
    ``store_uri`` replaces the SQLite file under ``workdir``. The server gets none of this
    process's REPRORUN_/MLFLOW_ variables, only ``env``'s on top of the rest.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    command = [sys.executable, "-m", "reprorun", "server", "--port", str(port)]
    if host is not None:
        command += ["--host", host]
    if store:
        command += [
            "--backend-store-uri",
            store_uri or f"sqlite:///{workdir / 'store.db'}",
            "--artifacts-destination",
            str(workdir / "artifacts"),
        ]
    if workers != 1:
        command += ["--workers", str(workers)]
    command += args
    given = env or {}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPRORUN_", "MLFLOW_"))}
    env["REPRORUN_HOME"] = str(workdir / "home")
    env.update(given)
    with open(workdir / "server.log", "ab") as log:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = ServerProcess(process, port, workdir)
    try:
        deadline = time.monotonic() + timeout
        while _health_status(server.host, port) is None or (
            workers > 1 and len(set(started_workers(server.log()))) < workers
        ):
            if process.poll() is not None:
                raise RuntimeError(
                    f"reprorun server exited with {process.returncode} before answering "
                    f"/health:\n{server.log()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"reprorun server did not answer {server.url}/health within {timeout} s:\n"
                    f"{server.log()}"
                )
            time.sleep(0.1)
        yield server
    finally:
        died = process.poll() is not None
        _stop(process)
        if died:
            print(f"reprorun server died during the test:\n{server.log()}", file=sys.stderr)
