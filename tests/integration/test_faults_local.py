"""Real faults under a local run: a full disk or a read-only folder under the run's log, a
store that refuses the end of the run, `reprorun run` killed with SIGKILL. Tests run as root
(CI): small tmpfs mounts give a real ENOSPC and EROFS, and are unmounted after."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reprorun._utils import owner_is_gone
from reprorun.backends.base import LaunchSpec
from reprorun.backends.local import LocalBackend
from reprorun.tracking.entities import RunStatus, SystemTags
from reprorun.tracking.store import close_stores, open_store
from tests.conftest import make_project, reprorun_cli, tmpfs

# A program that prints 4 MiB (65536 numbered lines of 64 bytes): far more than a pipe holds.
BIG_PY = "import sys\nfor i in range(65536):\n    sys.stdout.write('%063d\\n' % i)\n"
BIG_OUTPUT_BYTES = 65536 * 64
LOG_ERROR_TAG = "reprorun.logError"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB file system of its own."""
    with tmpfs(tmp_path / "small", "256k") as folder:
        yield folder


def _run_cli(*args: str, env: dict[str, str], timeout: float = 90) -> tuple[int, bytes, str]:
    """`reprorun run ...` bounded in time: a hang is a failure, and leaves nothing running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "reprorun", "run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"reprorun run did not end within {timeout} s")
    return proc.returncode, out, err.decode(errors="replace")


def _expected_output() -> bytes:
    return b"".join(f"{i:063d}\n".encode() for i in range(65536))


@pytest.mark.slow
def test_a_full_disk_under_the_log_loses_nothing_on_the_terminal(
    home: Path, tmp_path: Path, small_disk: Path
) -> None:
    project = make_project(
        tmp_path / "p",
        "entry_points:\n  main:\n    command: 'python big.py; exit 3'\n",
        {"big.py": BIG_PY},
    )
    env = {**os.environ, "REPRORUN_ARTIFACT_ROOT": str(small_disk)}
    code, out, err = _run_cli(str(project), env=env)

    # The terminal got every byte, in order; the run ended with its command's status.
    assert hashlib.sha256(out).hexdigest() == hashlib.sha256(_expected_output()).hexdigest()
    assert code == 1, err
    assert "cannot write the run's log" in err and "No space left on device" in err
    assert "Traceback" not in err
    runs = json.loads(reprorun_cli("runs", "list", "--json").stdout)
    assert len(runs) == 1
    run = runs[0]
    assert run["info"]["status"] == "FAILED"
    tags = run["data"]["tags"]
    assert tags[SystemTags.EXIT_CODE] == "3"
    assert "No space left on device (ENOSPC)" in tags[LOG_ERROR_TAG]
    # The log kept a true prefix, and the tag says how much of the output it lacks.
    log = next(small_disk.rglob("run.log")).read_bytes()
    assert 0 < len(log) < BIG_OUTPUT_BYTES and _expected_output().startswith(log)
    assert f"first {len(log)} bytes" in tags[LOG_ERROR_TAG]
    assert f"{BIG_OUTPUT_BYTES - len(log)} bytes after them were not stored" in tags[LOG_ERROR_TAG]


def test_a_read_only_log_folder_still_runs_and_echoes_the_command(
    home: Path, tmp_path: Path
) -> None:
    """The log cannot even be opened (EROFS): the command runs, its output reaches the
    terminal, the run ends with its status and says why it has no log."""
    artifacts = tmp_path / "artifacts"
    with tmpfs(artifacts, "1m"):
        (artifacts / "logs").mkdir()
        (tmp_path / "big.py").write_text(BIG_PY)
        subprocess.run(["mount", "-o", "remount,ro", str(artifacts)], check=True)
        store = open_store(str(tmp_path / "store.db"))
        run = store.create_run(store.get_or_create_experiment("x"), run_name="ro")
        echoed: list[bytes] = []
        spec = LaunchSpec(
            run_id=run.info.run_id,
            command="python big.py",
            cwd=tmp_path,
            env=dict(os.environ),
            store=store,
            artifact_dir=artifacts,
            echo=echoed.append,
        )
        submitted = LocalBackend().submit(spec)
        assert submitted.wait() is True
    assert b"".join(echoed) == _expected_output()
    ended = store.get_run(run.info.run_id)
    assert ended.info.status is RunStatus.FINISHED
    assert ended.data.tags[SystemTags.EXIT_CODE] == "0"
    assert "Read-only file system (EROFS)" in ended.data.tags[LOG_ERROR_TAG]
    assert f"{BIG_OUTPUT_BYTES} bytes after them" in ended.data.tags[LOG_ERROR_TAG]


@pytest.mark.slow
@pytest.mark.parametrize("exit_code", [0, 3])
def test_a_store_that_refuses_the_end_is_said_and_the_next_reader_records_the_true_end(
    home: Path, tmp_path: Path, exit_code: int
) -> None:
    """The command fills the disk holding the store, then exits: `reprorun run` cannot
    record the end, says so and exits 1, and keeps the end in the journal; once the disk has
    room again, the next reader records the command's true status and exit code, not a
    supervisor killed by the OOM killer."""
    disk = tmp_path / "db"
    with tmpfs(disk, "2m"):
        store_uri = str(disk / "store.db")
        open_store(store_uri)  # created while there is room
        fill = disk / "fill"
        project = make_project(
            tmp_path / "p",
            "entry_points:\n  main:\n    command: "
            f"'echo working; dd if=/dev/zero of={fill} bs=64k 2>/dev/null; exit {exit_code}'\n",
        )
        env = {
            **os.environ,
            "REPRORUN_END_RETRY_SECONDS": "1",
            "REPRORUN_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        }
        id_file = tmp_path / "run-id"
        code, out, err = _run_cli(
            "--tracking-uri", store_uri, "--run-id-file", str(id_file), str(project), env=env
        )
        assert code == 1, err
        run_id = id_file.read_text().strip()
        assert out == b"working\n"
        status = "FINISHED" if exit_code == 0 else "FAILED"
        assert f"run {run_id} {status} (exit code {exit_code})" in err
        assert "NOT RECORDED" in err and store_uri in err and "Traceback" not in err
        record = home / "journal" / f"{run_id}.json"
        assert str(record) in err
        assert json.loads(record.read_text())["status"] == status

        # Still full: the reader cannot record it either, and leaves the run (and record) be.
        still = reprorun_cli("runs", "status", run_id, "--tracking-uri", store_uri, "--json")
        assert json.loads(still.stdout)["status"] == "RUNNING", still.stderr
        assert record.exists()

        fill.unlink()
        shown = reprorun_cli("runs", "status", run_id, "--tracking-uri", store_uri, "--json")
        facts = json.loads(shown.stdout)
        assert facts["status"] == status, shown.stderr
        assert facts["exit_code"] == str(exit_code)
        assert facts["reason"] is None  # not "killed ... by the out-of-memory killer"
        assert not record.exists()


def _group(pgid: int) -> list[int]:
    """The live processes of process group ``pgid`` (from /proc; zombies are not alive)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            members.append(int(entry.name))
    return members


def _group_once_signalled(pgid: int, seconds: float = 5.0) -> list[int]:
    """``_group`` once a SIGKILL sent to it has had time to land (delivery is asynchronous)."""
    deadline = time.monotonic() + seconds
    while (members := _group(pgid)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return members


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    ['bash -c "echo start; sleep 25 & sleep 30"', "echo start; sleep 25; echo never"],
    ids=["background", "sequence"],
)
def test_the_next_reader_stops_what_a_killed_reprorun_left_running(
    home: Path, tmp_path: Path, command: str
) -> None:
    project = make_project(
        tmp_path / "p", f"entry_points:\n  main:\n    command: {json.dumps(command)}\n"
    )
    id_file = tmp_path / "run-id"
    proc = subprocess.Popen(
        [sys.executable, "-m", "reprorun", "run", "--run-id-file", str(id_file), str(project)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)  # bounded: a hang fails the test
        assert ready, "reprorun run printed nothing in 60 s"
        assert proc.stdout.readline() == b"start\n"  # the command runs
        deadline = time.monotonic() + 30
        while not id_file.exists() or not id_file.read_text().strip():
            assert time.monotonic() < deadline, "reprorun run never wrote the run id"
            time.sleep(0.05)
        run_id = id_file.read_text().strip()
        tags = open_store().get_run(run_id).data.tags
        group = int(tags["reprorun.local.process"].split(":")[1])
        assert _group(group)
        proc.kill()  # reprorun run gets SIGKILL: it records nothing, stops nothing
        proc.wait(timeout=10)
    finally:
        close_stores()
        proc.kill()
        proc.communicate()
    status = reprorun_cli("runs", "status", run_id, "--json")
    assert json.loads(status.stdout)["status"] == "FAILED", status.stderr
    assert _group_once_signalled(group) == []


@pytest.mark.parametrize("ours", [True, False], ids=["the run's group", "a recycled pid"])
def test_a_reader_signals_a_leftover_group_only_when_it_is_the_runs(
    home: Path, tmp_path: Path, ours: bool
) -> None:
    """The command's first process is gone; its group still has a process. The reader kills
    it when it carries the run's REPRORUN_RUN_ID, and leaves it alone otherwise (the
    recorded pid may since have been reused by another group)."""
    from reprorun._utils import process_identity
    from reprorun.backends.status import refresh

    store = open_store()
    run = store.create_run(store.get_or_create_experiment("x"), run_name="stale")
    run_id = run.info.run_id
    owner = subprocess.Popen(["sleep", "60"])
    owner_identity = process_identity(owner.pid)
    owner.kill()
    owner.wait()
    env = {**os.environ, "REPRORUN_RUN_ID": run_id if ours else "another-run"}
    leader = subprocess.Popen(
        ["bash", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"],
        stdout=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        out, _ = leader.communicate(timeout=10)  # the leader is gone, its child stays
        left = int(out)
        store.set_tags(
            run_id,
            {
                SystemTags.SUPERVISOR: owner_identity,
                "reprorun.local.process": f"{process_identity(os.getpid()).split(':')[0]}:"
                f"{leader.pid}:1",
            },
        )
        assert _group(leader.pid) == [left]
        assert refresh(store, store.get_run(run_id)).info.status is RunStatus.FAILED
        if ours:
            assert _group_once_signalled(leader.pid) == []
        else:
            assert _group(leader.pid) == [left]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader.pid, signal.SIGKILL)
        close_stores()


@pytest.mark.slow
def test_a_detached_run_whose_end_the_store_refused_is_recorded_by_the_next_reader(
    home: Path, tmp_path: Path
) -> None:
    disk = tmp_path / "db"
    with tmpfs(disk, "2m"):
        store_uri = str(disk / "store.db")
        open_store(store_uri)
        fill = disk / "fill"
        project = make_project(
            tmp_path / "p",
            "entry_points:\n  main:\n    command: "
            f"'dd if=/dev/zero of={fill} bs=64k 2>/dev/null; exit 0'\n",
        )
        env = {
            **os.environ,
            "REPRORUN_END_RETRY_SECONDS": "1",
            "REPRORUN_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        }
        code, out, err = _run_cli("--detach", "--tracking-uri", store_uri, str(project), env=env)
        assert code == 0, err
        run_id = out.decode().strip()
        record = home / "journal" / f"{run_id}.json"
        deadline = time.monotonic() + 60
        while not record.exists():  # the supervisor retries, then keeps the end there
            assert time.monotonic() < deadline, "the supervisor kept no record of the end"
            time.sleep(0.1)
        supervisor = open_store(store_uri).get_run(run_id).data.tags[SystemTags.SUPERVISOR]
        while (gone := owner_is_gone(supervisor)) is False:
            assert time.monotonic() < deadline, "the supervisor did not exit"
            time.sleep(0.1)
        assert gone is True
        fill.unlink()
        shown = reprorun_cli("runs", "status", run_id, "--tracking-uri", store_uri, "--json")
        facts = json.loads(shown.stdout)
        assert (facts["status"], facts["exit_code"], facts["reason"]) == ("FINISHED", "0", None)
        assert not record.exists()


def test_a_full_disk_under_the_supervisors_folder_is_a_clear_error(
    home: Path, tmp_path: Path
) -> None:
    folder = home / "supervisors"
    with tmpfs(folder, "64k"):
        subprocess.run(
            ["dd", "if=/dev/zero", f"of={folder / 'fill'}", "bs=4k"], capture_output=True
        )
        project = make_project(tmp_path / "p", "entry_points:\n  main:\n    command: 'true'\n")
        code, _, err = _run_cli("--detach", str(project), env=dict(os.environ))
    assert code == 1, err
    assert "Cannot write the run's supervisor file" in err and "No space left on device" in err
    assert "Traceback" not in err
    listing = json.loads(reprorun_cli("runs", "list", "--json").stdout)
    assert [r["info"]["status"] for r in listing] == ["FAILED"]
