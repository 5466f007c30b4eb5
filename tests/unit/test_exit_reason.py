"""Why a run ended (issue 18): the classification every backend shares, its evidence readers,
the journal's agreement with the status that stands, and --timeout's durations."""

from __future__ import annotations

from pathlib import Path

import pytest

from reprorun.app import Reprorun
from reprorun.backends import exit_reason, journal
from reprorun.backends.exit_reason import Exit, OomWatch, classify, label, settle
from reprorun.errors import UserInputError
from reprorun.projects.request import RunRequest, parse_duration
from reprorun.tracking.entities import ExitReason, RunStatus, SystemTags, now_ms


@pytest.mark.parametrize(
    ("returncode", "flags", "reason", "signal", "status"),
    [
        (0, {}, ExitReason.SUCCEEDED, None, RunStatus.FINISHED),
        (3, {}, ExitReason.CODE_ERROR, None, RunStatus.FAILED),
        (-11, {}, ExitReason.CODE_ERROR, "SIGSEGV", RunStatus.FAILED),
        (-9, {}, ExitReason.CODE_ERROR, "SIGKILL", RunStatus.FAILED),  # no OOM evidence
        (-9, {"oom": "the OOM killer"}, ExitReason.OUT_OF_MEMORY, "SIGKILL", RunStatus.FAILED),
        (-15, {"cancelled": True}, ExitReason.CANCELLED, "SIGTERM", RunStatus.KILLED),
        (-15, {"timed_out": True}, ExitReason.TIMEOUT, "SIGTERM", RunStatus.FAILED),
        (-15, {"timed_out": True, "cancelled": True}, ExitReason.TIMEOUT, "SIGTERM", None),
        (None, {}, ExitReason.CODE_ERROR, None, RunStatus.FAILED),
    ],
)
def test_classify(
    returncode: int | None,
    flags: dict[str, object],
    reason: ExitReason,
    signal: str | None,
    status: RunStatus | None,
) -> None:
    ended = classify(returncode, **flags)  # type: ignore[arg-type]
    assert (ended.reason, ended.signal, ended.code) == (reason, signal, returncode)
    if status is not None:
        assert ended.status is status
    tags = ended.tags()
    assert tags[SystemTags.EXIT_REASON] == reason.value
    assert (SystemTags.EXIT_CODE in tags) is (returncode is not None)
    assert tags.get(SystemTags.EXIT_SIGNAL) == signal


def test_oom_evidence_becomes_the_detail() -> None:
    ended = classify(-9, oom="the kernel's OOM killer killed process 12 (python)")
    assert (
        ended.tags()[SystemTags.EXIT_DETAIL] == "the kernel's OOM killer killed process 12 (python)"
    )


def test_launch_errors_and_interrupted_launches() -> None:
    from reprorun.errors import ExecutionError, RunInterrupted

    failed = exit_reason.launch_error(ExecutionError("Could not start the command"))
    assert failed.reason is ExitReason.LAUNCH_ERROR and failed.status is RunStatus.FAILED
    assert "Could not start the command" in (failed.detail or "")
    stopped = exit_reason.launch_error(RunInterrupted(2, "abc"))
    assert stopped.reason is ExitReason.CANCELLED and stopped.status is RunStatus.KILLED


def test_label_shows_the_reason_where_it_says_more() -> None:
    def tags(reason: str) -> dict[str, str]:
        return {SystemTags.EXIT_REASON: reason}

    assert label(RunStatus.FAILED, tags("out-of-memory")) == "FAILED (out-of-memory)"
    assert label(RunStatus.FAILED, tags("timeout")) == "FAILED (timeout)"
    assert label(RunStatus.FINISHED, tags("succeeded")) == "FINISHED"
    assert label(RunStatus.KILLED, tags("cancelled")) == "KILLED"
    assert label(RunStatus.FAILED, {}) == "FAILED"  # a run ended before issue 18
    assert label("RUNNING", tags("nonsense")) == "RUNNING"


def test_settle_agrees_with_the_status_that_stands() -> None:
    ok = Exit(ExitReason.SUCCEEDED, 0)
    assert settle(ok, RunStatus.FINISHED) == ok
    code_failed = settle(ok, RunStatus.FAILED)  # the code's end_run("FAILED"), then exit 0
    assert (code_failed.reason, code_failed.code) == (ExitReason.CODE_ERROR, 0)
    assert settle(ok, RunStatus.KILLED).reason is ExitReason.CANCELLED
    oom = Exit(ExitReason.OUT_OF_MEMORY, -9, "SIGKILL", "OOM")
    assert settle(oom, RunStatus.FAILED) == oom  # a more precise failure is kept


def test_the_journal_keeps_the_reason_in_step_with_the_status(app: Reprorun) -> None:
    store = app.store
    exp = store.get_or_create_experiment("e")

    def ended_by_code(status: RunStatus, tags: dict[str, str] | None = None) -> str:
        run_id = store.create_run(exp, tags=tags or {}).info.run_id
        store.update_run(run_id, status=status, end_time=now_ms())
        return run_id

    def end(run_id: str, ended: Exit) -> dict[str, str]:
        journal.apply(store, journal.Ending(run_id, ended.status, now_ms(), ended.tags(), "owner"))
        return store.get_run(run_id).data.tags

    # The code ended its run FAILED, then the command exited 0: a code error.
    tags = end(ended_by_code(RunStatus.FAILED), classify(0))
    assert (tags[SystemTags.EXIT_REASON], tags[SystemTags.EXIT_CODE]) == ("code-error", "0")
    # runs kill recorded cancelled first: the command's SIGTERM does not replace it.
    killed = ended_by_code(RunStatus.KILLED, {SystemTags.EXIT_REASON: "cancelled"})
    tags = end(killed, classify(-15))
    assert (tags[SystemTags.EXIT_REASON], tags[SystemTags.EXIT_SIGNAL]) == ("cancelled", "SIGTERM")
    # A failure after the code ended its run FINISHED fails the run, and says why.
    tags = end(ended_by_code(RunStatus.FINISHED), classify(-9, oom="OOM"))
    assert tags[SystemTags.EXIT_REASON] == "out-of-memory"


def test_kernel_log_names_the_oom_killers_victim(monkeypatch: pytest.MonkeyPatch) -> None:
    records = [
        (90.0, "Out of memory: Killed process 4242 (python3) total-vm:60688kB"),  # before
        (
            100.5,
            "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
            "oom_memcg=/jobs/run1,task_memcg=/jobs/run1/inner,task=python3,pid=777,uid=0",
        ),
        (100.6, "Memory cgroup out of memory: Killed process 777 (python3) total-vm:1kB"),
    ]
    monkeypatch.setattr(exit_reason, "_kernel_log", lambda: records)
    found = exit_reason.kernel_log_oom(777, 100.0, [])
    assert found == "the kernel's OOM killer killed process 777 (python3)"
    assert exit_reason.kernel_log_oom(4242, 100.0, []) is None  # before the run started
    by_cgroup = exit_reason.kernel_log_oom(1, 100.0, ["/jobs/run1"])  # a child of the command
    assert by_cgroup is not None and "/jobs/run1/inner" in by_cgroup
    assert exit_reason.kernel_log_oom(1, 100.0, ["/"]) is None  # the root holds everything
    assert exit_reason.kernel_log_oom(1, 100.0, ["/jobs/run10"]) is None


def test_the_memory_cgroups_oom_kill_counter(tmp_path: Path) -> None:
    """cgroup v1's memory.oom_control and v2's memory.events both count OOM kills."""
    v1 = tmp_path / "memory.oom_control"
    v1.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    v2 = tmp_path / "memory.events"
    v2.write_text("low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n")
    assert exit_reason._oom_kills(v1) == 2
    assert exit_reason._oom_kills(v2) == 1
    assert exit_reason._oom_kills(tmp_path / "missing") is None

    watch = OomWatch(999_999_999)  # no such process: no cgroup, nothing read
    watch.counts = {v2: 1}
    assert watch.evidence(0) is None and watch.evidence(1) is None  # only a SIGKILL can be
    v2.write_text("oom 2\noom_kill 2\n")
    found = watch.evidence(-9)
    assert found is not None and "oom_kill 1 -> 2" in found
    assert watch.evidence(137) is not None  # a shell's report of its child's SIGKILL


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10m", 600), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("45", 45),
     ("0.5s", 0.5), (" 2H ", 7200)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "0s", "-5s", "10x", "1h30", "m"])
def test_bad_durations_say_what_a_duration_is(text: str) -> None:
    with pytest.raises(UserInputError, match=r"Not a duration: .* e\.g\. 90s, 10m, 2h"):
        parse_duration(text)


def test_a_request_refuses_a_timeout_that_is_not_positive() -> None:
    with pytest.raises(UserInputError, match="positive duration"):
        RunRequest(".", timeout=0).check()
    assert RunRequest.from_json(RunRequest(".", timeout=1.5).to_json()).timeout == 1.5
