"""Following a Slurm job: its state through squeue, scontrol and sacct (or the exit code its
script left), its log, and cancelling it."""

from __future__ import annotations

import re
from pathlib import Path

from reprorun.backends.job import JobState, RemoteJob
from reprorun.backends.slurm.commands import slurm, slurm_query
from reprorun.backends.slurm.script import EXIT_CODE_NAME, LOG_NAME
from reprorun.errors import ExecutionError
from reprorun.tracking.entities import RunStatus
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


def job_state(
    job_id: str, state: str, reason: str | None = None, exit_code: str | None = None
) -> JobState:
    """A Slurm state (with its Reason and ExitCode "code:signal") as reprorun's JobState."""
    word = state.split()[0].rstrip("+").upper() if state.strip() else "UNKNOWN"  # "CANCELLED by 0"
    code, signal = _exit_code(exit_code)
    details = [r for r in (reason,) if r and r not in ("None", "(null)")]
    if signal:
        details.append(f"killed by signal {signal}")
    elif code is not None and word != "COMPLETED":
        details.append(f"exit code {code}")
    said = f" ({', '.join(details)})" if details else ""
    if word in _SCHEDULED:
        return JobState(RunStatus.SCHEDULED)
    if word == "COMPLETED":
        return JobState(RunStatus.FINISHED, exit_code=code)
    if word == "CANCELLED":
        return JobState(
            RunStatus.KILLED, f"Slurm job {job_id} was CANCELLED (scancel or an administrator)"
        )
    if word in _FAILED:
        return JobState(
            RunStatus.FAILED,
            f"Slurm job {job_id} ended {word}{said}",
            exit_code=None if signal else code,
        )
    if word in _RUNNING:
        return JobState(RunStatus.RUNNING)
    # A state newer than this list: the job still exists, so take it as still going.
    return JobState(RunStatus.RUNNING)


def _exit_code(text: str | None) -> tuple[int | None, int]:
    """Slurm's ExitCode "3:0" as (3, 0); (None, 0) when absent."""
    if not text:
        return None, 0
    code, _, signal = text.partition(":")
    try:
        return int(code), int(signal or 0)
    except ValueError:
        return None, 0


def parse_scontrol(text: str) -> dict[str, str]:
    """The fields of ``scontrol show job -o`` that matter here (their values have no spaces)."""
    wanted = ("JobState", "Reason", "ExitCode")
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
            if not found.status.is_terminal:
                return found
        # scontrol: the full record (with ExitCode), kept MinJobAge after the end.
        fields = parse_scontrol(slurm_query(["scontrol", "show", "job", "-o", job], job))
        if "JobState" in fields:
            return job_state(job, fields["JobState"], fields.get("Reason"), fields.get("ExitCode"))
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
                return JobState(status, reason, int(code))
        except (OSError, ValueError):
            pass
        return JobState(
            RunStatus.FAILED,
            f"Slurm job {self.job_id} is unknown to squeue, scontrol and sacct: its record is "
            "gone (it ended longer ago than the cluster's MinJobAge and there is no "
            "accounting, or it never existed) and it left no exit code in "
            f"{self.folder}.",
        )

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
