"""Slurm's client commands (sbatch, squeue, scontrol, sacct, scancel): their output, or an
ExecutionError with their own words and what to do."""

from __future__ import annotations

import subprocess

from reprorun.errors import ExecutionError

COMMAND_TIMEOUT = 120.0  # seconds; Slurm's own commands retry an unreachable slurmctld ~10 s

_GONE = ("Invalid job id", "Unknown job", "already completing or completed")
_UNREACHABLE = "Unable to contact slurm controller"


def slurm(argv: list[str], what: str) -> str:
    """Run a Slurm command; its stdout, or ExecutionError with its own words and what to do."""
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError as exc:
        raise ExecutionError(
            f"Could not {what}: the Slurm command {argv[0]!r} is not on PATH. Run reprorun "
            "where Slurm's client commands are installed (a login node of the cluster) or "
            "add their folder to PATH."
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise ExecutionError(
            f"Could not {what}: {argv[0]} did not answer within {COMMAND_TIMEOUT:.0f} s. "
            "Check that slurmctld is up (scontrol ping)."
        ) from exc
    if done.returncode != 0:
        said = done.stderr.strip() or done.stdout.strip() or f"exit code {done.returncode}"
        if argv[0] == "scancel" and any(g in said for g in _GONE):
            return ""
        raise ExecutionError(f"Could not {what}: {argv[0]} said: {said}. {_advice(argv[0], said)}")
    return done.stdout.strip()


def slurm_query(argv: list[str], job_id: str) -> str:
    """A query about one job: "" when Slurm does not know the job; ExecutionError when the
    cluster cannot be asked."""
    try:
        return slurm(argv, f"ask Slurm about job {job_id}")
    except ExecutionError as exc:
        if any(g in str(exc) for g in _GONE):
            return ""
        raise


def _advice(command: str, said: str) -> str:
    if _UNREACHABLE in said:
        return (
            "slurmctld cannot be reached: check `scontrol ping` and that SLURM_CONF (or "
            "/etc/slurm/slurm.conf) names the cluster's controller."
        )
    if command != "sbatch":
        return "Check that the cluster answers (`scontrol ping`, `squeue`)."
    if "partition" in said.lower():
        return "Check 'partition' in the backend config (`sinfo -s` lists the partitions)."
    if "account" in said.lower() or "qos" in said.lower():
        return "Check 'account' and 'qos' in the backend config (`sacctmgr show assoc`)."
    return (
        "Check the backend config (partition, nodes, cpus_per_task, gpus, mem, time, "
        "sbatch_lines) against what the cluster offers (`sinfo`, `scontrol show partition`)."
    )
