"""Issue 18, section 3, on real engines (a single-node Slurm and a Ray head, both on this
machine): a remote job's log reaches the tracking server while the job runs, and a job whose
wrapper stops (SIGSTOP: the node "hangs") is closed FAILED with reason node-lost once its
heartbeat is older than the window. The jobs log through a real ``reprorun server``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

import reprorun.projects
from reprorun.backends.base import SubmittedRun
from reprorun.backends.job import RemoteJob
from reprorun.tracking.entities import ExitReason, RunStatus, SystemTags
from reprorun.tracking.store import open_store
from tests.conftest import make_project
from tests.heard import Heard
from tests.integration.server_proc import ServerProcess, server_process

REPRORUN = (sys.executable, "-m", "reprorun")
WINDOW = 3  # seconds: REPRORUN_HEARTBEAT_TIMEOUT of the reader
TICKS = "echo started; for i in $(seq 1 900); do echo tick $i; sleep 0.1; done"


def _project(tmp_path: Path) -> Path:
    return make_project(
        tmp_path / "p", f"entry_points:\n  main:\n    command: {json.dumps(TICKS)}\n"
    )


def _until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def _ui_log(server: ServerProcess, run_id: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{server.url}/ui-api/runs/{run_id}/log", timeout=30) as answer:
        return dict(json.load(answer))


def _wrapper_pids(run_id: str) -> list[int]:
    """The heartbeat wrappers of ``run_id`` on this machine (the engines run their jobs here)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if b"reprorun.tracking.heartbeat" in cmdline and (
            f"REPRORUN_RUN_ID={run_id}".encode() in environ.split(b"\0")
        ):
            found.append(int(entry.name))
    return found


@contextmanager
def _stopped(pids: list[int]) -> Iterator[None]:
    """The wrappers stopped (SIGSTOP) for the block, then killed with their commands."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                os.kill(pid, signal.SIGCONT)


def _live_then_lost(server: ServerProcess, submitted: SubmittedRun) -> None:
    run_id = submitted.run_id
    # While the job runs, the server has its log (and more of it at each look).
    first = _until(
        lambda: (got := _ui_log(server, run_id))["exists"] and "tick 3" in got["text"] and got,
        90,
        "the job's log on the server",
    )
    assert first["status"] == "RUNNING"
    assert first["text"].startswith("started\ntick 1\n")
    _until(lambda: _ui_log(server, run_id)["size"] > first["size"], 30, "the log to grow")
    store = open_store(server.url)
    assert SystemTags.HEARTBEAT in store.get_run(run_id).data.tags
    listed = subprocess.run(
        [*REPRORUN, "runs", "logs", run_id, "--tracking-uri", server.url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "started\ntick 1\n" in listed.stdout, listed  # Ray's log has its own lines first
    # The wrapper stops answering: after the window, the next read closes the run.
    pids = _until(lambda: _wrapper_pids(run_id), 30, "the job's wrapper process")
    with _stopped(pids):
        time.sleep(WINDOW + 2)
        env = {**os.environ, "REPRORUN_HEARTBEAT_TIMEOUT": str(WINDOW)}
        shown = subprocess.run(
            [*REPRORUN, "runs", "status", run_id, "--json", "--tracking-uri", server.url],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert shown.returncode == 3, shown  # FAILED
        run = store.get_run(run_id)
        assert run.info.status is RunStatus.FAILED
        assert run.data.tags[SystemTags.EXIT_REASON] == ExitReason.NODE_LOST.value
        assert "no heartbeat from the job" in run.data.tags[SystemTags.EXIT_DETAIL]
        # The reader that closed it asked the engine to stop the hung job (abandoned), and
        # the engine's later word does not change why the run ended.
        assert isinstance(submitted, RemoteJob)
        _until(lambda: submitted._state().status.is_terminal, 60, "the engine to stop the job")
        assert submitted.get_status() is RunStatus.FAILED
        tags = store.get_run(run_id).data.tags
        assert tags[SystemTags.EXIT_REASON] == ExitReason.NODE_LOST.value


@pytest.mark.slow
def test_slurm_job_log_is_live_on_the_server_and_a_stopped_wrapper_is_node_lost(
    slurm_cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPRORUN_HEARTBEAT_INTERVAL", "0.5")
    with server_process(tmp_path / "server") as server:
        submitted = reprorun.projects.run(
            str(_project(tmp_path)),
            backend="slurm",
            backend_config={"partition": slurm_cluster, "time": "5"},
            env_manager="local",
            tracking_uri=server.url,
            synchronous=False,
        )
        try:
            _live_then_lost(server, submitted)
        finally:
            subprocess.run(["scancel", submitted.job_id], timeout=60, check=False)


@pytest.mark.slow
def test_ray_job_log_is_live_on_the_server_and_a_stopped_wrapper_is_node_lost(
    ray_address: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPRORUN_HEARTBEAT_INTERVAL", "0.5")
    with server_process(tmp_path / "server") as server:
        submitted = reprorun.projects.run(
            str(_project(tmp_path)),
            backend="ray",
            backend_config={"address": ray_address},
            env_manager="local",
            tracking_uri=server.url,
            synchronous=False,
        )
        try:
            _live_then_lost(server, submitted)
        finally:
            with suppress(Exception):
                submitted.cancel(force=True)


@pytest.mark.slow
def test_a_detached_slurm_job_is_closed_and_notified_by_the_server_that_reads_it(
    slurm_cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nobody waits for the job and nobody asks Slurm: its wrapper reports the command's
    end, and the server's next read after the heartbeat window closes the run from that
    report and tells the server's notification targets, once."""
    heard = Heard(tmp_path)
    monkeypatch.setenv("REPRORUN_HEARTBEAT_INTERVAL", "0.5")
    path = make_project(tmp_path / "p", "entry_points:\n  main:\n    command: 'echo done'\n")
    settings = {"REPRORUN_HEARTBEAT_TIMEOUT": str(WINDOW), "REPRORUN_NOTIFY": heard.target}
    with server_process(tmp_path / "server", env=settings) as server:
        submitted = reprorun.projects.run(
            str(path),
            backend="slurm",
            backend_config={"partition": slurm_cluster, "time": "5"},
            env_manager="local",
            tracking_uri=server.url,
            synchronous=False,
        )
        store = open_store(server.url)
        _until(
            lambda: SystemTags.COMMAND_EXIT in store.get_run(submitted.run_id).data.tags,
            90,
            "the wrapper to report the command's end",
        )
        run = _until(
            lambda: (got := store.get_run(submitted.run_id)).info.status.is_terminal and got,
            WINDOW + 30,
            "a read to close the run",
        )
        assert run.info.status is RunStatus.FINISHED
        assert run.data.tags[SystemTags.EXIT_REASON] == ExitReason.SUCCEEDED.value
        assert "as its wrapper reported" in run.data.tags[SystemTags.EXIT_DETAIL]
        for _ in range(3):
            store.get_run(submitted.run_id)  # more reads tell nobody again
        assert heard.events() == [("finished", submitted.run_id)]
        assert submitted.get_status() is RunStatus.FINISHED  # Slurm agrees when asked
