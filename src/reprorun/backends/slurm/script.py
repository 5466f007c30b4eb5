"""The sbatch script of one run, rendered from the backend's options."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from reprorun.backends.heartbeat import wrapped
from reprorun.backends.slurm.options import SlurmBackendConfig, sbatch_option

LOG_NAME = "job.log"
EXIT_CODE_NAME = "exit_code"  # "<job id> <exit code>", written by the script as it ends


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
    heartbeat: float | None = None,
    metrics: float | None = None,
) -> str:
    """The sbatch script of one run: pure, so what a config gives can be read and tested.

    ``folder`` is the run's folder (log, exit code, chdir), ``workdir`` where ``command``
    runs, ``env`` every variable the job gets besides the node's login environment (sbatch
    --export=NONE: nothing of this process leaks in), ``path`` folders put first on PATH,
    ``pythonpath`` first on PYTHONPATH (after the setup lines, which may load a Python).
    ``heartbeat``: seconds between the heartbeats (and live log uploads) of the wrapper the
    command runs under (None: the command alone); ``metrics``: seconds between its samples of
    the system metrics (None: off).
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
        (
            f"bash -c {q(command)}"
            if heartbeat is None
            else wrapped(command, heartbeat, exec_=False, metrics=metrics)
        ),
        "code=$?",
        # Kept for when Slurm has forgotten the job (MinJobAge) and there is no accounting.
        f'echo "$SLURM_JOB_ID $code" > {q(str(folder / EXIT_CODE_NAME))}',
        'exit "$code"',
    ]
    return "\n".join(lines) + "\n"
