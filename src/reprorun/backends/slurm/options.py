"""The Slurm backend's options (``--backend-config``), checked before any work: nothing in
them can split an sbatch line or a shell word, and none sets what reprorun sets itself."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field

from reprorun.backends.base import tracking_options
from reprorun.errors import UserInputError

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
                bad_option(key, "an integer >= 1", value)
        if isinstance(self.gpus, int) and self.gpus < 1:
            bad_option("gpus", "an integer >= 1 or a string such as 'a100:2'", self.gpus)
        if isinstance(self.gpus, str) and not _GPUS.fullmatch(self.gpus):
            bad_option("gpus", "a count or 'type:count' such as 'a100:2'", self.gpus)
        if self.mem is not None and not _MEM.fullmatch(self.mem):
            bad_option("mem", "a size such as '4G', '500M' or '16000' (megabytes)", self.mem)
        if self.time is not None and not _TIME.fullmatch(self.time):
            bad_option(
                "time",
                "a Slurm time limit: minutes, minutes:seconds, hours:minutes:seconds, "
                "days-hours, days-hours:minutes or days-hours:minutes:seconds "
                "(e.g. '30', '01:00:00', '2-00:00:00')",
                self.time,
            )
        for key in ("partition", "account", "qos", "job_name"):
            value = getattr(self, key)
            if value is not None and not _WORD.fullmatch(value):
                bad_option(key, "a name without spaces, quotes or shell characters", value)
        for line in self.sbatch_lines:
            sbatch_option(line)
        for name in self.modules:
            if not _MODULE.fullmatch(name):
                bad_option("modules", "module names such as 'cuda/12.2'", name)
        for name in self.env_vars:
            if not _ENV_NAME.fullmatch(name):
                bad_option("env_vars", "variable names made of letters, digits and _", name)
        if self.jobs_dir is not None and not self.jobs_dir.strip():
            bad_option(
                "jobs_dir", "a folder the compute nodes share with this machine", self.jobs_dir
            )


def time_seconds(text: str) -> float | None:
    """A Slurm time limit (as ``time`` accepts it) in seconds; None for UNLIMITED."""
    if text.upper() in ("UNLIMITED", "INFINITE"):
        return None
    days, _, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if days:  # days-hours[:minutes[:seconds]]
        parts += [0] * (3 - len(parts))
        hours, minutes, seconds = parts
        return ((int(days) * 24 + hours) * 60 + minutes) * 60.0 + seconds
    if len(parts) == 3:  # hours:minutes:seconds
        return (parts[0] * 60 + parts[1]) * 60.0 + parts[2]
    return parts[0] * 60.0 + (parts[1] if len(parts) == 2 else 0)  # minutes[:seconds]


def time_limit(seconds: float) -> str:
    """``seconds`` as Slurm's days-hours:minutes:seconds. Slurm keeps whole minutes, rounded
    up: a 10 s limit is a 1 min one."""
    total = max(1, math.ceil(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"


def with_timeout(config: SlurmBackendConfig, seconds: float | None) -> SlurmBackendConfig:
    """The config whose ``time`` is ``--timeout`` where that is shorter than the config's own
    (both are limits: the shorter one ends the job, with Slurm's TIMEOUT)."""
    if not seconds:
        return config
    own = time_seconds(config.time) if config.time else None
    if own is not None and own <= seconds:
        return config
    return dataclasses.replace(config, time=time_limit(seconds))


def bad_option(key: str, expected: str, given: object) -> None:
    raise UserInputError(f"Slurm backend option {key!r} must be {expected}, got {given!r}.")


def sbatch_option(line: str) -> str:
    """The option part of an extra ``#SBATCH`` line ("#SBATCH --x=1" or "--x=1"), checked."""
    text = line.strip()
    if text.startswith("#SBATCH"):
        text = text[len("#SBATCH") :].strip()
    if not text.startswith("-") or "\n" in text or "\r" in text or "\0" in text:
        bad_option("sbatch_lines", "'#SBATCH --option=value' lines (or '--option=value')", line)
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
