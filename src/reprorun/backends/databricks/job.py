"""Following a Databricks run: its state in reprorun's terms, its output, cancelling it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from reprorun.backends.databricks.api import JOBS_API, WorkspaceApi
from reprorun.backends.databricks.payload import EXIT_MARKER
from reprorun.backends.job import JobState, RemoteJob
from reprorun.errors import ExecutionError, WorkspaceError
from reprorun.tracking.entities import RunStatus
from reprorun.tracking.store.base import TrackingStore

_EXIT_LINE = re.compile(r"^" + re.escape(EXIT_MARKER) + r"(-?\d+)\s*$", re.MULTILINE)
_WAITING = frozenset({"QUEUED", "PENDING", "BLOCKED", "WAITING_FOR_RETRY"})


def job_state(
    state: Mapping[str, Any], run_id: str, error: str | None = None, exit_code: int | None = None
) -> JobState:
    """A Databricks run state (``life_cycle_state``, ``result_state``, ``state_message``) and
    its task's error as reprorun's JobState."""
    life = str(state.get("life_cycle_state") or "")
    result = state.get("result_state")
    details = [str(state.get("state_message") or "").strip(), (error or "").strip()]
    said = "; ".join(dict.fromkeys(d for d in details if d))
    said = f": {said}" if said else ""
    if life in _WAITING:
        return JobState(RunStatus.SCHEDULED)
    if life == "SKIPPED":
        return JobState(RunStatus.FAILED, f"Databricks skipped run {run_id}{said}")
    if life == "INTERNAL_ERROR":
        return JobState(
            RunStatus.FAILED, f"Databricks run {run_id} ended INTERNAL_ERROR{said}", exit_code
        )
    if life == "TERMINATED":
        if result == "SUCCESS":
            return JobState(RunStatus.FINISHED, exit_code=exit_code)
        if result == "CANCELED":
            return JobState(RunStatus.KILLED, f"Databricks run {run_id} was CANCELED{said}")
        if not result:
            return JobState(RunStatus.FAILED, f"Databricks run {run_id} ended without a result")
        hint = " (timeout_seconds)" if result == "TIMEDOUT" else ""
        return JobState(
            RunStatus.FAILED, f"Databricks run {run_id} ended {result}{hint}{said}", exit_code
        )
    # RUNNING, TERMINATING (the result is final once TERMINATED), and states added later.
    return JobState(RunStatus.RUNNING)


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
            )
        state = info.get("state") or {}
        found = job_state(state, self.job_id)
        if not found.status.is_terminal:
            return found
        output = self._fetch_output(info)
        self._output = output
        logs = str(output.get("logs") or "")
        return job_state(state, self.job_id, output.get("error"), exit_code_of(logs))

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
