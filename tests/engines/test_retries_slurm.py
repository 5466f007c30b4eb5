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
from reprorun.tracking.entities import RunStatus, SystemTags
from tests.engines.test_slurm import project, run_slurm, scontrol_state, stored, until


@pytest.mark.slow
def test_a_preempted_slurm_job_is_retried_as_a_linked_run(
    slurm_cluster: str, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    # The first attempt runs until it is requeued; the second finishes at once.
    path = project(
        tmp_path, f"if [ -e {marker} ]; then echo second; else touch {marker}; sleep 120; fi"
    )
    submitted: list[SubmittedRun] = []
    said: list[str] = []
    ended: dict[str, Any] = {}

    def run() -> None:
        try:
            ended["run"] = run_slurm(
                path,
                slurm_cluster,
                retries=2,
                retry_backoff=0.01,
                on_submit=submitted.append,
                on_retry=said.append,
            )
        except BaseException as exc:  # the test thread says what went wrong
            ended["error"] = exc

    waiting = threading.Thread(target=run)
    waiting.start()
    try:
        until(lambda: bool(submitted) and marker.exists(), 60, "the first attempt to run")
        first = submitted[0]
        subprocess.run(["scontrol", "requeue", first.job_id], check=True, timeout=60)
        waiting.join(timeout=120)
        assert not waiting.is_alive(), "the retried run did not end"
    finally:
        for attempt in submitted:  # nothing left on the cluster if the test failed midway
            if not attempt.get_status().is_terminal:
                attempt.cancel(force=True)
        waiting.join(timeout=30)
    assert "error" not in ended, ended.get("error")
    assert len(submitted) == 2 and said[0].startswith("attempt 1 ended FAILED (preempted)")
    one, two = stored(first.run_id), stored(submitted[1].run_id)
    assert ended["run"].run_id == two.info.run_id
    assert one.info.status is RunStatus.FAILED
    assert one.data.tags[SystemTags.EXIT_REASON] == "preempted"
    assert two.info.status is RunStatus.FINISHED
    assert two.data.tags[SystemTags.EXIT_REASON] == "succeeded"
    assert (one.data.tags[SystemTags.ATTEMPT], two.data.tags[SystemTags.ATTEMPT]) == ("1", "2")
    assert two.data.tags[SystemTags.ATTEMPT_OF] == one.info.run_id
    assert one.data.tags[JOB_ID_TAG] != two.data.tags[JOB_ID_TAG]  # a new job, a new run


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
    marker = tmp_path / "marker"
    path = project(
        tmp_path, f"if [ -e {marker} ]; then echo second; else touch {marker}; sleep 120; fi"
    )
    submitted: list[SubmittedRun] = []
    said: list[str] = []
    ended: dict[str, Any] = {}

    def run() -> None:
        try:
            ended["run"] = run_slurm(
                path,
                slurm_cluster,
                retries=1,
                retry_backoff=0.01,
                on_submit=submitted.append,
                on_retry=said.append,
            )
        except BaseException as exc:  # the test thread says what went wrong
            ended["error"] = exc

    waiting = threading.Thread(target=run)
    waiting.start()
    try:
        until(lambda: bool(submitted) and marker.exists(), 60, "the first attempt to run")
        first = submitted[0]
        until(lambda: bool(_wrapper_pids(first.run_id)), 30, "the job's wrapper")
        until(lambda: SystemTags.HEARTBEAT in stored(first.run_id).data.tags, 30, "a beat")
        with _stopped(_wrapper_pids(first.run_id)):
            waiting.join(timeout=120)
            assert not waiting.is_alive(), "the waiting run did not go on"
            # Slurm was asked to stop the hung job while its wrapper was still stopped.
            state = scontrol_state(first.job_id)
            assert state in ("CANCELLED", "COMPLETING"), state
    finally:
        for attempt in submitted:  # nothing left on the cluster if the test failed midway
            subprocess.run(["scancel", attempt.job_id], timeout=60, check=False)
        waiting.join(timeout=30)
    assert "error" not in ended, ended.get("error")
    assert len(submitted) == 2, said
    assert said[0].startswith("attempt 1 ended FAILED (node-lost)"), said
    one, two = stored(first.run_id), stored(submitted[1].run_id)
    assert ended["run"].run_id == two.info.run_id
    assert one.info.status is RunStatus.FAILED
    assert one.data.tags[SystemTags.EXIT_REASON] == "node-lost"
    assert two.info.status is RunStatus.FINISHED
    assert two.data.tags[SystemTags.ATTEMPT_OF] == one.info.run_id
