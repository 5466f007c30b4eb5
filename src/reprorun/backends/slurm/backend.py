"""The slurm backend: ``create`` (its entry point) checks the options; a submission copies the
project and reprorun's in-run client into the run's folder, renders the script there and
submits it with sbatch."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reprorun.backends.base import JOB_ID_TAG, Backend, LaunchSpec, SubmittedRun, parse_options
from reprorun.backends.heartbeat import interval as heartbeat_interval
from reprorun.backends.heartbeat import metrics_interval
from reprorun.backends.slurm.commands import slurm
from reprorun.backends.slurm.job import SlurmJob
from reprorun.backends.slurm.options import SlurmBackendConfig, bad_option, with_timeout
from reprorun.backends.slurm.script import render_script
from reprorun.errors import ExecutionError
from reprorun.tracking.entities import Run, RunStatus
from reprorun.tracking.store.base import TrackingStore

SCRIPT_NAME = "job.sh"
SOURCE_NAME = "src"
CLIENT_NAME = "client"  # the copy of reprorun's in-run client the job imports


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
            bad_option(
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
            with_timeout(self.config, spec.timeout_seconds),  # --timeout: Slurm's --time
            run_id=spec.run_id,
            folder=folder,
            command=spec.command,
            workdir=source / spec.subdirectory if spec.subdirectory else source,
            env={**self.config.env_vars, **spec.job_env},
            # `reprorun log ...` in the command is this reprorun, then the built environment.
            path=[str(command_shim().parent), *spec.path_prefix],
            pythonpath=[str(client)],
            heartbeat=heartbeat_interval(),
            metrics=metrics_interval(spec),
        )
        script_path = folder / SCRIPT_NAME
        script_path.write_text(script, encoding="utf-8")
        script_path.chmod(0o700)
        out = slurm(
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


def create(config: Mapping[str, Any], source: str) -> Backend:
    return SlurmBackend(parse_options("slurm", SlurmBackendConfig, config, source))
