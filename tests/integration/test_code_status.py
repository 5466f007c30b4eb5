"""The status the run's code set is the status stored, and the one `reprorun run` reports:
code that ends its run FAILED or KILLED (a failed quality gate) and then exits 0, through
reprorun's API, MLflow's client or `reprorun runs end`, foreground and detached. Real
`reprorun run` processes on small projects, the real store."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from reprorun.tracking.entities import RunStatus, SystemTags
from reprorun.tracking.store import open_store
from tests.conftest import make_project, reprorun_cli

MLPROJECT = """\
name: gates
entry_points:
  api_failed:
    command: '"$REPRORUN_TEST_PYTHON" gate.py FAILED'
  api_failed_then_more:
    command: '"$REPRORUN_TEST_PYTHON" gate.py FAILED && sleep 1 && echo after the gate'
  api_killed:
    command: '"$REPRORUN_TEST_PYTHON" gate.py KILLED'
  block_raises:
    command: '"$REPRORUN_TEST_PYTHON" block.py'
  cli_failed:
    command: 'reprorun runs end "$REPRORUN_RUN_ID" --status FAILED && echo gate failed'
  cli_finished_then_fails:
    command: 'reprorun runs end "$REPRORUN_RUN_ID" --status FINISHED && exit 3'
  mlflow_failed:
    command: '"$MLFLOW_CLIENT_PYTHON" mlflow_gate.py'
  step_crashes:
    command: '"$REPRORUN_TEST_PYTHON" crash.py || echo "retried without it"'
"""

GATE = """\
import sys, reprorun
reprorun.log_metric("accuracy", 0.5)
reprorun.end_run(status=sys.argv[1])  # the quality gate failed
print("gate said", sys.argv[1])
"""

BLOCK = """\
import reprorun
try:
    with reprorun.start_run():
        reprorun.log_metric("accuracy", 0.5)
        raise RuntimeError("accuracy below the gate")
except RuntimeError as exc:
    print("caught:", exc)
"""

CRASH = """\
import reprorun
reprorun.log_metric("accuracy", 0.5)
raise RuntimeError("a step that crashes; the command goes on")
"""

MLFLOW_GATE = """\
import mlflow
mlflow.start_run()
mlflow.log_metric("accuracy", 0.5)
mlflow.end_run("FAILED")
print("gate failed")
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("REPRORUN_TEST_PYTHON", sys.executable)
    return make_project(
        tmp_path / "gates",
        MLPROJECT,
        {"gate.py": GATE, "block.py": BLOCK, "crash.py": CRASH, "mlflow_gate.py": MLFLOW_GATE},
    )


def run_id_in(stderr: str) -> str:
    for word in stderr.split():
        if len(word) == 32 and all(c in "0123456789abcdef" for c in word):
            return word
    raise AssertionError(f"no run id in:\n{stderr}")


def run_entry(project: Path, entry: str) -> tuple[int, str, str]:
    """`reprorun run` of ``entry``: its exit code, the run's id and its last stderr line."""
    result = reprorun_cli("run", str(project), "-e", entry, "--env-manager", "local")
    lines = result.stderr.strip().splitlines()
    return result.returncode, run_id_in(result.stderr), lines[-1] if lines else ""


def status_of(run_id: str) -> RunStatus:
    return open_store().get_run(run_id).info.status


@pytest.mark.parametrize("entry", ["api_failed", "block_raises", "cli_failed"])
def test_code_that_ends_its_run_failed_then_exits_0_fails_the_run(
    home: Path, project: Path, entry: str
) -> None:
    code, run_id, last = run_entry(project, entry)
    assert status_of(run_id) is RunStatus.FAILED
    assert code == 1, last
    assert f"run {run_id} FAILED" in last
    assert open_store().get_run(run_id).data.tags[SystemTags.EXIT_CODE] == "0"


def test_code_that_ends_its_run_killed_then_exits_0_is_killed(home: Path, project: Path) -> None:
    code, run_id, last = run_entry(project, "api_killed")
    assert status_of(run_id) is RunStatus.KILLED
    assert code == 128 + 15, last  # as a run stopped by `reprorun runs kill`
    assert f"run {run_id} KILLED" in last


def test_a_command_failing_after_its_code_finished_the_run_fails_it(
    home: Path, project: Path
) -> None:
    """The code's FINISHED does not hide a failure after it: the exit code decides."""
    code, run_id, last = run_entry(project, "cli_finished_then_fails")
    assert status_of(run_id) is RunStatus.FAILED
    assert code == 1 and f"run {run_id} FAILED" in last


@pytest.mark.slow
def test_mlflow_end_run_failed_fails_the_run(
    home: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.integration.mlflow_env import client_python

    monkeypatch.setenv("MLFLOW_CLIENT_PYTHON", str(client_python()))
    code, run_id, last = run_entry(project, "mlflow_failed")
    run = open_store().get_run(run_id)
    assert run.info.status is RunStatus.FAILED
    assert run.data.metrics["accuracy"] == 0.5
    assert code == 1 and f"run {run_id} FAILED" in last


@pytest.mark.parametrize("entry", ["api_failed", "block_raises"])
def test_a_detached_run_keeps_the_status_its_code_set(
    home: Path, project: Path, entry: str
) -> None:
    done = reprorun_cli("run", str(project), "-e", entry, "--env-manager", "local", "--detach")
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip()
    store = open_store()
    deadline = time.monotonic() + 60
    # The supervisor writes the exit code, then the end.
    while SystemTags.EXIT_CODE not in store.get_run(run_id).data.tags:
        assert time.monotonic() < deadline, "the detached run did not end"
        time.sleep(0.1)
    assert status_of(run_id) is RunStatus.FAILED
    status = reprorun_cli("runs", "status", run_id)
    assert status.returncode == 3, status.stdout + status.stderr
    assert os.environ.get("REPRORUN_RUN_ID") is None  # nothing leaked into the test process


def test_a_run_its_code_ended_is_followed_until_its_command_ends(home: Path, project: Path) -> None:
    """The code ended the run FAILED and goes on: `runs logs --follow` and `runs kill` still
    see a command that runs, and the end keeps the code's FAILED."""
    entry = "api_failed_then_more"
    done = reprorun_cli("run", str(project), "-e", entry, "--env-manager", "local", "--detach")
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip()
    followed = reprorun_cli("runs", "logs", "--follow", "--interval", "0.1", run_id)
    assert followed.stdout.splitlines()[-2:] == ["gate said FAILED", "after the gate"]
    assert f"run {run_id} FAILED" in followed.stderr
    assert status_of(run_id) is RunStatus.FAILED


def test_the_python_api_handle_answers_the_stored_status(home: Path, project: Path) -> None:
    import reprorun.projects

    submitted = reprorun.projects.run(
        str(project), entry_point="api_failed_then_more", synchronous=False, echo=False
    )
    assert submitted.get_status() is RunStatus.RUNNING  # the code has ended it; not the command
    assert submitted.wait() is False
    assert submitted.get_status() is RunStatus.FAILED


def test_end_run_refuses_a_status_that_is_not_an_end(home: Path) -> None:
    import reprorun
    from reprorun.errors import UserInputError

    with pytest.raises(UserInputError, match="FINISHED, FAILED or KILLED, got 'DONE'"):
        reprorun.end_run("DONE")


def test_a_crashing_step_of_a_command_that_succeeds_leaves_the_verdict_to_the_command(
    project: Path, home: Path
) -> None:
    """Only end_run and a `with` block are the code's verdict: a process that crashes inside
    a command that goes on and exits 0 does not fail the run (as MLflow's atexit hook)."""
    result = reprorun_cli("run", str(project), "-e", "step_crashes", "--env-manager", "local")
    assert result.returncode == 0, result.stderr
    assert "retried without it" in result.stdout
    run = open_store().get_run(run_id_in(result.stderr))
    assert run.info.status is RunStatus.FINISHED
    assert run.data.metrics["accuracy"] == 0.5
