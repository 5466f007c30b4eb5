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
from reprorun.tracking.entities import ExitReason, RunStatus
from reprorun.tracking.store.base import TrackingStore


def job_state(job: Any, pods: Sequence[Any]) -> JobState:
    """The run's status from the Job (its conditions Complete/Failed, its ready pods) and
    its pods (Running, or still Pending: SCHEDULED), with the container's exit code and why
    it ended in Kubernetes' own words (the Job's condition, the pod's and container's
    reasons)."""
    meta, status = job.metadata, job.status
    name = f"{meta.namespace}/{meta.name}"
    code, detail = _exit(pods)
    for condition in (status.conditions if status else None) or []:
        if condition.status != "True":
            continue
        if condition.type == "Complete":
            return JobState(
                RunStatus.FINISHED, None, code, ExitReason.SUCCEEDED, "Complete", _signal(code)
            )
        if condition.type == "Failed":
            reason = f"Kubernetes job {name} failed: {condition.reason or 'Failed'}"
            if condition.message:
                reason += f" ({condition.message})"
            if detail:
                reason += f"; {detail}"
            why, words = _why(condition, pods)
            return JobState(RunStatus.FAILED, reason, code, why, words, _signal(code))
    if meta.deletion_timestamp is not None:
        return JobState(
            RunStatus.KILLED,
            f"Kubernetes job {name} is being deleted",
            exit_reason=ExitReason.CANCELLED,
            detail="the Job is being deleted",
        )
    running = any(p.status is not None and p.status.phase == "Running" for p in pods)
    if (status is not None and status.ready) or running:
        return JobState(RunStatus.RUNNING)
    return JobState(RunStatus.SCHEDULED)  # pods pending: scheduling, pulling the image


# The pod's DisruptionTarget condition (Kubernetes 1.26+) and the pod's own reason.
_DISRUPTIONS = {
    "PreemptionByScheduler": ExitReason.PREEMPTED,  # a higher-priority pod took its place
    "EvictionByEvictionAPI": ExitReason.PREEMPTED,  # kubectl drain, the eviction API
    "TerminationByKubelet": ExitReason.PREEMPTED,  # node pressure or graceful node shutdown
    "DeletionByTaintManager": ExitReason.NODE_LOST,  # the node went NotReady/unreachable
    "DeletionByPodGC": ExitReason.NODE_LOST,  # the node is gone
}
_POD_REASONS = {
    "Evicted": ExitReason.PREEMPTED,  # the kubelet evicted it (node pressure)
    "Preempting": ExitReason.PREEMPTED,
    "NodeLost": ExitReason.NODE_LOST,
    "NodeShutdown": ExitReason.NODE_LOST,
    "Terminated": ExitReason.NODE_LOST,  # "...terminated in response to imminent node shutdown"
    "DeadlineExceeded": ExitReason.TIMEOUT,  # the pod's own activeDeadlineSeconds
}


def _why(condition: Any, pods: Sequence[Any]) -> tuple[ExitReason, str]:
    """Why a failed Job failed, and the words that say it: the Job's deadline, then the last
    pod's container (OOMKilled), disruption or reason, then the exit code (the code's)."""
    words = [f"Job Failed: {condition.reason or 'Failed'}"]
    if condition.message:
        words[0] += f" ({condition.message})"
    why = ExitReason.TIMEOUT if condition.reason == "DeadlineExceeded" else None
    for pod in reversed(pods):
        status = pod.status
        if status is None:
            continue
        ended = _terminated(pod)
        if ended is not None and ended.reason:
            words.append(f"container {ended.reason}, exit code {ended.exit_code}")
            if ended.reason == "OOMKilled":
                why = why or ExitReason.OUT_OF_MEMORY
            elif ended.reason == "ContainerStatusUnknown":  # its node went away with it
                why = why or ExitReason.NODE_LOST
        for cond in status.conditions or []:
            if cond.type == "DisruptionTarget" and cond.status == "True":
                words.append(f"pod DisruptionTarget: {cond.reason} ({cond.message or ''})")
                why = why or _DISRUPTIONS.get(cond.reason or "")
        if status.reason:
            words.append(f"pod {status.reason} ({status.message or ''})")
            why = why or _POD_REASONS.get(status.reason)
        break  # the last attempt's pod says how the Job ended
    return why or ExitReason.CODE_ERROR, "; ".join(words)


def _terminated(pod: Any) -> Any:
    """The project container's terminated state (the pod's first container), or None."""
    containers = pod.spec.containers if pod.spec else None
    ours = containers[0].name if containers else None
    for cs in (pod.status.container_statuses if pod.status else None) or []:
        if cs.name == ours and cs.state is not None and cs.state.terminated is not None:
            return cs.state.terminated
    return None


def _signal(code: int | None) -> int | None:
    """The container's command ended by signal N: Kubernetes reports 128+N (137: SIGKILL)."""
    return code - 128 if code is not None and 128 < code < 160 else None


def _exit(pods: Sequence[Any]) -> tuple[int | None, str | None]:
    """The exit code of the last attempt's project container, and what happened to it."""
    for pod in reversed(pods):
        name = pod.metadata.name if pod.metadata else "?"
        ended = _terminated(pod)
        if ended is not None:
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
                return JobState(RunStatus.KILLED, exit_reason=ExitReason.CANCELLED)
            return JobState(
                RunStatus.FAILED,
                f"Kubernetes job {self.job_id} no longer exists: it was deleted (kubectl "
                "delete, or ttlSecondsAfterFinished) before reprorun saw it end.",
                exit_reason=ExitReason.CANCELLED,
                detail="the Job no longer exists",
            )
        state = job_state(job, self.cluster.pods(self.namespace, self.name))
        if state.status is RunStatus.KILLED and self._deleted:
            return JobState(RunStatus.KILLED, exit_reason=ExitReason.CANCELLED)
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
