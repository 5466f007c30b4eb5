"""Following a Slurm job: its state through squeue, scontrol and sacct (or the exit code its
script left), its log, and cancelling it."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from reprorun.backends.job import JobState, RemoteJob
from reprorun.backends.slurm.commands import slurm, slurm_query
from reprorun.backends.slurm.script import EXIT_CODE_NAME, LOG_NAME
from reprorun.errors import ExecutionError
from reprorun.tracking.entities import ExitReason, RunStatus
from reprorun.tracking.store.base import TrackingStore

# Slurm's job states (squeue %T, scontrol JobState, sacct State) in reprorun's terms.
_SCHEDULED = {
    "PENDING",
    "CONFIGURING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESV_DEL_HOLD",
}
_RUNNING = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "RESIZING", "SUSPENDED", "STOPPED"}
_FAILED = {
    "FAILED",
    "NODE_FAIL",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
    "SPECIAL_EXIT",
    "REVOKED",
}


# Why a Slurm job ended, by its state (the rest: FAILED and SPECIAL_EXIT are the code's).
_REASONS = {
    "COMPLETED": ExitReason.SUCCEEDED,
    "CANCELLED": ExitReason.CANCELLED,
    "REVOKED": ExitReason.CANCELLED,  # a federation ran the job on another cluster
    "OUT_OF_MEMORY": ExitReason.OUT_OF_MEMORY,
    "TIMEOUT": ExitReason.TIMEOUT,
    "DEADLINE": ExitReason.TIMEOUT,  # --deadline passed
    "PREEMPTED": ExitReason.PREEMPTED,
    "NODE_FAIL": ExitReason.NODE_LOST,
    "BOOT_FAIL": ExitReason.NODE_LOST,  # the node could not boot for the job
}
# States of a job Slurm put back in the queue after it ran (scontrol requeue, preemption
# with PreemptMode=REQUEUE, a node failure with JobRequeue).
_REQUEUED = {"REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"}


def job_state(
    job_id: str,
    state: str,
    reason: str | None = None,
    exit_code: str | None = None,
    restarts: int = 0,
) -> JobState:
    """A Slurm state (with its Reason, ExitCode "code:signal" and how many times it was
    requeued) as reprorun's JobState, with the exit reason and Slurm's own words."""
    word = state.split()[0].rstrip("+").upper() if state.strip() else "UNKNOWN"  # "CANCELLED by 0"
    code, signal = _exit_code(exit_code)
    details = [r for r in (reason,) if r and r not in ("None", "(null)")]
    if signal:
        details.append(f"killed by signal {signal}")
    elif code is not None and word != "COMPLETED":
        details.append(f"exit code {code}")
    said = f" ({', '.join(details)})" if details else ""
    words = " ".join(
        part
        for part in (
            state.strip(),
            f"Reason={reason}" if reason and reason not in ("None", "(null)") else "",
            f"ExitCode={exit_code}" if exit_code else "",
        )
        if part
    )
    if word in _REQUEUED or (word == "PENDING" and restarts > 0):
        # It ran, and Slurm took it back: that attempt ended. It would run again into the
        # same run, whose history would be overwritten: reprorun ends the run (a retry is a
        # new run) and cancels the requeued job (SlurmJob._close).
        lost = "NODE_FAIL" in (reason or "").upper() or "NODEDOWN" in (reason or "").upper()
        return JobState(
            RunStatus.FAILED,
            f"Slurm requeued job {job_id}{said}: that attempt ended, and reprorun cancels the "
            "requeued job (a retry is a new run)",
            exit_reason=ExitReason.NODE_LOST if lost else ExitReason.PREEMPTED,
            detail=f"{words} (requeued)",
        )
    if word in _SCHEDULED:
        return JobState(RunStatus.SCHEDULED)
    if word == "COMPLETED":
        return JobState(
            RunStatus.FINISHED, exit_code=code, exit_reason=ExitReason.SUCCEEDED, detail=words
        )
    if word == "CANCELLED":
        return JobState(
            RunStatus.KILLED,
            f"Slurm job {job_id} was CANCELLED (scancel or an administrator)",
            exit_reason=ExitReason.CANCELLED,
            detail=words,
            signal=signal or None,
        )
    if word in _FAILED:
        return JobState(
            RunStatus.FAILED,
            f"Slurm job {job_id} ended {word}{said}",
            exit_code=None if signal else code,
            exit_reason=_REASONS.get(word, ExitReason.CODE_ERROR),
            detail=words,
            # Slurm says 0:125 for OUT_OF_MEMORY: no signal has that number.
            signal=(signal if 0 < signal < 65 else None) or _shell_signal(code),
        )
    if word in _RUNNING:
        return JobState(RunStatus.RUNNING)
    # A state newer than this list: the job still exists, so take it as still going.
    return JobState(RunStatus.RUNNING)


def _shell_signal(code: int | None) -> int | None:
    """The batch script exits with its command's status: bash's 128+N for a command ended
    by signal N (137: SIGKILL, the OOM killer's)."""
    return code - 128 if code is not None and 128 < code < 160 else None


def _exit_code(text: str | None) -> tuple[int | None, int]:
    """Slurm's ExitCode "3:0" as (3, 0); (None, 0) when absent."""
    if not text:
        return None, 0
    code, _, signal = text.partition(":")
    try:
        return int(code), int(signal or 0)
    except ValueError:
        return None, 0


def _count(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


def parse_scontrol(text: str) -> dict[str, str]:
    """The fields of ``scontrol show job -o`` that matter here (their values have no spaces)."""
    wanted = ("JobState", "Reason", "ExitCode", "Restarts")
    found = {}
    for key in wanted:
        match = re.search(rf"(?:^|\s){key}=(\S*)", text)
        if match:
            found[key] = match.group(1)
    return found


class SlurmJob(RemoteJob):
    backend = "slurm"

    def __init__(
        self,
        run_id: str,
        job_id: str,
        store: TrackingStore,
        artifact_uri: str,
        folder: Path,
        tracking_uri: str | None = None,
    ):
        super().__init__(run_id, job_id, store, artifact_uri, tracking_uri)
        self.folder = folder

    def _state(self) -> JobState:
        job = self.job_id
        # squeue: the live view (it knows ended jobs too, until slurmctld purges them).
        found = None
        out = slurm_query(["squeue", "-h", "-j", job, "--states=all", "-o", "%T|%r"], job)
        if out:
            state, _, reason = out.splitlines()[0].partition("|")
            found = job_state(job, state, reason)
            if found.status is RunStatus.RUNNING:
                return found
            # Pending (maybe requeued: scontrol counts Restarts) or ended: scontrol tells.
        # scontrol: the full record (with ExitCode), kept MinJobAge after the end.
        fields = parse_scontrol(slurm_query(["scontrol", "show", "job", "-o", job], job))
        if "JobState" in fields:
            return job_state(
                job,
                fields["JobState"],
                fields.get("Reason"),
                fields.get("ExitCode"),
                _count(fields.get("Restarts")),
            )
        if found is not None:
            return found  # purged between the two questions
        # sacct: the accounting database, when the cluster has one.
        try:
            out = slurm_query(
                ["sacct", "-n", "-P", "-X", "-j", job, "-o", "State,Reason,ExitCode"], job
            )
        except ExecutionError as exc:
            # No accounting is no answer; a database that is down is an engine not reachable.
            if not any(n in str(exc) for n in ("accounting storage is disabled", "not on PATH")):
                raise
            out = ""
        if out:
            state, reason, code = [*out.splitlines()[0].split("|"), "", ""][:3]
            return job_state(job, state, reason, code)
        return self._forgotten()

    def _forgotten(self) -> JobState:
        """Slurm no longer knows the job: the script's exit-code file may still tell."""
        try:
            recorded, code = (self.folder / EXIT_CODE_NAME).read_text().split()
            if recorded == self.job_id:
                status = RunStatus.FINISHED if code == "0" else RunStatus.FAILED
                reason = (
                    f"Slurm job {self.job_id} exited with code {code} (Slurm has forgotten the "
                    f"job; read from {self.folder / EXIT_CODE_NAME})"
                )
                return JobState(
                    status,
                    reason,
                    int(code),
                    detail=f"exit code {code} (from {EXIT_CODE_NAME}; Slurm has forgotten the job)",
                    signal=_shell_signal(int(code)),
                )
        except (OSError, ValueError):
            pass
        return JobState(
            RunStatus.FAILED,
            f"Slurm job {self.job_id} is unknown to squeue, scontrol and sacct: its record is "
            "gone (it ended longer ago than the cluster's MinJobAge and there is no "
            "accounting, or it never existed) and it left no exit code in "
            f"{self.folder}.",
            exit_reason=ExitReason.NODE_LOST,
            detail="unknown to squeue, scontrol and sacct; no exit code file",
        )

    def _close(self, state: JobState, recorded: RunStatus) -> None:
        if state.detail and state.detail.endswith("(requeued)"):
            # Slurm would run it again into this run, which is ending: it must not.
            with contextlib.suppress(ExecutionError):
                self._stop()
        super()._close(state, recorded)

    def _read_log(self) -> bytes:
        try:
            return (self.folder / LOG_NAME).read_bytes()
        except FileNotFoundError:
            return b""  # not started yet
        except OSError as exc:
            raise ExecutionError(f"Cannot read the Slurm job's log: {exc}") from exc

    def _stop(self) -> None:
        # scancel of a job that has just ended is not an error: the state tells what happened.
        slurm(["scancel", self.job_id], f"cancel job {self.job_id} of run {self.run_id}")
