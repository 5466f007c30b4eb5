"""Retries by class on a real single-node Slurm cluster (issue 18): a job requeued by
``scontrol requeue`` (what preemption with PreemptMode=REQUEUE does) ends its run
``preempted``, and the retry finishes as a new run linked to the first."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from reprorun.backends.base import JOB_ID_TAG, SubmittedRun
from reprorun.tracking.entities import Run, RunStatus, SystemTags
from tests.engines.test_slurm import project, run_slurm, scontrol_state, stored, until


class Waiting:
    """A ``reprorun run --retries N`` of a Slurm job, waiting in a thread of its own as a
    user's does: the attempts it submitted, what it said between them, how it ended. The
    first attempt runs until the test acts on it; the next ones finish at once."""

    def __init__(self, tmp_path: Path, partition: str, retries: int):
        self.marker = tmp_path / "marker"
        path = project(
            tmp_path,
            f"if [ -e {self.marker} ]; then echo second; else touch {self.marker}; sleep 120; fi",
        )
        self.submitted: list[SubmittedRun] = []
        self.said: list[str] = []
        self.ended: dict[str, Any] = {}
        self.thread = threading.Thread(target=self._run, args=(path, partition, retries))
        self.thread.start()

    def _run(self, path: Path, partition: str, retries: int) -> None:
        try:
            self.ended["run"] = run_slurm(
                path,
                partition,
                retries=retries,
                retry_backoff=0.01,
                on_submit=self.submitted.append,
                on_retry=self.said.append,
            )
        except BaseException as exc:  # the test thread says what went wrong
            self.ended["error"] = exc

    def first(self) -> SubmittedRun:
        until(lambda: bool(self.submitted) and self.marker.exists(), 60, "the first attempt")
        return self.submitted[0]

    def join(self, timeout: float) -> None:
        self.thread.join(timeout=timeout)
        assert not self.thread.is_alive(), "the waiting run did not go on"

    def clean_up(self) -> None:
        """Nothing left on the cluster, whatever happened."""
        for attempt in self.submitted:
            subprocess.run(["scancel", attempt.job_id], timeout=60, check=False)
        self.thread.join(timeout=30)

    def linked_runs(self, first_reason: str) -> tuple[Run, Run]:
        """The two attempts' runs, checked: the first ended ``first_reason`` and was
        retried, the second finished as a new run (a new job) linked to it."""
        assert "error" not in self.ended, self.ended.get("error")
        assert len(self.submitted) == 2, self.said
        assert self.said[0].startswith(f"attempt 1 ended FAILED ({first_reason})"), self.said
        one, two = stored(self.submitted[0].run_id), stored(self.submitted[1].run_id)
        assert self.ended["run"].run_id == two.info.run_id
        assert one.info.status is RunStatus.FAILED
        assert one.data.tags[SystemTags.EXIT_REASON] == first_reason
        assert two.info.status is RunStatus.FINISHED
        assert two.data.tags[SystemTags.EXIT_REASON] == "succeeded"
        assert (one.data.tags[SystemTags.ATTEMPT], two.data.tags[SystemTags.ATTEMPT]) == ("1", "2")
        assert two.data.tags[SystemTags.ATTEMPT_OF] == one.info.run_id
        assert one.data.tags[JOB_ID_TAG] != two.data.tags[JOB_ID_TAG]
        return one, two


@pytest.mark.slow
def test_a_preempted_slurm_job_is_retried_as_a_linked_run(
    slurm_cluster: str, tmp_path: Path
) -> None:
    waiting = Waiting(tmp_path, slurm_cluster, retries=2)
    try:
        subprocess.run(["scontrol", "requeue", waiting.first().job_id], check=True, timeout=60)
        waiting.join(120)
    finally:
        waiting.clean_up()
    waiting.linked_runs("preempted")


@pytest.mark.slow
def test_a_job_whose_heartbeat_stops_is_abandoned_and_retried(
    slurm_cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The waiting `reprorun run` watches the heartbeat: a job whose wrapper hangs (SIGSTOP,
    as a node that stops answering) ends node-lost although Slurm still calls it RUNNING; its
    Slurm job is cancelled, and the retry runs as a new linked run."""
    from tests.engines.test_live_logs import _stopped, _wrapper_pids

    monkeypatch.setenv("REPRORUN_HEARTBEAT_INTERVAL", "0.5")
    monkeypatch.setenv("REPRORUN_HEARTBEAT_TIMEOUT", "3")
    waiting = Waiting(tmp_path, slurm_cluster, retries=1)
    try:
        first = waiting.first()
        until(lambda: bool(_wrapper_pids(first.run_id)), 30, "the job's wrapper")
        until(lambda: SystemTags.HEARTBEAT in stored(first.run_id).data.tags, 30, "a beat")
        with _stopped(_wrapper_pids(first.run_id)):
            waiting.join(120)
            # Slurm was asked to stop the hung job while its wrapper was still stopped.
            state = scontrol_state(first.job_id)
            assert state in ("CANCELLED", "COMPLETING"), state
    finally:
        waiting.clean_up()
    waiting.linked_runs("node-lost")
