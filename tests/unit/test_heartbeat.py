"""Issue 18, section 3: the remote job's wrapper (heartbeats and the live log, as real
processes against a real store) and the heartbeat window that closes a silent run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reprorun.backends.base import SubmittedRun, follow
from reprorun.backends.databricks.launcher import command_argv
from reprorun.backends.databricks.payload import launcher_parameters
from reprorun.backends.heartbeat import Watched, close_if_lost, heartbeat_lost, wrapped
from reprorun.backends.kubernetes.manifest import job_manifest
from reprorun.backends.ray.backend import entrypoint
from reprorun.backends.status import refresh
from reprorun.config import resolve_tracking, seconds
from reprorun.errors import UserInputError
from reprorun.tracking.artifacts import local_path
from reprorun.tracking.entities import ExitReason, RunStatus, SystemTags, now_ms
from reprorun.tracking.store import open_store
from reprorun.tracking.store.base import TrackingStore
from tests.heard import Heard

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _run_env(store: TrackingStore, run_id: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": SRC,
        "REPRORUN_RUN_ID": run_id,
        "REPRORUN_TRACKING_URI": resolve_tracking().uri,
    }


def _wrapper(every: float, command: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "reprorun.tracking.heartbeat", "--every", str(every)]
    return subprocess.Popen(
        [*argv, "--", "bash", "-c", command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for(check, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_the_wrapper_beats_and_stores_the_log_while_the_command_runs(home: Path) -> None:
    store = open_store()
    run = store.create_run("0")
    log = local_path(run.info.artifact_uri, "logs/run.log")
    env = _run_env(store, run.info.run_id)
    # The command waits for a file before it ends: the log must be stored before that.
    gate = home / "gate"
    command = f"echo first; echo oops >&2; while [ ! -e {gate} ]; do sleep 0.05; done; echo last"
    proc = _wrapper(0.2, command, env)
    try:
        text = _wait_for(lambda: log.is_file() and log.read_bytes())
        assert text == b"first\noops\n"
        beat = store.get_run(run.info.run_id).data.tags[SystemTags.HEARTBEAT]
        assert abs(int(beat) - now_ms()) < 10_000
        gate.touch()
        out, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert out == b"first\noops\nlast\n"  # the engine's log is what it was
    assert log.read_bytes() == out  # and the stored one has it all, end included


def test_the_wrapper_keeps_the_commands_exit_status_and_forwards_sigterm(home: Path) -> None:
    store = open_store()
    run = store.create_run("0")
    env = _run_env(store, run.info.run_id)
    proc = _wrapper(0.2, "exit 3", env)
    proc.communicate(timeout=20)
    assert proc.returncode == 3
    proc = _wrapper(0.2, "trap 'echo got-term; exit 7' TERM; echo ready; sleep 30 & wait", env)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert (proc.returncode, out) == (7, b"got-term\n")


def test_a_store_out_of_the_jobs_reach_leaves_the_command_as_before(tmp_path: Path) -> None:
    elsewhere = tmp_path / "not-here" / "store.db"
    env = {
        **os.environ,
        "PYTHONPATH": SRC,
        "REPRORUN_RUN_ID": "0" * 32,
        "REPRORUN_TRACKING_URI": f"sqlite:///{elsewhere}",
    }
    proc = _wrapper(0.1, "echo hello; sleep 0.3", env)
    out, err = proc.communicate(timeout=20)
    assert (proc.returncode, out) == (0, b"hello\n")
    assert b"is not on this node: no heartbeats or live log" in err
    assert not elsewhere.parent.exists()  # no empty store made on the node


def test_the_shell_line_runs_the_command_alone_when_python3_lacks_the_wrapper(
    tmp_path: Path,
) -> None:
    line = wrapped('echo "it\'s $((1 + 1))"', 0.5)
    assert "python3 -m reprorun.tracking.heartbeat --every 0.5 -- bash -c" in line
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python3").write_text("#!/bin/sh\nexit 1\n")
    (fake / "python3").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    done = subprocess.run(["sh", "-c", line], env=env, capture_output=True, timeout=20)
    assert (done.returncode, done.stdout) == (0, b"it's 2\n")


def test_the_wrapper_runs_through_the_shell_line(home: Path, tmp_path: Path) -> None:
    store = open_store()
    run = store.create_run("0")
    env = _run_env(store, run.info.run_id)
    # python3 here: this interpreter, which imports the checkout's client from PYTHONPATH.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python3").symlink_to(sys.executable)
    env["PATH"] = f"{fake}:{env['PATH']}"
    line = wrapped("echo one; exit 4", 0.1, exec_=False) + '; echo "code $?"'
    done = subprocess.run(["sh", "-c", line], env=env, capture_output=True, timeout=30)
    assert done.stdout == b"one\ncode 4\n"
    log = local_path(run.info.artifact_uri, "logs/run.log")
    assert log.read_bytes() == b"one\n"
    assert SystemTags.HEARTBEAT in store.get_run(run.info.run_id).data.tags


def test_each_backend_runs_its_command_under_the_wrapper() -> None:
    assert entrypoint("echo hi", "") == "exec bash -c 'echo hi'"  # without: as before
    ray = entrypoint("echo hi", "sub", 15.0)
    assert ray.startswith("cd sub && if python3 -c 'import reprorun.tracking.heartbeat'")
    assert "then exec python3 -m reprorun.tracking.heartbeat --every 15 -- bash -c" in ray
    assert ray.endswith("else exec bash -c 'echo hi'; fi")
    template = {"spec": {"template": {"spec": {"containers": [{"name": "x"}]}}}}
    manifest = job_manifest(
        template,
        name="n",
        container="c",
        image="i",
        command="echo $HOME",
        workdir="/w",
        env={},
        namespace="ns",
        heartbeat=2.5,
    )
    command = manifest["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["bash", "-c"]
    assert "--every 2.5 -- bash -c 'echo $$HOME'" in command[2]  # $$: Kubernetes' literal $
    parameters = launcher_parameters("/p", "/c", "", "echo hi", {}, 15.0)
    assert parameters[-1] == "--heartbeat=15"
    assert "--heartbeat" not in " ".join(launcher_parameters("/p", "/c", "", "echo hi", {}))


def test_the_databricks_launcher_wraps_the_command_when_its_python_can(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": SRC}
    assert command_argv("echo hi", None, str(tmp_path), env) == ["bash", "-c", "echo hi"]
    assert command_argv("echo hi", "15", str(tmp_path), env) == [
        sys.executable,
        *("-m", "reprorun.tracking.heartbeat", "--every", "15", "--"),
        *("bash", "-c", "echo hi"),
    ]
    # A Python whose `reprorun` is not the client (too old, say): the command alone.
    broken = tmp_path / "reprorun"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('too old')\n")
    no_client = {**os.environ, "PYTHONPATH": str(tmp_path)}
    assert command_argv("echo hi", "15", str(tmp_path), no_client) == ["bash", "-c", "echo hi"]


def _running(store: TrackingStore, backend: str, beat: int | None) -> str:
    run_id = store.create_run("0").info.run_id
    store.set_tag(run_id, SystemTags.BACKEND, backend)
    if beat is not None:
        store.set_tag(run_id, SystemTags.HEARTBEAT, str(beat))
    return run_id


def test_a_run_whose_heartbeat_stopped_is_closed_node_lost_when_read(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPRORUN_HEARTBEAT_TIMEOUT", "2")
    store = open_store()
    silent = _running(store, "slurm", now_ms() - 5_000)
    alive = _running(store, "slurm", now_ms())
    never = _running(store, "slurm", None)  # its job could not reach the store: left as before
    for run_id in (silent, alive, never):
        refresh(store, store.get_run(run_id), engines=False)  # as the server reads
    run = store.get_run(silent)
    assert run.info.status is RunStatus.FAILED
    assert run.info.end_time is not None
    assert run.data.tags[SystemTags.EXIT_REASON] == ExitReason.NODE_LOST.value
    assert "no heartbeat from the job for 5 s" in run.data.tags[SystemTags.EXIT_DETAIL]
    assert store.get_run(alive).info.status is RunStatus.RUNNING
    assert store.get_run(never).info.status is RunStatus.RUNNING
    # An ended run keeps its end, whatever its heartbeat says.
    store.update_run(alive, status=RunStatus.FINISHED, end_time=now_ms())
    store.set_tag(alive, SystemTags.HEARTBEAT, str(now_ms() - 60_000))
    assert close_if_lost(store, store.get_run(alive)).info.status is RunStatus.FINISHED


def test_the_heartbeat_window_is_a_setting(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    store = open_store()
    run = store.get_run(_running(store, "ray", now_ms() - 100_000))
    assert seconds("heartbeat_timeout") == 300  # the default: a few minutes
    assert not heartbeat_lost(run)
    monkeypatch.setenv("REPRORUN_HEARTBEAT_TIMEOUT", "60")
    assert heartbeat_lost(run)
    for bad in ("soon", "0", "-1", "nan"):
        monkeypatch.setenv("REPRORUN_HEARTBEAT_TIMEOUT", bad)
        with pytest.raises(UserInputError, match="REPRORUN_HEARTBEAT_TIMEOUT must be"):
            seconds("heartbeat_timeout")


class _Running(SubmittedRun):
    """An engine that says RUNNING forever (its node hangs), with a log."""

    def __init__(self, run_id: str):
        self._run_id = run_id

    @property
    def run_id(self) -> str:
        return self._run_id

    def wait(self) -> bool:
        raise AssertionError("not called")

    def get_status(self) -> RunStatus:
        return RunStatus.RUNNING

    def cancel(self, force: bool = False) -> None:
        raise AssertionError("not called")

    def logs(self, start: int = 0) -> bytes:
        return b"so far\n"[start:]


def test_following_a_run_ends_when_its_heartbeat_is_lost(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPRORUN_HEARTBEAT_TIMEOUT", "1")
    store = open_store()
    run_id = _running(store, "ray", now_ms())
    chunks: list[bytes] = []
    started = time.monotonic()
    status = follow(Watched(store, _Running(run_id)), chunks.append, 0.1)
    assert status is RunStatus.FAILED
    assert 1 <= time.monotonic() - started < 15
    assert b"".join(chunks) == b"so far\n"
    assert store.get_run(run_id).data.tags[SystemTags.EXIT_REASON] == "node-lost"


def test_a_queued_run_is_running_once_its_wrapper_runs(home: Path) -> None:
    store = open_store()
    run_id = store.create_run("0").info.run_id
    store.update_run(run_id, status=RunStatus.SCHEDULED)  # as a backend leaves it at submission
    proc = _wrapper(0.2, "echo hi", _run_env(store, run_id))
    proc.communicate(timeout=20)
    assert store.get_run(run_id).info.status is RunStatus.RUNNING  # the engine closes it later


def test_a_lost_heartbeat_is_notified_once(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    heard = Heard(tmp_path)
    monkeypatch.setenv("REPRORUN_NOTIFY", heard.target)
    monkeypatch.setenv("REPRORUN_HEARTBEAT_TIMEOUT", "1")
    store = open_store()
    run_id = _running(store, "kubernetes", now_ms() - 5_000)
    for _ in range(2):  # read twice: closed (and notified) once
        refresh(store, store.get_run(run_id), engines=False)
    (said,) = heard.said()
    assert (said["event"], said["run_id"], said["status"]) == ("node-lost", run_id, "FAILED")


def test_the_wrapper_says_its_command_ended_after_the_log_is_stored(home: Path) -> None:
    store = open_store()
    run = store.create_run("0")
    proc = _wrapper(5.0, "echo out; exit 3", _run_env(store, run.info.run_id))
    proc.communicate(timeout=20)
    assert proc.returncode == 3
    tags = store.get_run(run.info.run_id).data.tags
    assert tags[SystemTags.COMMAND_EXIT] == "3"
    assert local_path(run.info.artifact_uri, "logs/run.log").read_bytes() == b"out\n"


def test_a_long_log_is_uploaded_less_often(home: Path, tmp_path: Path) -> None:
    from reprorun.tracking import heartbeat as wrapper

    store = open_store()
    run = store.create_run("0")
    reporter = wrapper.Reporter(store, run.info.run_id, run.info.artifact_uri, "")
    uploads: list[int] = []
    reporter._upload = lambda _spool, size: uploads.append(size)  # type: ignore[method-assign]
    spool = tmp_path / "spool"
    mb = wrapper._UPLOAD_BYTES_PER_BEAT
    for beat in range(1, 13):  # a log growing by 1 MB a beat
        reporter.beat(spool, beat * mb)
    # each upload of N MB is followed by N beats without one: ~1 MB uploaded per beat
    assert uploads == [1 * mb, 3 * mb, 7 * mb]
    reporter.beat(spool, 13 * mb, last=True)  # the command's end: always the whole log
    assert uploads[-1] == 13 * mb
    assert sum(uploads) <= 2 * 13 * mb


def _ended_unseen(store: TrackingStore, code: int) -> str:
    run_id = _running(store, "slurm", now_ms() - 5_000)
    store.set_tag(run_id, SystemTags.COMMAND_EXIT, str(code))
    return run_id


def test_a_job_whose_wrapper_said_it_ended_is_closed_from_that_report(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    heard = Heard(tmp_path)
    monkeypatch.setenv("REPRORUN_NOTIFY", heard.target)
    monkeypatch.setenv("REPRORUN_HEARTBEAT_TIMEOUT", "2")
    store = open_store()
    ok, bad, killed = (_ended_unseen(store, code) for code in (0, 3, 137))
    recent = _running(store, "slurm", now_ms())  # ended just now: its engine says how first
    store.set_tag(recent, SystemTags.COMMAND_EXIT, "0")
    for _ in range(2):  # as the server reads (no engine asked), twice: closed once
        for run_id in (ok, bad, killed, recent):
            refresh(store, store.get_run(run_id), engines=False)
    run = store.get_run(ok)
    assert run.info.status is RunStatus.FINISHED
    assert run.data.tags[SystemTags.EXIT_REASON] == ExitReason.SUCCEEDED.value
    assert "as its wrapper reported" in run.data.tags[SystemTags.EXIT_DETAIL]
    run = store.get_run(bad)
    assert run.info.status is RunStatus.FAILED
    assert run.data.tags[SystemTags.EXIT_REASON] == ExitReason.CODE_ERROR.value
    assert run.data.tags[SystemTags.EXIT_CODE] == "3"
    assert store.get_run(killed).data.tags[SystemTags.EXIT_SIGNAL] == "SIGKILL"
    assert store.get_run(recent).info.status is RunStatus.RUNNING
    assert sorted(heard.events()) == sorted([("finished", ok), ("failed", bad), ("failed", killed)])


def test_a_wrapper_that_said_its_command_ended_is_never_lost(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPRORUN_HEARTBEAT_TIMEOUT", "2")
    store = open_store()
    run = store.get_run(_ended_unseen(store, 0))
    assert not heartbeat_lost(run)


class _Hung(_Running):
    """The engine still says RUNNING; reprorun may ask it to stop the job."""

    abandoned = 0

    def abandon(self) -> None:
        self.abandoned += 1


def test_waiting_on_a_job_whose_heartbeat_stopped_abandons_it(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPRORUN_HEARTBEAT_TIMEOUT", "1")
    store = open_store()
    run_id = _running(store, "slurm", now_ms())
    hung = _Hung(run_id)
    watched = Watched(store, hung)
    started = time.monotonic()
    assert watched.wait() is False  # returns once the heartbeat is older than the window
    assert 1 <= time.monotonic() - started < 15
    assert hung.abandoned >= 1
    assert watched.ended_here  # this waiter closed it (and told the targets)
    run = store.get_run(run_id)
    assert (run.info.status, run.data.tags[SystemTags.EXIT_REASON]) == (
        RunStatus.FAILED,
        ExitReason.NODE_LOST.value,
    )
