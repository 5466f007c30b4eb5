"""A run executing as a job of an engine (Ray, Slurm, Kubernetes, Databricks).

The engine owns the job; the run in the store follows it. Every ``get_status`` asks the engine
and records what changed: RUNNING once the job runs, and when it ends its status, the engine's
reason for a failure (``reprorun.failureReason``) and its output as the run's log artifact.
So whichever process looks first (the submitter's ``wait``, ``reprorun runs status`` hours
later) closes the run, and a job that vanished is closed too instead of staying RUNNING.
"""

from __future__ import annotations

import abc
import tempfile
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from reprorun.backends.base import FAILURE_TAG, SubmittedRun, ends_over
from reprorun.backends.exit_reason import signal_name
from reprorun.errors import ExecutionError
from reprorun.tracking.entities import ExitReason, RunStatus, SystemTags, now_ms
from reprorun.tracking.store.base import TrackingStore

LOG_PATH = "logs/run.log"
JOB_ENDED_TAG = "reprorun.backend.jobEnded"  # the job's end has been recorded (log kept)
STOP_TAG = "reprorun.backend.stopRequested"  # why reprorun asked the engine to stop the job
STOP_REASON_TAG = "reprorun.backend.stopReason"  # its ExitReason when not a cancel (timeout)


@dataclass(frozen=True)
class JobState:
    """The engine's view of a job, in reprorun's terms."""

    status: RunStatus  # SCHEDULED (queued), RUNNING, or a terminal status
    reason: str | None = None  # reprorun's sentence for a failure or a stop
    exit_code: int | None = None
    # Why it ended (issue 18), the engine's own words for it (Slurm's state, Kubernetes'
    # OOMKilled, Ray's message, Databricks' termination code) and the signal that ended the
    # command where the engine says. None: derived from the status and exit code.
    exit_reason: ExitReason | None = None
    detail: str | None = None
    signal: int | None = None

    def why(self) -> ExitReason:
        """The exit reason of an ended job: the engine's when it said, else the status's."""
        if self.exit_reason is not None:
            return self.exit_reason
        if self.status is RunStatus.FINISHED:
            return ExitReason.SUCCEEDED
        if self.status is RunStatus.KILLED:
            return ExitReason.CANCELLED
        return ExitReason.CODE_ERROR

    def end_tags(self) -> dict[str, str]:
        """The exit reason, detail, code and signal tags of an ended job."""
        tags = {SystemTags.EXIT_REASON: self.why().value}
        if self.detail:
            tags[SystemTags.EXIT_DETAIL] = self.detail[:8000]
        if self.exit_code is not None:
            tags[SystemTags.EXIT_CODE] = str(self.exit_code)
        if self.signal:
            tags[SystemTags.EXIT_SIGNAL] = signal_name(-self.signal) or str(self.signal)
        return tags


class RemoteJob(SubmittedRun):
    """The handle of a job; engines implement ``_state``, ``_read_log`` and ``_stop``."""

    poll_seconds = 1.0
    stop_timeout_seconds = 60.0

    def __init__(
        self,
        run_id: str,
        job_id: str,
        store: TrackingStore,
        artifact_uri: str,
        tracking_uri: str | None = None,
    ):
        self._run_id = run_id
        self._job_id = job_id
        self.store = store
        self.artifact_uri = artifact_uri
        self.tracking_uri = tracking_uri  # for artifacts kept by a tracking server
        self._final: RunStatus | None = None

    @property
    def run_id(self) -> str:
        return self._run_id

    @property
    def job_id(self) -> str:
        return self._job_id

    # --- what each engine provides ---------------------------------------------------------

    @abc.abstractmethod
    def _state(self) -> JobState:
        """Ask the engine. A job the engine no longer knows is FAILED with a reason; an
        engine that cannot be reached raises ExecutionError."""

    @abc.abstractmethod
    def _read_log(self) -> bytes:
        """The job's output so far, from the engine."""

    @abc.abstractmethod
    def _stop(self) -> None:
        """Ask the engine to stop the job."""

    # --- the shared behaviour ----------------------------------------------------------------

    def get_status(self) -> RunStatus:
        """The job's status, recorded on the run as it changes. The run may have been ended
        by the user's code (``mlflow.start_run`` ends it FINISHED) while the job goes on:
        the job is followed to its own end all the same, for its log, its exit code, and a
        failure after that point."""
        if self._final is not None:
            return self._final
        run = self.store.get_run(self._run_id)
        recorded = run.info.status
        if recorded.is_terminal and run.data.tags.get(JOB_ENDED_TAG):
            self._final = recorded
            return recorded
        state = self._state()
        stop_reason = run.data.tags.get(STOP_REASON_TAG)
        if stop_reason == ExitReason.TIMEOUT.value and state.status is not RunStatus.FINISHED:
            if state.status.is_terminal:  # stopped past --timeout (by another process)
                state = JobState(
                    RunStatus.FAILED,
                    run.data.tags.get(STOP_TAG) or state.reason,
                    state.exit_code,
                    ExitReason.TIMEOUT,
                    state.detail,
                    state.signal,
                )
        elif state.status is RunStatus.FAILED and run.data.tags.get(STOP_TAG):
            # Stopped from another process (runs kill): the engine may just have lost it.
            state = JobState(
                RunStatus.KILLED,
                run.data.tags[STOP_TAG],
                state.exit_code,
                ExitReason.CANCELLED,
                state.detail,
                state.signal,
            )
        if state.status is RunStatus.RUNNING and recorded is RunStatus.SCHEDULED:
            self.store.update_run(
                self._run_id, status=RunStatus.RUNNING, only_if_status=RunStatus.SCHEDULED
            )
        elif state.status.is_terminal:
            self._close(state, recorded)
        return self._final or state.status

    def _close(self, state: JobState, recorded: RunStatus) -> None:
        """Keep the job's log, then end the run with the job's status where ``ends_over``
        says so (once, whoever is first: ``only_if_status`` makes a concurrent close a
        no-op). Why it ended (reason, the engine's words, code, signal) is written in one
        batch with the end marker, before the status: whoever reads the ended run has it."""
        self._keep_log()
        # A run ended with a reason was ended (and told) by reprorun already (the wrapper's
        # report, a lost heartbeat); one without was ended by its code, which tells nobody.
        told = SystemTags.EXIT_REASON in self.store.get_run(self._run_id).data.tags
        tags = {JOB_ENDED_TAG: "true", **state.end_tags()}
        if state.reason and state.status is not RunStatus.FINISHED:
            tags[FAILURE_TAG] = state.reason[:8000]
        self.store.log_batch(self._run_id, tags=tags)
        closed = ends_over(recorded, state.status) and self.store.update_run(
            self._run_id, status=state.status, end_time=now_ms(), only_if_status=recorded
        )
        run = self.store.get_run(self._run_id)
        self._final = run.info.status
        if closed or (recorded.is_terminal and not told):
            # This handle wrote the job's end (the run's own, or after the code's): it tells.
            self.ended_here = True
            from reprorun.backends.notify import notify_end

            notify_end(self.store, self._run_id, run.info.experiment_id, self.notify_targets)

    def abandon(self) -> None:
        """Ask the engine to stop the job of a run closed for a lost heartbeat (best effort:
        its node may be gone), keep the log it has, and record the job's end as seen, so that
        the engine's later word does not rewrite why the run ended."""
        if self._final is not None:
            return
        with suppress(Exception):  # an engine that cannot be asked now: the job is left to it
            self._stop()
        with suppress(Exception):
            self._keep_log()
        self.store.set_tag(self._run_id, JOB_ENDED_TAG, "true")
        self._final = self.store.get_run(self._run_id).info.status

    def _keep_log(self) -> None:
        try:
            text = self._read_log()
        except ExecutionError as exc:
            text = f"[reprorun] the job's log could not be read: {exc}\n".encode()
        stored = stored_log(self.artifact_uri, self.tracking_uri)
        if stored is not None and len(stored) >= len(text):
            return  # kept already by whoever closed first (the engine may have lost it since)
        from reprorun.tracking.artifacts import log_file

        with tempfile.TemporaryDirectory(prefix="reprorun-log-") as tmp:
            path = Path(tmp) / Path(LOG_PATH).name
            path.write_bytes(text)
            log_file(
                self.artifact_uri,
                path,
                str(Path(LOG_PATH).parent),
                tracking_uri=self.tracking_uri,
            )

    def wait(self) -> bool:
        while not self.get_status().is_terminal:
            time.sleep(self.poll_seconds)
        return self.get_status() is RunStatus.FINISHED

    def cancel(self, force: bool = False) -> None:
        """Ask the engine to stop the job, wait (bounded) for it to end, mark the run KILLED
        with the job's log kept."""
        if self.get_status().is_terminal:
            return
        # Said first: whoever polls next reads the job's disappearance as this stop.
        self.store.set_tag(self._run_id, STOP_TAG, "stopped by reprorun (runs kill, or Ctrl-C)")
        self._stop()
        deadline = time.monotonic() + (5.0 if force else self.stop_timeout_seconds)
        state = self._state()
        while not state.status.is_terminal and time.monotonic() < deadline:
            time.sleep(self.poll_seconds)
            state = self._state()
        recorded = self.store.get_run(self._run_id).info.status
        reason = state.reason or "stopped by reprorun (runs kill, or Ctrl-C on the submitter)"
        if not state.status.is_terminal:
            reason = f"asked {self.backend} to stop job {self._job_id}; it had not ended yet"
        self._close(
            JobState(
                RunStatus.KILLED,
                reason,
                state.exit_code,
                ExitReason.CANCELLED,
                state.detail,
                state.signal,
            ),
            recorded,
        )

    def logs(self, start: int = 0) -> bytes:
        if self._final is not None:
            stored = stored_log(self.artifact_uri, self.tracking_uri)
            if stored is not None:
                return stored[start:]
        return self._read_log()[start:]  # engines give the whole log: Ray, Slurm's file, ...


def stored_log(artifact_uri: str, tracking_uri: str | None, rel: str = LOG_PATH) -> bytes | None:
    """The run's stored log artifact, wherever its artifacts are kept; None if there is none."""
    from reprorun.tracking.artifacts import download, is_remote, local_path

    if not is_remote(artifact_uri):
        path = local_path(artifact_uri, rel)
        return path.read_bytes() if path.is_file() else None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            got = download(artifact_uri, rel, tmp, tracking_uri=tracking_uri)
        except Exception:  # not there (yet), or the server cannot be asked: no stored log
            return None
        return Path(got).read_bytes()
