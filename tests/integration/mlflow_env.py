"""The real MLflow client against a real `reprorun server`, for the compatibility tests.

``client_python()`` builds (once, then reuses) a virtualenv holding ``mlflow`` and scikit-learn
under a cache folder that outlives test sessions; ``TrackingServer`` runs ``reprorun server`` in
a subprocess on a free loopback port; ``run_client()`` runs one scenario of ``mlflow_client.py``
with the virtualenv's Python against it and returns the JSON report the scenario wrote.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.conftest import stop_process

MLFLOW_VERSION = "3.17.2"
CLIENT_PACKAGES = [f"mlflow=={MLFLOW_VERSION}", "scikit-learn"]
COMPLETE_MARKER = ".reprorun-complete"
CLIENT_SCRIPT = Path(__file__).with_name("mlflow_client.py")
BUILD_TIMEOUT = 900  # seconds: a cold uv cache downloads mlflow, pandas, scipy, scikit-learn
SERVER_START_TIMEOUT = 20
CLIENT_TIMEOUT = 300


def cache_dir() -> Path:
    """Where the client's virtualenv lives between test sessions."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "reprorun-tests"


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _has_client(venv: Path) -> bool:
    """Whether ``venv`` is a finished build (marker written last) that imports the client."""
    marker = venv / COMPLETE_MARKER
    python = _venv_python(venv)
    if (
        not marker.exists()
        or marker.read_text() != " ".join(CLIENT_PACKAGES)
        or not python.exists()
    ):
        return False
    check = (
        "import mlflow, sklearn, sys; "
        f"sys.exit(0 if mlflow.__version__ == {MLFLOW_VERSION!r} else 1)"
    )
    result = subprocess.run([str(python), "-c", check], capture_output=True, timeout=120)
    return result.returncode == 0


def _run_uv(*args: str) -> None:
    uv = shutil.which("uv")
    if uv is None:
        raise RuntimeError("The MLflow compatibility tests need `uv` on PATH to build a client.")
    result = subprocess.run(
        [uv, *args], capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"`uv {' '.join(args)}` failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )


def client_python() -> Path:
    """The Python of a virtualenv with the real MLflow client, built on first use.

    Built under a file lock, so concurrent sessions never build twice nor use a half-built
    environment; a marker written last tells a finished build from an interrupted one (which is
    rebuilt). Any failure raises: the tests fail, they never skip.
    """
    from filelock import FileLock

    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    venv = root / f"mlflow-{MLFLOW_VERSION}"
    with FileLock(str(root / f"mlflow-{MLFLOW_VERSION}.lock"), timeout=BUILD_TIMEOUT):
        if _has_client(venv):
            return _venv_python(venv)
        shutil.rmtree(venv, ignore_errors=True)
        # The interpreter running the tests: present, so nothing to download.
        _run_uv("venv", "--quiet", "--python", sys.executable, str(venv))
        # Compiled now: with PYTHONDONTWRITEBYTECODE set (as in CI), every client process
        # would otherwise compile mlflow, pandas and scikit-learn again (~25 s each).
        python = str(_venv_python(venv))
        _run_uv(
            "pip", "install", "--quiet", "--compile-bytecode", "--python", python, *CLIENT_PACKAGES
        )
        (venv / COMPLETE_MARKER).write_text(" ".join(CLIENT_PACKAGES))
        if not _has_client(venv):
            raise RuntimeError(f"The MLflow client virtualenv at {venv} does not import mlflow.")
        return _venv_python(venv)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TrackingServer:
    """``reprorun server`` in a subprocess over a fresh store under ``home``."""

    def __init__(self, home: Path):
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.artifacts = home / "served-artifacts"
        self.log = home / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REPRORUN_", "MLFLOW_"))}
        env["REPRORUN_HOME"] = str(self.home)
        command = [
            sys.executable,
            "-m",
            "reprorun",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--backend-store-uri",
            f"sqlite:///{self.home / 'server.db'}",
            "--artifacts-destination",
            str(self.artifacts),
        ]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.home
            )
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"reprorun server exited with {self.process.returncode} before answering "
                    f"/health:\n{self.output()}"
                )
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"reprorun server did not answer {self.url}/health within "
                    f"{SERVER_START_TIMEOUT} s:\n{self.output()}"
                )
            time.sleep(0.1)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        stop_process(self.process)


@contextlib.contextmanager
def tracking_server(home: Path) -> Iterator[TrackingServer]:
    server = TrackingServer(home)
    server.start()
    try:
        yield server
    finally:
        died = not server.alive()
        server.stop()
        if died:
            # Seen in pytest's captured output of the failing test.
            print(f"reprorun server died during the test:\n{server.output()}", file=sys.stderr)


def run_client(
    python: Path, server: TrackingServer, scenario: str, work: Path, given: dict[str, Any]
) -> dict[str, Any]:
    """Run ``scenario`` of ``mlflow_client.py`` with ``given`` as its input; return its report.

    A scenario that raises fails the test with the client's traceback and the server's log.
    """
    work.mkdir(parents=True, exist_ok=True)
    given_file = work / f"{scenario}.given.json"
    report_file = work / f"{scenario}.report.json"
    given_file.write_text(json.dumps(given))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPRORUN_", "MLFLOW_"))}
    env.update(
        MLFLOW_TRACKING_URI=server.url,
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
        PYTHONUTF8="1",
        # Fail fast rather than retry a broken request for minutes.
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        MLFLOW_HTTP_REQUEST_TIMEOUT="60",
    )
    result = subprocess.run(
        [str(python), str(CLIENT_SCRIPT), scenario, str(given_file), str(report_file)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
    )
    if result.returncode != 0 or not report_file.exists():
        raise AssertionError(
            f"MLflow client scenario {scenario!r} failed ({result.returncode}).\n"
            f"--- client stdout\n{result.stdout}\n--- client stderr\n{result.stderr}\n"
            f"--- server log\n{server.output()}"
        )
    report: dict[str, Any] = json.loads(report_file.read_text())
    return report
