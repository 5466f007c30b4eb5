"""RemoteJob: the run in the store follows the engine's job, whoever asks first."""

from __future__ import annotations

from pathlib import Path

import pytest

from reprorun.backends.base import FAILURE_TAG
from reprorun.backends.job import JobState, RemoteJob
from reprorun.errors import ExecutionError
from reprorun.tracking.entities import ExitReason, RunStatus, SystemTags
from reprorun.tracking.store import open_store
from reprorun.tracking.store.base import TrackingStore
from tests.heard import Heard


class FakeJob(RemoteJob):
    """An engine whose job state the test sets."""

    poll_seconds = 0.01
    stop_timeout_seconds = 0.2
    backend = "fake"

    def __init__(self, store: TrackingStore, run_id: str, artifact_uri: str):
        super().__init__(run_id, "job-7", store, artifact_uri)
        self.state = JobState(RunStatus.SCHEDULED)
        self.output = b"hello\n"
        self.stopped = 0
        self.stop_ends_it = True

    def _state(self) -> JobState:
        return self.state

    def _read_log(self) -> bytes:
        if self.output is None:
            raise ExecutionError("engine gone")
        return self.output

    def _stop(self) -> None:
        self.stopped += 1
        if self.stop_ends_it:
            self.state = JobState(RunStatus.KILLED, "stopped by the engine")


def new_job(home: Path) -> tuple[FakeJob, TrackingStore]:
    store = open_store()
    run = store.create_run("0", run_name="r")
    store.update_run(run.info.run_id, status=RunStatus.SCHEDULED)
    return FakeJob(store, run.info.run_id, run.info.artifact_uri), store


def log_of(store: TrackingStore, job: FakeJob) -> str:
    from reprorun.tracking.artifacts import local_dir

    uri = store.get_run(job.run_id).info.artifact_uri
    return (local_dir(uri) / "logs" / "run.log").read_text()


def test_the_store_follows_the_job_to_its_end(home: Path) -> None:
    job, store = new_job(home)
    assert job.get_status() is RunStatus.SCHEDULED
    job.state = JobState(RunStatus.RUNNING)
    assert job.get_status() is RunStatus.RUNNING
    assert store.get_run(job.run_id).info.status is RunStatus.RUNNING
    job.output = b"hello\nbye\n"
    job.state = JobState(RunStatus.FINISHED, exit_code=0)
    assert job.wait() is True
    run = store.get_run(job.run_id)
    assert run.info.status is RunStatus.FINISHED and run.info.end_time
    assert run.data.tags["reprorun.exitCode"] == "0"
    assert FAILURE_TAG not in run.data.tags
    assert log_of(store, job) == "hello\nbye\n"
    assert job.logs() == b"hello\nbye\n"


def test_a_failed_job_keeps_the_engines_reason(home: Path) -> None:
    job, store = new_job(home)
    job.state = JobState(RunStatus.FAILED, "NODE_FAIL on node-3", exit_code=1)
    assert job.get_status() is RunStatus.FAILED
    tags = store.get_run(job.run_id).data.tags
    assert tags[FAILURE_TAG] == "NODE_FAIL on node-3"


def test_a_log_that_cannot_be_read_is_said_in_the_log(home: Path) -> None:
    job, store = new_job(home)
    job.output = None  # type: ignore[assignment]
    job.state = JobState(RunStatus.FAILED, "lost")
    job.get_status()
    assert "the job's log could not be read: engine gone" in log_of(store, job)


def test_cancel_stops_the_job_and_marks_it_killed(home: Path) -> None:
    job, store = new_job(home)
    job.state = JobState(RunStatus.RUNNING)
    job.cancel()
    assert job.stopped == 1
    assert store.get_run(job.run_id).info.status is RunStatus.KILLED
    job.cancel()  # ended: nothing more is asked of the engine
    assert job.stopped == 1


def test_a_job_that_does_not_stop_in_time_is_still_marked_killed(home: Path) -> None:
    job, store = new_job(home)
    job.state = JobState(RunStatus.RUNNING)
    job.stop_ends_it = False
    job.cancel()
    run = store.get_run(job.run_id)
    assert run.info.status is RunStatus.KILLED
    assert "it had not ended yet" in run.data.tags[FAILURE_TAG]


def test_a_run_ended_by_its_code_is_not_overridden(home: Path) -> None:
    """The user's code ended the run FAILED (mlflow.end_run); the job then exits 0."""
    job, store = new_job(home)
    store.update_run(job.run_id, status=RunStatus.FAILED, end_time=1)
    job.state = JobState(RunStatus.FINISHED)
    assert job.get_status() is RunStatus.FAILED


def test_a_job_is_followed_past_the_end_its_code_gave_the_run(home: Path) -> None:
    """`with mlflow.start_run():` ends the run FINISHED, then the job's next step fails: the
    failure, the exit code and the whole log still reach the run."""
    job, store = new_job(home)
    job.state = JobState(RunStatus.RUNNING)
    job.get_status()
    store.update_run(job.run_id, status=RunStatus.FINISHED, end_time=1)  # the user's code
    assert job.get_status() is RunStatus.RUNNING  # the job goes on
    job.output = b"trained\nevaluation failed\n"
    job.state = JobState(RunStatus.FAILED, "step 2 failed", exit_code=1)
    assert job.wait() is False
    run = store.get_run(job.run_id)
    assert run.info.status is RunStatus.FAILED
    assert run.data.tags["reprorun.exitCode"] == "1"
    assert log_of(store, job) == "trained\nevaluation failed\n"


def test_a_run_its_code_finished_keeps_the_jobs_log(home: Path) -> None:
    job, store = new_job(home)
    store.update_run(job.run_id, status=RunStatus.FINISHED, end_time=1)
    job.state = JobState(RunStatus.FINISHED, exit_code=0)
    assert job.get_status() is RunStatus.FINISHED
    assert log_of(store, job) == "hello\n"
    assert store.get_run(job.run_id).data.tags["reprorun.backend.jobEnded"] == "true"


def test_logs_from_an_offset(home: Path) -> None:
    job, _ = new_job(home)
    job.output = b"0123456789"
    assert job.logs(4) == b"456789"


def test_a_job_stopped_from_another_process_is_killed_not_lost(home: Path) -> None:
    """`runs kill` elsewhere deletes the job; this handle's next poll finds it gone: KILLED,
    and the log stored by the killer is not replaced by the now empty one."""
    job, store = new_job(home)
    job.state = JobState(RunStatus.RUNNING)
    job.get_status()
    other = FakeJob(store, job.run_id, job.artifact_uri)
    other.state = JobState(RunStatus.RUNNING)
    other.output = b"all of it\n"
    other.stop_ends_it = False
    store.set_tag(job.run_id, "reprorun.backend.stopRequested", "stopped by reprorun")
    job.output = b""
    job.state = JobState(RunStatus.FAILED, "the job no longer exists")
    assert job.get_status() is RunStatus.KILLED
    assert store.get_run(job.run_id).data.tags[FAILURE_TAG] == "stopped by reprorun"
    other.cancel()  # the killer closes after: nothing more changes
    assert store.get_run(job.run_id).info.status is RunStatus.KILLED


def test_a_stored_log_is_not_replaced_by_a_shorter_one(home: Path) -> None:
    job, store = new_job(home)
    job.output = b"the whole log\n"
    job.state = JobState(RunStatus.FINISHED)
    job.get_status()
    late = FakeJob(store, job.run_id, job.artifact_uri)
    late.output = b""
    late._keep_log()
    assert log_of(store, job) == "the whole log\n"


def test_why_the_job_ended_is_recorded_with_its_end(home: Path) -> None:
    job, store = new_job(home)
    job.state = JobState(
        RunStatus.FAILED,
        "Slurm job 7 ended OUT_OF_MEMORY",
        exit_reason=ExitReason.OUT_OF_MEMORY,
        detail="OUT_OF_MEMORY ExitCode=0:125",
    )
    assert job.get_status() is RunStatus.FAILED
    tags = store.get_run(job.run_id).data.tags
    assert tags[SystemTags.EXIT_REASON] == "out-of-memory"
    assert tags[SystemTags.EXIT_DETAIL] == "OUT_OF_MEMORY ExitCode=0:125"


def test_without_the_engines_class_the_status_and_code_decide(home: Path) -> None:
    finished, store = new_job(home)
    finished.state = JobState(RunStatus.FINISHED, exit_code=0)
    finished.get_status()
    failed, _ = new_job(home)
    failed.state = JobState(RunStatus.FAILED, "exit 3", exit_code=3, signal=None)
    failed.get_status()
    killed, _ = new_job(home)
    killed.state = JobState(RunStatus.FAILED, "gone", signal=9)
    killed.get_status()
    reasons = [
        store.get_run(j.run_id).data.tags[SystemTags.EXIT_REASON] for j in (finished, failed)
    ]
    assert reasons == ["succeeded", "code-error"]
    assert store.get_run(killed.run_id).data.tags[SystemTags.EXIT_SIGNAL] == "SIGKILL"


def test_a_cancelled_job_is_cancelled_whoever_stops_it(home: Path) -> None:
    job, store = new_job(home)
    job.state = JobState(RunStatus.RUNNING)
    job.cancel()
    assert store.get_run(job.run_id).data.tags[SystemTags.EXIT_REASON] == "cancelled"
    other, _ = new_job(home)
    other.state = JobState(RunStatus.RUNNING)
    other.get_status()
    store.set_tag(other.run_id, "reprorun.backend.stopRequested", "stopped by reprorun")
    other.state = JobState(
        RunStatus.FAILED, "the job no longer exists", exit_reason=ExitReason.NODE_LOST
    )
    assert other.get_status() is RunStatus.KILLED
    assert store.get_run(other.run_id).data.tags[SystemTags.EXIT_REASON] == "cancelled"


def test_a_job_stopped_past_its_timeout_elsewhere_ends_timeout_not_cancelled(home: Path) -> None:
    """Ray's job stopped by the process that saw --timeout pass: another process that closes
    the run reads the stop's reason, not a cancel."""
    job, store = new_job(home)
    job.state = JobState(RunStatus.RUNNING)
    job.get_status()
    store.set_tags(
        job.run_id,
        {
            "reprorun.backend.stopRequested": "stopped by reprorun: --timeout 4 s passed",
            "reprorun.backend.stopReason": "timeout",
        },
    )
    job.state = JobState(RunStatus.KILLED, "Job was intentionally stopped.")
    assert job.get_status() is RunStatus.FAILED
    tags = store.get_run(job.run_id).data.tags
    assert tags[SystemTags.EXIT_REASON] == "timeout"
    assert tags[FAILURE_TAG] == "stopped by reprorun: --timeout 4 s passed"


def test_an_abandoned_job_is_stopped_and_its_lost_node_stays_the_reason(home: Path) -> None:
    job, store = new_job(home)
    job.state = JobState(RunStatus.RUNNING)
    assert job.get_status() is RunStatus.RUNNING
    # A reader closed the run: its heartbeat stopped (backends.heartbeat.close_if_lost).
    store.update_run(job.run_id, status=RunStatus.FAILED, only_if_status=RunStatus.RUNNING)
    store.set_tag(job.run_id, SystemTags.EXIT_REASON, ExitReason.NODE_LOST.value)
    job.abandon()
    assert job.stopped == 1  # the engine was asked to stop the job
    assert log_of(store, job) == "hello\n"  # with the log it had
    again = FakeJob(store, job.run_id, store.get_run(job.run_id).info.artifact_uri)
    again.state = JobState(RunStatus.KILLED, "stopped by the engine")
    assert again.get_status() is RunStatus.FAILED  # the engine's later word changes nothing
    assert again.stopped == 0
    tags = store.get_run(job.run_id).data.tags
    assert tags[SystemTags.EXIT_REASON] == ExitReason.NODE_LOST.value


def test_the_handle_that_writes_the_end_tells_the_targets_once(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    heard = Heard(tmp_path)
    monkeypatch.setenv("REPRORUN_NOTIFY", heard.target + " setting")
    job, store = new_job(home)
    job.notify_targets = (heard.target + " given",)
    other = FakeJob(store, job.run_id, store.get_run(job.run_id).info.artifact_uri)
    for handle in (job, other):
        handle.state = JobState(RunStatus.FINISHED, exit_code=0)
    assert job.get_status() is RunStatus.FINISHED
    assert other.get_status() is RunStatus.FINISHED  # a second reader: nothing more to tell
    assert (job.ended_here, other.ended_here) == (True, False)
    assert heard.events() == [("finished", job.run_id)] * 2


def test_a_run_closed_from_its_wrappers_report_is_not_told_twice(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    heard = Heard(tmp_path)
    monkeypatch.setenv("REPRORUN_NOTIFY", heard.target)
    job, store = new_job(home)
    store.update_run(job.run_id, status=RunStatus.RUNNING)
    # A reader closed it from the wrapper's report (backends.heartbeat.close_if_lost) and
    # told the targets; the engine's later word refines why, and tells nobody again.
    store.update_run(job.run_id, status=RunStatus.FAILED, only_if_status=RunStatus.RUNNING)
    store.log_batch(job.run_id, tags={SystemTags.EXIT_REASON: ExitReason.CODE_ERROR.value})
    job.state = JobState(RunStatus.FAILED, "oom", 137, ExitReason.OUT_OF_MEMORY)
    assert job.get_status() is RunStatus.FAILED
    assert store.get_run(job.run_id).data.tags[SystemTags.EXIT_REASON] == "out-of-memory"
    assert heard.said() == []
    # A run its code ended FINISHED is told once the job's end is known.
    code_ended, _ = new_job(home)
    store.update_run(code_ended.run_id, status=RunStatus.FINISHED)
    code_ended.state = JobState(RunStatus.FINISHED, exit_code=0)
    assert code_ended.get_status() is RunStatus.FINISHED
    assert heard.events() == [("finished", code_ended.run_id)]
