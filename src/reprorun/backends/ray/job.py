"""A Ray job followed from any process: its state, why it ended (the exit reason from Ray's
status, error type and message), and the stop of a job past its ``--timeout``."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from reprorun.backends.job import STOP_REASON_TAG, STOP_TAG, JobState, RemoteJob
from reprorun.backends.ray.api import JobsApi
from reprorun.backends.ray.options import TIMEOUT_KEY
from reprorun.errors import ExecutionError
from reprorun.tracking.entities import ExitReason, RunStatus
from reprorun.tracking.store.base import TrackingStore

# Ray's job statuses (ray.job_submission.JobStatus) in reprorun's terms.
STATUSES = {
    "PENDING": RunStatus.SCHEDULED,  # waiting for resources or building the runtime_env
    "RUNNING": RunStatus.RUNNING,
    "SUCCEEDED": RunStatus.FINISHED,
    "FAILED": RunStatus.FAILED,
    "STOPPED": RunStatus.KILLED,
}


class RayJob(RemoteJob):
    backend = "ray"
    # Ray stops a running job with SIGTERM, then SIGKILL after 3 s (RAY_JOB_STOP_WAIT_TIME_S).
    # A PENDING job is stopped only once it starts: no use waiting a minute for that.
    stop_timeout_seconds = 15.0

    def __init__(
        self,
        api: JobsApi,
        run_id: str,
        job_id: str,
        store: TrackingStore,
        artifact_uri: str,
        tracking_uri: str | None,
    ):
        super().__init__(run_id, job_id, store, artifact_uri, tracking_uri)
        self.api = api
        self.job_url = f"{api.address}/#/jobs/{quote(job_id)}"  # the dashboard's job page

    def _path(self, suffix: str = "") -> str:
        return f"/api/jobs/{self.job_id}{suffix}"  # the client quotes it

    def _state(self) -> JobState:
        status, data = self.api.request("GET", self._path())
        if status == 404:
            return JobState(
                RunStatus.FAILED,
                f"Ray at {self.api.address} no longer knows job {self.job_id} (the cluster "
                "was restarted or the job was deleted); its outcome is unknown.",
                exit_reason=ExitReason.NODE_LOST,
                detail=f"HTTP 404 for job {self.job_id}",
            )
        info = self.api.json_of(status, data, f"job {self.job_id}")
        state = job_state(info)
        over = overtime(info, time.time())
        if over is not None and not state.status.is_terminal:
            # Said first: whoever polls next reads the job's STOPPED as this stop.
            self.store.set_tags(
                self.run_id, {STOP_TAG: over, STOP_REASON_TAG: ExitReason.TIMEOUT.value}
            )
            self._stop()
            return JobState(
                RunStatus.FAILED,
                over,
                exit_reason=ExitReason.TIMEOUT,
                detail=f"{info.get('status')}; {over}",
            )
        return state

    def _read_log(self) -> bytes:
        status, data = self.api.request("GET", self._path("/logs"))
        logs = self.api.json_of(status, data, f"the log of job {self.job_id}").get("logs")
        return str(logs or "").encode("utf-8")

    def _stop(self) -> None:
        status, data = self.api.request("POST", self._path("/stop"))
        if status != 404:  # an unknown job: the next look at its state says so
            self.api.json_of(status, data, f"stopping job {self.job_id}")


def job_state(info: Mapping[str, Any]) -> JobState:
    """Ray's job details (``GET /api/jobs/<id>``) as reprorun's JobState, with why it ended
    (``exit_reason``) and Ray's own words."""
    ray_status = str(info.get("status"))
    status = STATUSES.get(ray_status)
    if status is None:
        raise ExecutionError(
            f"Ray reported status {ray_status!r} for job {info.get('submission_id')}, which "
            f"this reprorun does not know (known: {', '.join(STATUSES)})."
        )
    if not status.is_terminal:
        return JobState(status)
    exit_code = info.get("driver_exit_code")
    code = exit_code if isinstance(exit_code, int) else None
    why, signal = _exit_reason(info, code)
    return JobState(status, _reason(info), code, why, _words(info), signal)


# Ray's words for a worker its memory monitor killed (ray.exceptions.OutOfMemoryError, and
# the raylet's "... worker(s) were killed due to the node running low on memory").
_RAY_OOM = ("OutOfMemoryError", "running low on memory")


# error_type of a job whose command never ran: its environment, or its supervisor actor.
_LAUNCH = {
    "RUNTIME_ENV_SETUP_FAILURE",
    "JOB_SUPERVISOR_ACTOR_START_TIMEOUT",
    "JOB_SUPERVISOR_ACTOR_START_FAILURE",
    "JOB_SUPERVISOR_ACTOR_UNSCHEDULABLE",
    "JOB_ENTRYPOINT_COMMAND_START_ERROR",
}


_STOP_SIGNALS = {1, 2, 15}  # SIGHUP, SIGINT, SIGTERM: someone stopped the driver


def _exit_reason(info: Mapping[str, Any], code: int | None) -> tuple[ExitReason, int | None]:
    """Why an ended Ray job ended, and the signal that ended its driver (a negative return
    code, or the shell's 128+N)."""
    status = str(info.get("status"))
    if status == "SUCCEEDED":
        return ExitReason.SUCCEEDED, None
    if status == "STOPPED":
        return ExitReason.CANCELLED, None
    signal = -code if code is not None and code < 0 else None
    if code is not None and 128 < code < 160:
        signal = code - 128
    error_type = str(info.get("error_type") or "")
    message = str(info.get("message") or "")
    if any(words in message for words in _RAY_OOM):
        return ExitReason.OUT_OF_MEMORY, signal
    if error_type in _LAUNCH:
        return ExitReason.LAUNCH_ERROR, signal
    if error_type.startswith("JOB_SUPERVISOR_ACTOR"):
        # The actor that runs the driver died with its worker or its node.
        return ExitReason.NODE_LOST, signal
    if signal in _STOP_SIGNALS:
        return ExitReason.CANCELLED, signal  # stopped from outside Ray (kill, an admin)
    return ExitReason.CODE_ERROR, signal


def _words(info: Mapping[str, Any]) -> str:
    """Ray's own words for the end: status, error type and message, without the log's tail
    (the run keeps the whole log)."""
    message = str(info.get("message") or "").split(", last available logs", 1)[0].strip()
    parts = [str(info.get("status")), str(info.get("error_type") or ""), message[:1000]]
    return ": ".join(part for part in parts if part)


def overtime(info: Mapping[str, Any], now: float) -> str | None:
    """What to say when a job asked to stop after ``--timeout`` (its metadata) has run
    longer, counting from its submission (Ray's start_time); None otherwise."""
    metadata = info.get("metadata") or {}
    try:
        limit = float(metadata.get(TIMEOUT_KEY) or 0)
        started = float(info.get("start_time") or 0) / 1000
    except (TypeError, ValueError):
        return None
    if not limit or not started or now - started <= limit:
        return None
    return (
        f"stopped by reprorun: --timeout {limit:g} s passed (Ray has no time limit for a "
        "job; reprorun stops it when it follows the job past that time)"
    )


def _reason(info: Mapping[str, Any]) -> str | None:
    message = str(info.get("message") or "").strip()
    error_type = info.get("error_type")
    if error_type == "JOB_ENTRYPOINT_COMMAND_ERROR":
        # Ray appends the log's tail, which the run keeps whole as logs/run.log.
        return message.split(", last available logs", 1)[0] or None
    if "Traceback (most recent call last)" in message:
        # e.g. a pip install that failed: Ray's words, then the tool's own last lines.
        head, _, rest = message.partition("Traceback (most recent call last)")
        message = head.strip() + "\n...\n" + "\n".join(rest.strip().splitlines()[-15:])
    if error_type:
        return f"{error_type}: {message}"
    return message or None
