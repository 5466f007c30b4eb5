"""Why a local run ended (issue 18), with real processes: exit 0, a crash, Ctrl-C, runs kill,
--timeout (synchronous, detached, queued), a command that cannot start, a supervisor that
vanished, and the kernel's OOM killer in a memory cgroup of the test's own; each shown by
reprorun run's last line, runs list, runs show and --json.

The OOM test needs a memory cgroup the test may create: cgroup v1's memory controller (this
CI machine: root, /sys/fs/cgroup/memory) or a cgroup v2 with the memory controller
delegated. ``systemd-run --user --scope -p MemoryMax=`` needs a user bus (there is none
here), and ``prlimit --as`` makes allocations fail (a MemoryError, the code's own
exception) instead of calling the OOM killer, so neither is used."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reprorun.tracking.entities import SystemTags
from tests.conftest import make_project, reprorun_cli

REPRORUN_RUN = (sys.executable, "-m", "reprorun", "run")
MLPROJECT = 'name: exits\nentry_points:\n  main:\n    command: "bash ok.sh"\n'
FILES = {
    "ok.sh": "echo fine\n",
    "crash.sh": "echo boom\nexit 3\n",
    "slow.sh": "echo started\nsleep 60\n",
    # Allocates until something stops it (the OOM killer in the test's memory cgroup).
    "hog.py": "chunks = []\nwhile True:\n    chunks.append(bytearray(8 * 2**20))\n",
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "p", MLPROJECT, FILES)


def _run(project: Path, entry: str, *options: str, timeout: float = 120) -> Any:
    return reprorun_cli(
        "run", str(project), "-e", entry, "--env-manager", "local", *options, timeout=timeout
    )


def _runs() -> list[dict[str, Any]]:
    listed = reprorun_cli("runs", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)  # type: ignore[no-any-return]


def _only_run() -> dict[str, Any]:
    runs = _runs()
    assert len(runs) == 1, runs
    return runs[0]


def _wait_ended(run_id: str, seconds: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = reprorun_cli("runs", "status", run_id, "--json")
        facts = json.loads(status.stdout)
        if facts["status"] not in ("RUNNING", "SCHEDULED"):
            return facts  # type: ignore[no-any-return]
        time.sleep(0.2)
    pytest.fail(f"run {run_id} did not end within {seconds} s")


def test_exit_0_and_a_crash_are_classified_and_shown(project: Path) -> None:
    ok = _run(project, "ok.sh")
    assert ok.returncode == 0, ok.stderr
    assert " FINISHED in " in ok.stderr
    crash = _run(project, "crash.sh")
    assert crash.returncode == 1
    assert " FAILED (code-error) in " in crash.stderr  # the run's last line says why

    crashed, finished = _runs()  # newest first
    assert (finished["exit_reason"], finished["exit_code"]) == ("succeeded", "0")
    assert (crashed["exit_reason"], crashed["exit_code"]) == ("code-error", "3")
    assert crashed["exit_signal"] is None and crashed["info"]["status"] == "FAILED"

    table = reprorun_cli("runs", "list").stdout.splitlines()
    assert table[0].split()[:3] == ["RUN", "ID", "NAME"]
    rows = {line.split()[0]: line for line in table[1:]}
    assert "FAILED (code-error)" in rows[crashed["info"]["run_id"]]
    assert "FINISHED " in rows[finished["info"]["run_id"]]
    assert "(succeeded)" not in rows[finished["info"]["run_id"]]  # FINISHED says it all

    run_id = crashed["info"]["run_id"]
    shown = reprorun_cli("runs", "show", run_id, "--log-lines", "0").stdout
    assert "  status       FAILED (code-error)\n" in shown
    assert "  ended        code-error: exit code 3\n" in shown
    as_json = json.loads(reprorun_cli("runs", "show", run_id, "--json").stdout)
    assert (as_json["exit_reason"], as_json["exit_code"]) == ("code-error", "3")
    status = json.loads(reprorun_cli("runs", "status", run_id, "--json").stdout)
    assert (status["exit_reason"], status["exit_code"]) == ("code-error", "3")


def test_timeout_stops_the_command_and_says_so(project: Path) -> None:
    started = time.monotonic()
    done = _run(project, "slow.sh", "--timeout", "1s")
    assert time.monotonic() - started < 30  # not the command's 60 s
    assert done.returncode == 1
    assert " FAILED (timeout) in " in done.stderr
    run = _only_run()
    assert (run["exit_reason"], run["exit_signal"]) == ("timeout", "SIGTERM")
    assert run["exit_detail"] == "stopped by --timeout after 1 s"
    assert "FAILED (timeout)" in reprorun_cli("runs", "list").stdout


def test_a_bad_timeout_is_a_usage_error(project: Path) -> None:
    done = _run(project, "ok.sh", "--timeout", "soon")
    assert done.returncode == 2
    assert "Invalid value for --timeout: Not a duration: 'soon'" in done.stderr
    assert _runs() == []


def test_a_queued_run_times_out_from_its_start(project: Path) -> None:
    done = _run(project, "slow.sh", "--max-parallel", "1", "--timeout", "1s")
    assert done.returncode == 1 and " FAILED (timeout) in " in done.stderr
    assert _only_run()["exit_reason"] == "timeout"


def test_a_detached_run_times_out_and_one_killed_is_cancelled(project: Path) -> None:
    timed = _run(project, "slow.sh", "--detach", "--timeout", "1s")
    assert timed.returncode == 0, timed.stderr
    facts = _wait_ended(timed.stdout.strip())
    assert (facts["status"], facts["exit_reason"]) == ("FAILED", "timeout")

    long = _run(project, "slow.sh", "--detach")
    run_id = long.stdout.strip()
    killed = reprorun_cli("runs", "kill", run_id)
    assert killed.returncode == 0, killed.stderr
    facts = _wait_ended(run_id)
    assert (facts["status"], facts["exit_reason"]) == ("KILLED", "cancelled")


def test_ctrl_c_cancels_the_run(project: Path) -> None:
    proc = subprocess.Popen(
        [*REPRORUN_RUN, str(project), "-e", "slow.sh", "--env-manager", "local"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"started\n"  # the command runs
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signal.SIGINT
    assert " KILLED (signal 2) in " in err.decode()
    run = _only_run()
    assert (run["info"]["status"], run["exit_reason"]) == ("KILLED", "cancelled")


def test_a_command_that_cannot_start_is_a_launch_error(project: Path, tmp_path: Path) -> None:
    # No bash on PATH: the run exists, its command cannot start.
    env = {**os.environ, "PATH": str(tmp_path / "empty")}
    done = reprorun_cli(
        "run", str(project), "-e", "ok.sh", "--env-manager", "local", env=env
    )  # fmt: skip
    assert done.returncode == 1
    assert " FAILED (launch-error) in " in done.stderr
    run = _only_run()
    assert run["exit_reason"] == "launch-error"
    assert run["exit_code"] is None  # nothing ran
    assert "Could not start the command" in run["exit_detail"]


def test_a_run_whose_supervisor_vanished_is_node_lost(project: Path) -> None:
    started = _run(project, "slow.sh", "--detach")
    run_id = started.stdout.strip()
    tags = json.loads(reprorun_cli("runs", "show", run_id, "--json").stdout)["data"]["tags"]
    supervisor = int(tags[SystemTags.SUPERVISOR].split(":")[1])
    os.kill(supervisor, signal.SIGKILL)  # neither a cancel nor the command's own failure
    deadline = time.monotonic() + 10
    while Path(f"/proc/{supervisor}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    facts = _wait_ended(run_id)
    assert (facts["status"], facts["exit_reason"]) == ("FAILED", "node-lost")
    assert "ended without ending the run" in facts["exit_detail"]


@contextlib.contextmanager
def memory_cgroup(name: str, limit_bytes: int) -> Iterator[Path]:
    """A memory cgroup of the test's own, under this process's, limited to ``limit_bytes``:
    cgroup v1's memory controller, else a cgroup v2 with memory delegated to it."""
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    entries = [line.split(":", 2) for line in lines]
    folder = None
    for _, controllers, path in entries:
        v1 = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
        if "memory" in controllers.split(",") and (v1 / "memory.limit_in_bytes").exists():
            folder = v1 / name
            folder.mkdir()
            (folder / "memory.limit_in_bytes").write_text(str(limit_bytes))
            break
    else:
        for _, controllers, path in entries:
            v2 = Path("/sys/fs/cgroup") / path.lstrip("/")
            if controllers == "" and "memory" in (v2 / "cgroup.subtree_control").read_text():
                folder = v2 / name
                folder.mkdir()
                (folder / "memory.max").write_text(str(limit_bytes))
                (folder / "memory.swap.max").write_text("0")
                break
    if folder is None:
        pytest.fail(
            "No memory cgroup can be made here (neither cgroup v1's memory controller nor a "
            "cgroup v2 with memory delegated): the OOM killer cannot be called on one command."
        )
    try:
        yield folder
    finally:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                folder.rmdir()
                break
            except OSError:  # its last process is still being reaped
                time.sleep(0.1)


def test_the_oom_killer_is_recognised(project: Path) -> None:
    """The command moves itself into a 64 MiB memory cgroup and allocates: the kernel's OOM
    killer kills it (SIGKILL), and the kernel log names it."""
    with memory_cgroup(f"reprorun-test-{os.getpid()}", 64 * 2**20) as cgroup:
        (project / "oom.sh").write_text(
            f"echo $$ > {cgroup}/cgroup.procs\nexec {sys.executable} hog.py\n"
        )
        done = _run(project, "oom.sh")
    assert done.returncode == 1
    assert " FAILED (out-of-memory) in " in done.stderr
    run = _only_run()
    assert (run["exit_reason"], run["exit_signal"]) == ("out-of-memory", "SIGKILL")
    assert "the kernel's OOM killer killed process" in run["exit_detail"]
    assert "FAILED (out-of-memory)" in reprorun_cli("runs", "list").stdout


def test_oom_in_the_runs_own_cgroup_is_read_from_its_counter(project: Path) -> None:
    """reprorun itself runs in a memory-limited cgroup (a job's limit): the command, the
    biggest process in it, is the OOM killer's victim, and the cgroup's oom_kill counter
    says so."""
    with memory_cgroup(f"reprorun-test-{os.getpid()}", 512 * 2**20) as cgroup:
        procs = cgroup / "cgroup.procs"
        done = subprocess.run(
            [*REPRORUN_RUN, str(project), "-e", "hog.py", "--env-manager", "local"],
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=lambda: procs.write_text(str(os.getpid())),
        )
    assert done.returncode == 1, done.stderr
    assert " FAILED (out-of-memory) in " in done.stderr
    run = _only_run()
    assert run["exit_reason"] == "out-of-memory"
    assert "oom_kill 0 -> 1" in run["exit_detail"]
