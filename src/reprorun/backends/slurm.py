"""Run the command as a Slurm batch job: ``sbatch`` submits, ``squeue``/``scontrol``/``sacct``
follow, ``scancel`` stops, and the job's output file is the run's log.

The cluster shares this machine's file system (as Slurm clusters share home and project
folders): the job runs a copy of the project from a per-run folder (``jobs_dir/<run id>``),
uses the environment reprorun built here (its folders go first on PATH), and can log into
the run's store directly. The rendered script stays in that folder, next to the job's log, and
so does a copy of reprorun's in-run client (standard library only), first on the job's
PYTHONPATH: ``import reprorun`` works with whatever Python the node gives the command (a
``module load python`` in ``setup``, a node's own interpreter), as on the other backends.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reprorun.backends.base import (
    JOB_ID_TAG,
    Backend,
    LaunchSpec,
    SubmittedRun,
    parse_options,
    tracking_options,
)
from reprorun.backends.job import JobState, RemoteJob
from reprorun.errors import ExecutionError, UserInputError
from reprorun.tracking.entities import Run, RunStatus
from reprorun.tracking.store.base import TrackingStore

SCRIPT_NAME = "job.sh"
LOG_NAME = "job.log"
EXIT_CODE_NAME = "exit_code"  # "<job id> <exit code>", written by the script as it ends
SOURCE_NAME = "src"
CLIENT_NAME = "client"  # the copy of reprorun's in-run client the job imports
COMMAND_TIMEOUT = 120.0  # seconds; Slurm's own commands retry an unreachable slurmctld ~10 s

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

# Options reprorun sets itself: the log, the folder and the environment are its contract.
_RESERVED = {
    "-o": "output",
    "--output": "output",
    "-e": "error",
    "--error": "error",
    "-D": "chdir",
    "--chdir": "chdir",
    "--export": "export",
    "--export-file": "export",
    "--wrap": "wrap",
    "-a": "array",
    "--array": "array",
}

# minutes, minutes:seconds, hours:minutes:seconds, days-hours[:minutes[:seconds]]
_TIME = re.compile(r"\d+(:\d+){0,2}|\d+-\d+(:\d+){0,2}|UNLIMITED|INFINITE", re.IGNORECASE)
_MEM = re.compile(r"\d+[KMGT]?", re.IGNORECASE)
_GPUS = re.compile(r"([A-Za-z0-9_.-]+:)?[1-9]\d*")
_WORD = re.compile(r"[^\s'\"\\`$#;]+")  # one sbatch token, nothing a shell or parser splits
_MODULE = re.compile(r"[A-Za-z0-9_.+/@-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class SlurmBackendConfig:
    """Options of the Slurm backend (``--backend-config``). ``None``: the cluster's default."""

    partition: str | None = None
    nodes: int | None = None
    cpus_per_task: int | None = None
    gpus: int | str | None = None  # a count, or "type:count" such as "a100:2"
    mem: str | None = None  # per node, e.g. "4G" (Slurm's --mem)
    time: str | None = None  # time limit, e.g. "01:00:00" or "2-00:00:00"
    account: str | None = None
    qos: str | None = None
    job_name: str | None = None  # default "reprorun-<first 8 characters of the run id>"
    sbatch_lines: list[str] = field(default_factory=list)  # more "#SBATCH --opt=value" lines
    modules: list[str] = field(default_factory=list)  # `module load` these first
    setup: list[str] = field(default_factory=list)  # shell lines run before the command
    # The per-run folders (script, log, project copy), on a file system the nodes share;
    # default $REPRORUN_HOME/slurm.
    jobs_dir: str | None = None
    tracking_uri: str | None = None
    env_vars: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        tracking_options(self.tracking_uri, self.env_vars)
        for key in ("nodes", "cpus_per_task"):
            value = getattr(self, key)
            if value is not None and value < 1:
                _bad(key, "an integer >= 1", value)
        if isinstance(self.gpus, int) and self.gpus < 1:
            _bad("gpus", "an integer >= 1 or a string such as 'a100:2'", self.gpus)
        if isinstance(self.gpus, str) and not _GPUS.fullmatch(self.gpus):
            _bad("gpus", "a count or 'type:count' such as 'a100:2'", self.gpus)
        if self.mem is not None and not _MEM.fullmatch(self.mem):
            _bad("mem", "a size such as '4G', '500M' or '16000' (megabytes)", self.mem)
        if self.time is not None and not _TIME.fullmatch(self.time):
            _bad(
                "time",
                "a Slurm time limit: minutes, minutes:seconds, hours:minutes:seconds, "
                "days-hours, days-hours:minutes or days-hours:minutes:seconds "
                "(e.g. '30', '01:00:00', '2-00:00:00')",
                self.time,
            )
        for key in ("partition", "account", "qos", "job_name"):
            value = getattr(self, key)
            if value is not None and not _WORD.fullmatch(value):
                _bad(key, "a name without spaces, quotes or shell characters", value)
        for line in self.sbatch_lines:
            sbatch_option(line)
        for name in self.modules:
            if not _MODULE.fullmatch(name):
                _bad("modules", "module names such as 'cuda/12.2'", name)
        for name in self.env_vars:
            if not _ENV_NAME.fullmatch(name):
                _bad("env_vars", "variable names made of letters, digits and _", name)
        if self.jobs_dir is not None and not self.jobs_dir.strip():
            _bad("jobs_dir", "a folder the compute nodes share with this machine", self.jobs_dir)


def _bad(key: str, expected: str, given: object) -> None:
    raise UserInputError(f"Slurm backend option {key!r} must be {expected}, got {given!r}.")


def sbatch_option(line: str) -> str:
    """The option part of an extra ``#SBATCH`` line ("#SBATCH --x=1" or "--x=1"), checked."""
    text = line.strip()
    if text.startswith("#SBATCH"):
        text = text[len("#SBATCH") :].strip()
    if not text.startswith("-") or "\n" in text or "\r" in text or "\0" in text:
        _bad("sbatch_lines", "'#SBATCH --option=value' lines (or '--option=value')", line)
    reserved = _reserved(text)
    if reserved:
        raise UserInputError(
            f"Slurm backend option 'sbatch_lines': {line!r} sets --{reserved}, which "
            "reprorun sets itself (the job's log, folder and environment are how it follows "
            "the run). Use env_vars for variables; the log is in jobs_dir/<run id>/job.log."
        )
    return text


def _reserved(text: str) -> str | None:
    """The reserved option ``text`` sets, as sbatch reads it: a short option glued to its
    value (``-o/tmp/x``) or a long one abbreviated (``--out=x``, as getopt accepts)."""
    if not text.startswith("--"):
        return _RESERVED.get(text[:2])
    name = re.split(r"[=\s]", text, maxsplit=1)[0]
    if len(name) <= 2:
        return None
    for option, meaning in _RESERVED.items():
        if option.startswith("--") and option.startswith(name):
            return meaning
    return None


# --- the script ------------------------------------------------------------------------------


def render_script(
    config: SlurmBackendConfig,
    *,
    run_id: str,
    folder: Path,
    command: str,
    workdir: Path,
    env: Mapping[str, str],
    path: Sequence[str] = (),
    pythonpath: Sequence[str] = (),
) -> str:
    """The sbatch script of one run: pure, so what a config gives can be read and tested.

    ``folder`` is the run's folder (log, exit code, chdir), ``workdir`` where ``command``
    runs, ``env`` every variable the job gets besides the node's login environment (sbatch
    --export=NONE: nothing of this process leaks in), ``path`` folders put first on PATH,
    ``pythonpath`` first on PYTHONPATH (after the setup lines, which may load a Python).
    """
    q = shlex.quote
    options = [
        f"--job-name={config.job_name or 'reprorun-' + run_id[:8]}",
        f'--output="{folder / LOG_NAME}"',  # stdout and stderr in one file: the run's log
        f'--chdir="{folder}"',  # sbatch reads double quotes in #SBATCH lines
        "--export=NONE",
    ]
    for key, flag in (
        ("partition", "partition"),
        ("nodes", "nodes"),
        ("cpus_per_task", "cpus-per-task"),
        ("gpus", "gpus"),
        ("mem", "mem"),
        ("time", "time"),
        ("account", "account"),
        ("qos", "qos"),
    ):
        value = getattr(config, key)
        if value is not None:
            options.append(f"--{flag}={value}")
    options += [sbatch_option(line) for line in config.sbatch_lines]
    lines = ["#!/bin/bash", *(f"#SBATCH {option}" for option in options)]
    lines += [
        f"# Written by reprorun for run {run_id}. The job gets the node's login environment",
        "# and these variables; the environment built for the run goes first on PATH.",
    ]
    lines += [f"export {name}={q(value)}" for name, value in sorted(env.items())]
    if path:
        lines.append(f'export PATH={q(":".join(path))}"${{PATH:+:$PATH}}"')
    lines.append("set -e  # a failing setup step ends the job before the command")
    if config.modules:
        lines.append("module load " + " ".join(q(m) for m in config.modules))
    lines += config.setup
    if pythonpath:
        lines.append(f'export PYTHONPATH={q(":".join(pythonpath))}"${{PYTHONPATH:+:$PYTHONPATH}}"')
    lines += [
        f"cd {q(str(workdir))}",
        "set +e",
        f"bash -c {q(command)}",
        "code=$?",
        # Kept for when Slurm has forgotten the job (MinJobAge) and there is no accounting.
        f'echo "$SLURM_JOB_ID $code" > {q(str(folder / EXIT_CODE_NAME))}',
        'exit "$code"',
    ]
    return "\n".join(lines) + "\n"


# --- states ----------------------------------------------------------------------------------


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


# --- the backend -----------------------------------------------------------------------------


class SlurmBackend(Backend):
    name = "slurm"
    remote = True
    shares_filesystem = True  # a Slurm cluster shares home and project folders with its nodes

    def __init__(self, config: SlurmBackendConfig):
        from reprorun.config import home

        # Resolved now, so the tag that lets another process attach names the same folder.
        jobs_dir = Path(config.jobs_dir).expanduser() if config.jobs_dir else home() / "slurm"
        resolved = str(jobs_dir.resolve())
        # sbatch reads %j, %u, ... in --output as patterns: the log would go elsewhere.
        if '"' in resolved or "\n" in resolved or "%" in resolved or "\\" in resolved:
            _bad(
                "jobs_dir",
                "a folder without '\"', '%', '\\' or line breaks in its path",
                resolved,
            )
        self.config = dataclasses.replace(config, jobs_dir=resolved)
        self.tracking_uri = config.tracking_uri

    @property
    def jobs_dir(self) -> Path:
        assert self.config.jobs_dir is not None
        return Path(self.config.jobs_dir)

    def _submit(self, spec: LaunchSpec) -> SubmittedRun:
        from reprorun.envs.client import client_root
        from reprorun.envs.commands import command_shim

        folder = self.jobs_dir / spec.run_id
        try:
            # Only its owner may read it: the script exports the run's variables, which may
            # carry credentials (a tracking URI with a password, env_vars).
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            folder.chmod(0o700)
            source = folder / SOURCE_NAME
            # The job runs what was submitted, even if the project changes while it waits.
            shutil.copytree(spec.root, source, symlinks=True, ignore=shutil.ignore_patterns(".git"))
            # In the folder the nodes share: the node's Python may have no reprorun.
            client = folder / CLIENT_NAME
            shutil.copytree(
                client_root(), client, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        except OSError as exc:
            raise ExecutionError(
                f"Could not prepare the Slurm job's folder {folder}: {exc}. Set jobs_dir in "
                "the backend config to a writable folder the compute nodes share."
            ) from exc
        script = render_script(
            self.config,
            run_id=spec.run_id,
            folder=folder,
            command=spec.command,
            workdir=source / spec.subdirectory if spec.subdirectory else source,
            env={**self.config.env_vars, **spec.job_env},
            # `reprorun log ...` in the command is this reprorun, then the built environment.
            path=[str(command_shim().parent), *spec.path_prefix],
            pythonpath=[str(client)],
        )
        script_path = folder / SCRIPT_NAME
        script_path.write_text(script, encoding="utf-8")
        script_path.chmod(0o700)
        out = _slurm(
            ["sbatch", "--parsable", str(script_path)],
            f"submit run {spec.run_id} (script {script_path})",
        )
        job_id = out.split(";")[0].strip()  # "<id>" or "<id>;<cluster>"
        if not job_id.isdigit():
            raise ExecutionError(f"sbatch answered {out!r}, not a job id (script {script_path}).")
        # Queued until Slurm starts it; following the job moves the run to RUNNING.
        spec.store.update_run(
            spec.run_id, status=RunStatus.SCHEDULED, only_if_status=RunStatus.RUNNING
        )
        return SlurmJob(
            spec.run_id, job_id, spec.store, spec.artifact_uri, folder, _server_uri(spec.store)
        )

    def attach(self, run: Run, store: TrackingStore) -> SubmittedRun:
        job_id = run.data.tags.get(JOB_ID_TAG, "")
        if not job_id and not run.info.status.is_terminal:
            raise ExecutionError(
                f"Run {run.info.run_id} has no Slurm job id yet (tag {JOB_ID_TAG}): it is "
                "being submitted, or its submitter died before sbatch answered."
            )
        folder = self.jobs_dir / run.info.run_id
        return SlurmJob(
            run.info.run_id, job_id, store, run.info.artifact_uri, folder, _server_uri(store)
        )


def _server_uri(store: TrackingStore) -> str | None:
    """The tracking server keeping the run's artifacts, when the store is one."""
    uri = getattr(store, "uri", None)
    return uri if isinstance(uri, str) and uri.startswith(("http://", "https://")) else None


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
        out = _slurm_query(["squeue", "-h", "-j", job, "--states=all", "-o", "%T|%r"], job)
        if out:
            state, _, reason = out.splitlines()[0].partition("|")
            found = job_state(job, state, reason)
            if not found.status.is_terminal:
                return found
        # scontrol: the full record (with ExitCode), kept MinJobAge after the end.
        fields = parse_scontrol(_slurm_query(["scontrol", "show", "job", "-o", job], job))
        if "JobState" in fields:
            return job_state(job, fields["JobState"], fields.get("Reason"), fields.get("ExitCode"))
        if found is not None:
            return found  # purged between the two questions
        # sacct: the accounting database, when the cluster has one.
        try:
            out = _slurm_query(
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
        _slurm(["scancel", self.job_id], f"cancel job {self.job_id} of run {self.run_id}")


# --- Slurm's commands ------------------------------------------------------------------------

_GONE = ("Invalid job id", "Unknown job", "already completing or completed")
_UNREACHABLE = "Unable to contact slurm controller"


def _slurm(argv: list[str], what: str) -> str:
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


def _slurm_query(argv: list[str], job_id: str) -> str:
    """A query about one job: "" when Slurm does not know the job; ExecutionError when the
    cluster cannot be asked."""
    try:
        return _slurm(argv, f"ask Slurm about job {job_id}")
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


def create(config: Mapping[str, Any], source: str) -> Backend:
    return SlurmBackend(parse_options("slurm", SlurmBackendConfig, config, source))
