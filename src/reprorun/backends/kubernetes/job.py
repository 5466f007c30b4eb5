"""Following a Kubernetes Job: its state from the Job and its pods, its pods' logs, deleting
it to cancel."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from reprorun.backends.job import JobState, RemoteJob
from reprorun.backends.kubernetes.api import Cluster
from reprorun.backends.kubernetes.options import NAME
from reprorun.errors import ExecutionError
from reprorun.tracking.entities import RunStatus
from reprorun.tracking.store.base import TrackingStore


def job_state(job: Any, pods: Sequence[Any]) -> JobState:
    """The run's status from the Job (its conditions Complete/Failed, its ready pods) and
    its pods (Running, or still Pending: SCHEDULED), with the container's exit code."""
    meta, status = job.metadata, job.status
    name = f"{meta.namespace}/{meta.name}"
    code, detail = _exit(pods)
    for condition in (status.conditions if status else None) or []:
        if condition.status != "True":
            continue
        if condition.type == "Complete":
            return JobState(RunStatus.FINISHED, None, code)
        if condition.type == "Failed":
            reason = f"Kubernetes job {name} failed: {condition.reason or 'Failed'}"
            if condition.message:
                reason += f" ({condition.message})"
            if detail:
                reason += f"; {detail}"
            return JobState(RunStatus.FAILED, reason, code)
    if meta.deletion_timestamp is not None:
        return JobState(RunStatus.KILLED, f"Kubernetes job {name} is being deleted")
    running = any(p.status is not None and p.status.phase == "Running" for p in pods)
    if (status is not None and status.ready) or running:
        return JobState(RunStatus.RUNNING)
    return JobState(RunStatus.SCHEDULED)  # pods pending: scheduling, pulling the image


def _exit(pods: Sequence[Any]) -> tuple[int | None, str | None]:
    """The exit code of the last attempt's project container, and what happened to it."""
    for pod in reversed(pods):
        name = pod.metadata.name if pod.metadata else "?"
        containers = pod.spec.containers if pod.spec else None
        ours = containers[0].name if containers else None
        for cs in (pod.status.container_statuses if pod.status else None) or []:
            ended = cs.state.terminated if cs.state else None
            if cs.name == ours and ended is not None:
                why = ended.reason or "exited"
                if ended.message:
                    why += f": {ended.message.strip()}"
                return ended.exit_code, f"pod {name}: exit code {ended.exit_code} ({why})"
        if pod.status is not None and pod.status.reason:
            return None, f"pod {name}: {pod.status.reason} ({pod.status.message or ''})"
    return None, None


class KubernetesJob(RemoteJob):
    backend = NAME
    poll_seconds = 2.0

    def __init__(
        self,
        run_id: str,
        job_id: str,
        store: TrackingStore,
        artifact_uri: str,
        cluster: Cluster,
        tracking_uri: str | None = None,
    ):
        super().__init__(run_id, job_id, store, artifact_uri, tracking_uri)
        self.namespace, _, self.name = job_id.partition("/")
        self.cluster = cluster
        self._deleted = False  # by us: a job that vanishes after that was stopped, not lost
        self._last_log: bytes | None = None  # read just before deleting the job

    def _state(self) -> JobState:
        job = self.cluster.read_job(self.namespace, self.name)
        if job is None:
            if self._deleted:
                return JobState(RunStatus.KILLED)
            return JobState(
                RunStatus.FAILED,
                f"Kubernetes job {self.job_id} no longer exists: it was deleted (kubectl "
                "delete, or ttlSecondsAfterFinished) before reprorun saw it end.",
            )
        state = job_state(job, self.cluster.pods(self.namespace, self.name))
        if state.status is RunStatus.KILLED and self._deleted:
            return JobState(RunStatus.KILLED)
        return state

    def _read_log(self) -> bytes:
        if not self.name:
            return b""
        chunks: list[bytes] = []
        for attempt, pod in enumerate(self.cluster.pods(self.namespace, self.name), start=1):
            containers = pod.spec.containers if pod.spec else None
            text = self.cluster.pod_log(
                self.namespace, pod.metadata.name, containers[0].name if containers else None
            )
            if text is None:
                continue
            if attempt > 1:  # a retry (backoffLimit): the earlier output stays a prefix
                chunks.append(
                    f"\n[reprorun] pod {pod.metadata.name}, attempt {attempt}:\n".encode()
                )
            chunks.append(text)
        live = b"".join(chunks)
        if self._last_log is not None and len(self._last_log) > len(live):
            return self._last_log  # the pods went with the job
        return live

    def _stop(self) -> None:
        with contextlib.suppress(ExecutionError):  # the log is worth keeping, not required
            self._last_log = self._read_log()
        self._deleted = True
        self.cluster.delete_job(self.namespace, self.name)
