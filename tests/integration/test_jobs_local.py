"""Detached local runs, the local queue, and `reprorun runs status|logs|kill` on them: real
supervisor processes, real signals, the real store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import reprorun.projects
from reprorun.errors import UserInputError
from reprorun.tracking.entities import RunStatus
from reprorun.tracking.store import open_store
from tests.conftest import make_project, reprorun_cli

COUNT = """entry_points:
  main:
    parameters:
      n: {type: int, default: 3}
      pause: {type: float, default: 0.2}
    command: 'for i in $(seq {n}); do echo line $i; sleep {pause}; done; reprorun log metric done 1'
"""


def status_of(run_id: str) -> RunStatus:
    return open_store().get_run(run_id).info.status


def wait_until(predicate, timeout: float = 60.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def detach(project: Path, *args: str) -> str:
    done = reprorun_cli("run", str(project), "--detach", *args)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip()
    assert len(run_id) == 32, done.stdout
    assert "reprorun runs logs --follow" in done.stderr
    return run_id


def supervisor_pid(run_id: str) -> int:
    return int(open_store().get_run(run_id).data.tags["reprorun.supervisor"].split(":")[1])


def test_detached_run_is_followed_to_the_end(home: Path, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", COUNT)
    run_id = detach(project, "-P", "n=4")
    running = reprorun_cli("runs", "status", run_id, "--json")
    assert json.loads(running.stdout)["status"] in ("RUNNING", "FINISHED")

    followed = reprorun_cli("runs", "logs", "--follow", "--interval", "0.1", run_id)
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.splitlines() == ["line 1", "line 2", "line 3", "line 4"]
    assert f"run {run_id} FINISHED" in followed.stderr

    status = reprorun_cli("runs", "status", run_id, "--json")
    assert status.returncode == 0
    facts = json.loads(status.stdout)
    assert facts["status"] == "FINISHED" and facts["backend"] == "local"
    assert facts["exit_code"] == "0" and facts["job_id"].isdigit()
    run = open_store().get_run(run_id)
    assert run.data.metrics["done"] == 1.0  # the sidecar and `reprorun log` work detached
    assert reprorun_cli("runs", "logs", run_id).stdout == followed.stdout


def test_the_supervisor_survives_its_terminal_closing(home: Path, tmp_path: Path) -> None:
    """A shell in a session of its own runs `reprorun run --detach`, then its whole session
    gets SIGHUP (the terminal closed): the run goes on and finishes."""
    project = make_project(tmp_path / "p", COUNT)
    out = tmp_path / "id"
    shell = subprocess.Popen(
        [
            "bash",
            "-c",
            f"{sys.executable} -m reprorun run {project} -P n=10 -P pause=0.5 --detach > {out}; "
            "sleep 60",
        ],
        start_new_session=True,
        # A terminal's shell: SIGHUP ends it, even when the tests run under nohup.
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL),
    )
    try:
        wait_until(lambda: out.is_file() and len(out.read_text().strip()) == 32, what="run id")
        assert status_of(out.read_text().strip()) is RunStatus.RUNNING
        os.killpg(shell.pid, signal.SIGHUP)
        shell.wait(timeout=30)
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
    run_id = out.read_text().strip()
    wait_until(lambda: status_of(run_id).is_terminal, what="the run to end")
    assert status_of(run_id) is RunStatus.FINISHED
    assert reprorun_cli("runs", "logs", run_id).stdout.count("line") == 10
    assert reprorun_cli("runs", "status", run_id).returncode == 0


def test_kill_stops_a_detached_run_and_keeps_its_log(home: Path, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", COUNT)
    run_id = detach(project, "-P", "n=300", "-P", "pause=0.1")
    wait_until(lambda: "line 2" in reprorun_cli("runs", "logs", run_id).stdout, what="output")

    killed = reprorun_cli("runs", "kill", run_id)
    assert killed.returncode == 0, killed.stderr
    assert f"Run {run_id} KILLED" in killed.stdout
    assert status_of(run_id) is RunStatus.KILLED
    assert "line 2" in reprorun_cli("runs", "logs", run_id).stdout
    assert reprorun_cli("runs", "status", run_id).returncode == 4

    again = reprorun_cli("runs", "kill", run_id)
    assert again.returncode == 0
    assert "has already ended (KILLED); nothing to stop" in again.stdout


def test_a_supervisor_killed_with_sigkill_leaves_no_running_run(home: Path, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", COUNT)
    run_id = detach(project, "-P", "n=300", "-P", "pause=0.1")
    wait_until(lambda: "line 2" in reprorun_cli("runs", "logs", run_id).stdout, what="output")
    job = int(open_store().get_run(run_id).data.tags["reprorun.backend.jobId"])

    os.kill(supervisor_pid(run_id), signal.SIGKILL)
    wait_until(
        lambda: (
            json.loads(reprorun_cli("runs", "status", run_id, "--json").stdout)["status"]
            == "FAILED"
        ),
        timeout=30,
        what="the stale run to be closed",
    )
    run = open_store().get_run(run_id)
    assert "ended without ending the run" in run.data.tags["reprorun.failureReason"]
    assert "line 2" in reprorun_cli("runs", "logs", run_id).stdout  # the log up to then
    # The command died with its supervisor: its process group is empty.
    wait_until(lambda: _group_is_empty(job), timeout=10, what="the command to stop")


def _group_is_empty(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_kill_reaches_a_synchronous_run_in_another_terminal(home: Path, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", COUNT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "reprorun", "run", str(project), "-P", "n=300", "-P", "pause=0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_until(lambda: bool(open_store().search_runs(["0"])), what="the run")
        run_id = open_store().search_runs(["0"])[0].info.run_id
        killed = reprorun_cli("runs", "kill", run_id)
        assert killed.returncode == 0, killed.stderr
        proc.communicate(timeout=30)
        assert proc.returncode == 128 + signal.SIGTERM
        assert status_of(run_id) is RunStatus.KILLED
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


QUEUED = """entry_points:
  main:
    parameters:
      i: {type: int}
    command: 'echo "start {i} $(date +%s.%N)" >> ../spans; while [ ! -e ../go ]; do sleep 0.05; done; echo "end {i} $(date +%s.%N)" >> ../spans'
"""


def test_max_parallel_holds_runs_until_a_slot_frees(home: Path, tmp_path: Path) -> None:
    """Five detached runs with --max-parallel 2, whose commands wait for a go file: exactly
    two run and three wait SCHEDULED; once released, all finish, never more than two at once."""
    project = make_project(tmp_path / "p", QUEUED)
    run_ids = [
        reprorun.projects.run(
            str(project), parameters={"i": i}, detach=True, synchronous=False, max_parallel=2
        ).run_id
        for i in range(5)
    ]

    def statuses() -> list[str]:
        return sorted(status_of(r).value for r in run_ids)

    wait_until(
        lambda: statuses() == ["RUNNING", "RUNNING", "SCHEDULED", "SCHEDULED", "SCHEDULED"],
        what="two runs running and three queued",
    )
    # The first two submitted are the ones running: first come, first served.
    assert [status_of(r) for r in run_ids[:2]] == [RunStatus.RUNNING] * 2
    (tmp_path / "go").touch()
    wait_until(lambda: all(status_of(r).is_terminal for r in run_ids), what="the queue")
    assert {status_of(r) for r in run_ids} == {RunStatus.FINISHED}

    events = []
    for line in (tmp_path / "spans").read_text().splitlines():
        kind, _, stamp = line.split()
        events.append((float(stamp), 1 if kind == "start" else -1))
    running = peak = 0
    for _, step in sorted(events):
        running += step
        peak = max(peak, running)
    assert peak == 2
    assert len(events) == 10


def test_the_python_api_detaches_and_waits(home: Path, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", COUNT)
    submitted = reprorun.projects.run(
        str(project), parameters={"n": 2}, detach=True, synchronous=False
    )
    assert submitted.wait() is True
    assert submitted.get_status() is RunStatus.FINISHED
    assert submitted.logs() == b"line 1\nline 2\n"


def test_max_parallel_is_refused_for_a_cluster_backend(home: Path, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", COUNT)
    with pytest.raises(UserInputError, match="--max-parallel queues runs on this machine"):
        reprorun.projects.run(
            str(project),
            backend="slurm",
            max_parallel=2,
            synchronous=False,
        )
    assert open_store().search_runs(["0"]) == []


def test_a_bad_backend_option_is_named_before_any_run(home: Path, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", COUNT)
    config = tmp_path / "local.yaml"
    config.write_text("stop_grace_second: 3\n")
    done = reprorun_cli("run", str(project), "--backend-config", str(config))
    assert done.returncode != 0
    assert f"Backend config {config}: 'stop_grace_second' is not an option" in done.stderr
    assert "Did you mean 'stop_grace_seconds'?" in done.stderr
    config.write_text("stop_grace_seconds: soon\n")
    done = reprorun_cli("run", str(project), "--backend-config", str(config))
    assert "'stop_grace_seconds' of the local backend must be a number, got 'soon'" in done.stderr
    assert "Traceback" not in done.stderr
    assert open_store().search_runs(["0"]) == []


def test_detached_runs_with_a_tracking_server(home: Path, tmp_path: Path) -> None:
    """Detached runs recorded on a server: the log reaches it when the run ends, and a run
    whose supervisor was SIGKILLed reads as FAILED through the server's REST API too."""
    from tests.integration.server_proc import server_process

    project = make_project(tmp_path / "p", COUNT)
    with server_process(tmp_path / "server") as server:
        done = detach(project, "-P", "n=2", "--tracking-uri", server.url)
        store = open_store(server.url)
        wait_until(lambda: store.get_run(done).info.status.is_terminal, what="the run to end")
        assert store.get_run(done).info.status is RunStatus.FINISHED
        logs = reprorun_cli("runs", "logs", done, "--tracking-uri", server.url)
        assert logs.stdout == "line 1\nline 2\n"

        stale = detach(project, "-P", "n=300", "-P", "pause=0.1", "--tracking-uri", server.url)
        wait_until(
            lambda: "reprorun.backend.jobId" in store.get_run(stale).data.tags, what="the job"
        )
        tags = store.get_run(stale).data.tags
        os.kill(int(tags["reprorun.supervisor"].split(":")[1]), signal.SIGKILL)
        conn = server.connection()
        try:
            for _ in range(100):
                conn.request("GET", f"/api/2.0/mlflow/runs/get?run_id={stale}")
                got = json.loads(conn.getresponse().read())["run"]["info"]["status"]
                if got != "RUNNING":
                    break
                time.sleep(0.1)
        finally:
            conn.close()
        assert got == "FAILED"


MLFLOW_ENV = """entry_points:
  main:
    command: 'echo "tracking=$MLFLOW_TRACKING_URI run=$MLFLOW_RUN_ID"'
"""


def test_a_detached_run_on_a_server_gets_the_mlflow_variables(home: Path, tmp_path: Path) -> None:
    from tests.integration.server_proc import server_process

    project = make_project(tmp_path / "p", MLFLOW_ENV)
    with server_process(tmp_path / "server") as server:
        run_id = detach(project, "--tracking-uri", server.url)
        store = open_store(server.url)
        wait_until(lambda: store.get_run(run_id).info.status.is_terminal, what="the run")
        logs = reprorun_cli("runs", "logs", run_id, "--tracking-uri", server.url).stdout
    assert logs == f"tracking={server.url} run={run_id}\n"


def test_kill_stops_a_run_started_from_python_and_leaves_the_program(
    home: Path, tmp_path: Path
) -> None:
    """A Python program starts a run without waiting: `runs kill` from elsewhere stops the
    command's process group, not the program (which owns the run but handles no signal)."""
    project = make_project(tmp_path / "p", COUNT)
    submitted = reprorun.projects.run(
        str(project), parameters={"n": 300, "pause": 0.1}, synchronous=False, echo=False
    )
    wait_until(lambda: b"line 2" in submitted.logs(), what="output")
    killed = reprorun_cli("runs", "kill", submitted.run_id)
    assert killed.returncode == 0, killed.stderr
    assert submitted.wait() is False  # this test process is alive to see it end
    assert status_of(submitted.run_id) is RunStatus.KILLED


def test_kill_uses_the_runs_own_grace_period(home: Path, tmp_path: Path) -> None:
    """A command that ignores SIGTERM is SIGKILLed after the run's stop_grace_seconds (kept
    with the run), not the default 10 s."""
    project = make_project(
        tmp_path / "p",
        "entry_points:\n  main:\n    command: 'trap \"\" TERM; echo ready; while true; do sleep 0.1; done'\n",
    )
    config = tmp_path / "local.json"
    config.write_text(json.dumps({"stop_grace_seconds": 1}))
    run_id = detach(project, "--backend-config", str(config))
    wait_until(lambda: "ready" in reprorun_cli("runs", "logs", run_id).stdout, what="start")
    started = time.monotonic()
    killed = reprorun_cli("runs", "kill", run_id)
    assert killed.returncode == 0, killed.stderr
    assert time.monotonic() - started < 9  # far below the 10 s default grace
    assert status_of(run_id) is RunStatus.KILLED
