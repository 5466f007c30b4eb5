"""The Ray backend's submission: the project's tree as the job's working directory, its
environment from the lock, the in-run client as a ``py_modules`` package (see the package's
docstring for why the REST API and not the ``ray`` package)."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from reprorun.backends.base import (
    JOB_ID_TAG,
    Backend,
    LaunchSpec,
    SubmittedRun,
    parse_options,
    tracking_options,
)
from reprorun.backends.heartbeat import interval as heartbeat_interval
from reprorun.backends.heartbeat import metrics_interval, wrapped
from reprorun.backends.ray.api import JobsApi
from reprorun.backends.ray.job import RayJob
from reprorun.backends.ray.options import JOB_PREFIX, TIMEOUT_KEY, RayBackendConfig, jobs_address
from reprorun.envs.lock import read_lock_lines
from reprorun.errors import ExecutionError, UserInputError
from reprorun.tracking.entities import Run, RunStatus
from reprorun.tracking.store.base import TrackingStore


def create(config: Mapping[str, Any], source: str) -> Backend:
    options = parse_options("ray", RayBackendConfig, config, source)
    tracking_options(options.tracking_uri, options.env_vars)
    if options.address:
        address = jobs_address(options.address, "option 'address'")
    elif os.environ.get("RAY_ADDRESS"):
        address = jobs_address(os.environ["RAY_ADDRESS"], "RAY_ADDRESS")
    else:
        raise UserInputError(
            "The ray backend needs the address of the cluster's dashboard (its Jobs API), "
            "e.g. http://head-node:8265: set 'address' in the backend config or the "
            "RAY_ADDRESS environment variable."
        )
    # The resolved address is kept in the run's config tag: `reprorun runs status` in
    # another shell finds the job without RAY_ADDRESS.
    return RayBackend(replace(options, address=address))


class RayBackend(Backend):
    name = "ray"
    remote = True
    shares_filesystem = None  # only when the cluster is this machine

    def __init__(self, config: RayBackendConfig):
        self.config = config
        self.tracking_uri = config.tracking_uri
        self.api = JobsApi(config.address or "")

    def check_env(self, env_manager: str) -> None:
        super().check_env(env_manager)
        if env_manager == "conda":
            raise UserInputError(
                "The ray backend rebuilds the run's environment on the workers with pip, "
                "from its lock; a conda lock is not a pip one. Use --env-manager uv or "
                "virtualenv (python_env.yaml), or local (the workers' own Python)."
            )

    def _submit(self, spec: LaunchSpec) -> SubmittedRun:
        from reprorun.envs.client import client_root

        requirements = lock_requirements(spec.lock_text)
        runtime_env: dict[str, Any] = {
            "working_dir": self.api.upload_tree(spec.root),
            # `import reprorun` in the job: the runner's own client (a folder holding the
            # package, uploaded once per version), which Ray puts first on PYTHONPATH.
            "py_modules": [self.api.upload_tree(client_root(), "reprorun's in-run client")],
            # The run's own variables win: they say which run the code logs into.
            "env_vars": {**self.config.env_vars, **spec.job_env},
        }
        if requirements:
            runtime_env["pip"] = requirements
        submission_id = JOB_PREFIX + spec.run_id
        self.api.call("POST", "/api/jobs/", self.job_request(spec, submission_id, runtime_env))
        # PENDING until Ray has the resources: the first poll says RUNNING once it runs.
        spec.store.update_run(
            spec.run_id, status=RunStatus.SCHEDULED, only_if_status=RunStatus.RUNNING
        )
        return self._job(spec.run_id, submission_id, spec.store, spec.artifact_uri)

    def job_request(
        self, spec: LaunchSpec, submission_id: str, runtime_env: dict[str, Any]
    ) -> dict[str, Any]:
        """The body of ``POST /api/jobs/``."""
        body: dict[str, Any] = {
            "entrypoint": entrypoint(
                spec.command, spec.subdirectory, heartbeat_interval(), metrics_interval(spec)
            ),
            "submission_id": submission_id,
            "runtime_env": runtime_env,
            "metadata": {
                "reprorun.run_id": spec.run_id,
                "reprorun.experiment_id": spec.experiment_id,
            },
        }
        if spec.timeout_seconds:
            # Ray has no time limit for a job: whoever follows it stops it (RayJob._state).
            body["metadata"][TIMEOUT_KEY] = f"{spec.timeout_seconds:g}"
        c = self.config
        for key, value in (
            ("entrypoint_num_cpus", c.num_cpus),
            ("entrypoint_num_gpus", c.num_gpus),
            ("entrypoint_memory", c.memory),
            ("entrypoint_resources", c.resources or None),
        ):
            if value is not None:
                body[key] = value
        return body

    def attach(self, run: Run, store: TrackingStore) -> SubmittedRun:
        job_id = run.data.tags.get(JOB_ID_TAG)
        if not job_id:
            raise UserInputError(
                f"Run {run.info.run_id} has no Ray job (no tag {JOB_ID_TAG}): its submission "
                "failed before Ray accepted it."
            )
        return self._job(run.info.run_id, job_id, store, run.info.artifact_uri)

    def _job(self, run_id: str, job_id: str, store: TrackingStore, artifact_uri: str) -> RayJob:
        # The job's log is stored in the run's artifacts through this process's store.
        store_uri = getattr(store, "uri", None)
        tracking_uri = store_uri if isinstance(store_uri, str) else None
        return RayJob(self.api, run_id, job_id, store, artifact_uri, tracking_uri)


def entrypoint(
    command: str, subdirectory: str, heartbeat: float | None = None, metrics: float | None = None
) -> str:
    """The job's shell command: Ray runs it with /bin/sh in the shipped tree; the project's
    command is bash syntax, run in its subdirectory, under the heartbeat wrapper when
    ``heartbeat`` (seconds between beats) is given, sampling the system metrics every
    ``metrics`` seconds when given."""
    run = (
        f"exec bash -c {shlex.quote(command)}"
        if heartbeat is None
        else wrapped(command, heartbeat, metrics=metrics)
    )
    return f"cd {shlex.quote(subdirectory)} && {run}" if subdirectory else run


def lock_requirements(lock_text: str | None) -> list[str]:
    """The lock's requirement lines for ``runtime_env.pip``; refuses packages installed from
    this machine's files, which no worker can install."""
    lock = read_lock_lines(lock_text)
    if lock.local:
        raise ExecutionError(
            "The environment's lock installs packages from this machine's files, which the "
            f"Ray workers cannot install: {'; '.join(lock.local)}. Publish them to an index the "
            "cluster reaches (or a git URL), pin that in the project's environment, and rerun."
        )
    return lock.pip
