"""Following a Databricks run: its state in reprorun's terms, its output, cancelling it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from reprorun.backends.databricks.api import JOBS_API, WorkspaceApi
from reprorun.backends.databricks.payload import EXIT_MARKER
from reprorun.backends.job import JobState, RemoteJob
from reprorun.errors import ExecutionError, WorkspaceError
from reprorun.tracking.entities import ExitReason, RunStatus
from reprorun.tracking.store.base import TrackingStore

_EXIT_LINE = re.compile(r"^" + re.escape(EXIT_MARKER) + r"(-?\d+)\s*$", re.MULTILINE)
_WAITING = frozenset({"QUEUED", "PENDING", "BLOCKED", "WAITING_FOR_RETRY"})


def job_state(
    state: Mapping[str, Any],
    run_id: str,
    error: str | None = None,
    exit_code: int | None = None,
    termination: Mapping[str, Any] | None = None,
) -> JobState:
    """A Databricks run state (``life_cycle_state``, ``result_state``, ``state_message``),
    its task's error and the run's ``status.termination_details`` (code, type, message) as
    reprorun's JobState, with why it ended in Databricks' words."""
    life = str(state.get("life_cycle_state") or "")
    result = state.get("result_state")
    details = [str(state.get("state_message") or "").strip(), (error or "").strip()]
    said = "; ".join(dict.fromkeys(d for d in details if d))
    said = f": {said}" if said else ""
    if life in _WAITING:
        return JobState(RunStatus.SCHEDULED)
    if life not in ("SKIPPED", "INTERNAL_ERROR", "TERMINATED"):
        # RUNNING, TERMINATING (the result is final once TERMINATED), and states added later.
        return JobState(RunStatus.RUNNING)
    why, words = _why(state, error, exit_code, termination)
    signal = exit_code - 128 if exit_code is not None and 128 < exit_code < 160 else None
    if life == "SKIPPED":
        return JobState(
            RunStatus.FAILED, f"Databricks skipped run {run_id}{said}", None, why, words
        )
    if life == "INTERNAL_ERROR":
        return JobState(
            RunStatus.FAILED,
            f"Databricks run {run_id} ended INTERNAL_ERROR{said}",
            exit_code,
            why,
            words,
            signal,
        )
    if result == "SUCCESS":
        return JobState(RunStatus.FINISHED, None, exit_code, why, words)
    if result == "CANCELED" and why is ExitReason.CANCELLED:
        return JobState(
            RunStatus.KILLED, f"Databricks run {run_id} was CANCELED{said}", None, why, words
        )
    if not result:
        return JobState(
            RunStatus.FAILED, f"Databricks run {run_id} ended without a result", None, why, words
        )
    hint = " (timeout_seconds)" if result == "TIMEDOUT" else ""
    return JobState(
        RunStatus.FAILED,
        f"Databricks run {run_id} ended {result}{hint}{said}",
        exit_code,
        why,
        words,
        signal,
    )


# Codes of the cluster's termination (Clusters API termination_reason.code) and of the run's
# (Jobs API status.termination_details.code), as Databricks writes them in its messages too.
_OOM_CODES = ("DRIVER_OUT_OF_MEMORY", "EXECUTOR_OUT_OF_MEMORY")
_PREEMPTED_CODES = (
    "SPOT_INSTANCE_TERMINATION",
    "AZURE_EPHEMERAL_DISK_FAILURE",
    "CLOUD_PROVIDER_SHUTDOWN",
    "INSTANCE_POOL_CLUSTER_FAILURE",
)
_LOST_CODES = (
    "DRIVER_UNREACHABLE",
    "DRIVER_UNRESPONSIVE",
    "INSTANCE_UNREACHABLE",
    "COMMUNICATION_LOST",
    "CLOUD_PROVIDER_DISK_SETUP_FAILURE",
    "NODE_LOST",
    "CLUSTER_ERROR",
    "DRIVER_ERROR",
    "CLOUD_FAILURE",
    "INTERNAL_ERROR",
)
_LAUNCH_CODES = (
    "INVALID_CLUSTER_REQUEST",
    "LIBRARY_INSTALLATION_ERROR",
    "REPOSITORY_CHECKOUT_FAILED",
    "RESOURCE_NOT_FOUND",
    "INVALID_RUN_CONFIGURATION",
    "STORAGE_ACCESS_ERROR",
    "UNAUTHORIZED_ERROR",
    "FEATURE_DISABLED",
    "WORKSPACE_RUN_LIMIT_EXCEEDED",
    "CLUSTER_REQUEST_LIMIT_EXCEEDED",
    "MAX_CONCURRENT_RUNS_EXCEEDED",
    "MAX_SPARK_CONTEXTS_EXCEEDED",
    "MAX_JOB_QUEUE_SIZE_EXCEEDED",
    "MAXIMUM_CONCURRENT_RUNS_REACHED",
    "BUDGET_POLICY_LIMIT_EXCEEDED",
    "SKIPPED",
)


def _why(
    state: Mapping[str, Any],
    error: str | None,
    exit_code: int | None,
    termination: Mapping[str, Any] | None,
) -> tuple[ExitReason, str]:
    """Why an ended Databricks run ended, and Databricks' words for it: the result state,
    the run's termination code and message, then the cluster's termination codes found in
    the messages (``Reason: DRIVER_OUT_OF_MEMORY``); the command's exit code last."""
    result = str(state.get("result_state") or state.get("life_cycle_state") or "")
    term = termination or {}
    code = str(term.get("code") or "")
    words = [result, code, str(term.get("message") or ""), str(state.get("state_message") or "")]
    said = " ".join(words)  # Databricks' own words (the task's error is the code's)
    text = f"{said} {error or ''}"
    detail = "; ".join(dict.fromkeys(w.strip() for w in words if w and w.strip()))
    if result == "SUCCESS":
        return ExitReason.SUCCEEDED, detail
    if result == "TIMEDOUT" or "timed out" in said.lower():
        return ExitReason.TIMEOUT, detail
    if result == "CANCELED" or code in ("USER_CANCELED", "CANCELED"):
        return ExitReason.CANCELLED, detail
    found = [
        (reason, codes)
        for reason, codes in (
            (ExitReason.OUT_OF_MEMORY, _OOM_CODES),
            (ExitReason.PREEMPTED, _PREEMPTED_CODES),
        )
        if any(c in text for c in codes)
    ]
    if found or "java.lang.OutOfMemoryError" in text or "MemoryError" in (error or ""):
        return (found[0][0] if found else ExitReason.OUT_OF_MEMORY), detail
    if exit_code is not None:
        return ExitReason.CODE_ERROR, detail  # the launcher ran the command to its end
    if (
        code in _LAUNCH_CODES
        or result in _LAUNCH_CODES
        or state.get("life_cycle_state") == "SKIPPED"
    ):
        return ExitReason.LAUNCH_ERROR, detail
    if code in _LOST_CODES or any(c in text for c in _LOST_CODES[:5]):
        return ExitReason.NODE_LOST, detail
    if state.get("life_cycle_state") == "INTERNAL_ERROR":
        return ExitReason.LAUNCH_ERROR, detail  # the command never ran (libraries, cluster)
    return ExitReason.CODE_ERROR, detail


def exit_code_of(logs: str) -> int | None:
    """The command's exit code, from the launcher's last line."""
    found = _EXIT_LINE.findall(logs)
    return int(found[-1]) if found else None


class DatabricksJob(RemoteJob):
    backend = "databricks"
    poll_seconds = 5.0  # a cluster takes minutes to start; spare the workspace's rate limits

    def __init__(
        self,
        api: WorkspaceApi,
        run_id: str,
        job_id: str,
        store: TrackingStore,
        artifact_uri: str,
        tracking_uri: str | None = None,
    ):
        super().__init__(run_id, job_id, store, artifact_uri, tracking_uri)
        self.api = api
        self._task_run_id: int | None = None
        self._output: dict[str, Any] | None = None  # an ended run's output no longer changes

    def _db_run_id(self) -> int:
        try:
            return int(self.job_id)
        except ValueError:
            raise ExecutionError(
                f"Run {self.run_id}'s job id {self.job_id!r} is not a Databricks run id."
            ) from None

    def info(self) -> dict[str, Any] | None:
        """``runs/get``; None when the workspace does not know the run (any more)."""
        try:
            return self.api.call(
                "GET",
                f"{JOBS_API}/runs/get",
                query={"run_id": self._db_run_id()},
                what=f"runs/get of run {self.job_id}",
            )
        except WorkspaceError as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or "does not exist" in str(exc):
                return None
            raise

    def _state(self) -> JobState:
        info = self.info()
        if info is None:
            return JobState(
                RunStatus.FAILED,
                f"The Databricks workspace {self.api.host} no longer knows run {self.job_id} "
                "(it deletes runs after 60 days, or someone deleted it); its outcome is unknown.",
                exit_reason=ExitReason.NODE_LOST,
                detail=f"RESOURCE_DOES_NOT_EXIST: run {self.job_id}",
            )
        state = info.get("state") or {}
        found = job_state(state, self.job_id)
        if not found.status.is_terminal:
            return found
        output = self._fetch_output(info)
        self._output = output
        logs = str(output.get("logs") or "")
        termination = (info.get("status") or {}).get("termination_details")
        return job_state(state, self.job_id, output.get("error"), exit_code_of(logs), termination)

    def _fetch_output(self, info: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The task's output (``runs/get-output`` takes the task's run id, not the run's)."""
        if self._task_run_id is None:
            info = info if info is not None else self.info()
            tasks = (info or {}).get("tasks") or []
            if not tasks or tasks[0].get("run_id") is None:
                return {}
            self._task_run_id = int(tasks[0]["run_id"])
        try:
            return self.api.call(
                "GET",
                f"{JOBS_API}/runs/get-output",
                query={"run_id": self._task_run_id},
                what=f"runs/get-output of run {self.job_id}",
            )
        except WorkspaceError as exc:
            if exc.status in (400, 404):
                return {}  # not started yet, or gone: no output to show
            raise

    def _read_log(self) -> bytes:
        if not self.job_id:
            return b""  # never submitted: no output anywhere
        output = self._output if self._output is not None else self._fetch_output()
        text = str(output.get("logs") or "")
        if output.get("logs_truncated"):
            text = "[reprorun] Databricks keeps only the end of this output (5 MB)\n" + text
        trace = str(output.get("error_trace") or "").strip()
        if trace and trace not in text:
            text += ("" if not text or text.endswith("\n") else "\n") + trace + "\n"
        return text.encode("utf-8")

    def _stop(self) -> None:
        try:
            self.api.call(
                "POST",
                f"{JOBS_API}/runs/cancel",
                {"run_id": self._db_run_id()},
                what=f"runs/cancel of run {self.job_id}",
            )
        except WorkspaceError as exc:
            if "does not exist" not in str(exc) and exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise  # an unknown run: the next look at its state says so
