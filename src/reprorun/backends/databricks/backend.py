"""The databricks backend: ``create`` (its entry point) checks the options and finds the
credentials before any work; a submission publishes what the run needs to DBFS and submits one
task on a new cluster."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reprorun.backends.base import (
    JOB_ID_TAG,
    JOB_URL_TAG,
    Backend,
    LaunchSpec,
    SubmittedRun,
)
from reprorun.backends.databricks.api import JOBS_API, WorkspaceApi
from reprorun.backends.databricks.credentials import Credentials, credentials
from reprorun.backends.databricks.job import DatabricksJob
from reprorun.backends.databricks.options import DatabricksBackendConfig, read_config
from reprorun.backends.databricks.payload import (
    ARCHIVE_ROOT,
    CLIENT_DIR,
    LAUNCHER_DIR,
    PROJECTS_DIR,
    launcher_parameters,
    lock_libraries,
    pack_client,
    pack_tree,
    submit_body,
    write_launcher,
)
from reprorun.backends.heartbeat import interval as heartbeat_interval
from reprorun.backends.heartbeat import metrics_interval
from reprorun.errors import ExecutionError, UserInputError
from reprorun.tracking.entities import Run, RunStatus
from reprorun.tracking.store.base import TrackingStore

# The tags MLflow's databricks backend sets on a project run (mlflow/utils/mlflow_tags.py).
RUN_URL_TAG = "mlflow.databricks.runURL"
SHELL_JOB_RUN_ID_TAG = "mlflow.databricks.shellJobRunID"
SHELL_JOB_ID_TAG = "mlflow.databricks.shellJobID"
WEBAPP_URL_TAG = "mlflow.databricks.webappURL"


def create(config: Mapping[str, Any], source: str) -> Backend:
    options = read_config(config, source)
    # Checked now, so a run is never created that cannot be submitted.
    return DatabricksBackend(options, credentials(options.profile))


class DatabricksBackend(Backend):
    name = "databricks"
    remote = True
    shares_filesystem = False  # the cluster gets a copy of the project; it logs over HTTP

    def __init__(self, config: DatabricksBackendConfig, creds: Credentials):
        self.config = config
        self.tracking_uri = config.tracking_uri
        self.api = WorkspaceApi(creds)

    def _submit(self, spec: LaunchSpec) -> SubmittedRun:
        libraries = [*self.config.libraries, *lock_libraries(spec.lock_text)]
        api = self.api
        projects = PROJECTS_DIR.format(experiment_id=spec.experiment_id)
        project = api.publish(
            projects, ".tar.gz", lambda out: pack_tree(spec.root, out, ARCHIVE_ROOT)
        )
        client = api.publish(CLIENT_DIR, ".tar.gz", pack_client)
        launcher = api.publish(LAUNCHER_DIR, ".py", write_launcher)
        env = {**self.config.env_vars, **spec.job_env}  # the run's own variables win
        parameters = launcher_parameters(
            project,
            client,
            spec.subdirectory,
            spec.command,
            env,
            heartbeat_interval(),
            metrics_interval(spec),
        )
        body = submit_body(self.config, spec, launcher, parameters, libraries)
        answer = api.call("POST", f"{JOBS_API}/runs/submit", body, what="runs/submit")
        if "run_id" not in answer:
            raise ExecutionError(f"{api.host} answered runs/submit without a run_id: {answer}")
        job = DatabricksJob(
            api,
            spec.run_id,
            str(answer["run_id"]),
            spec.store,
            spec.artifact_uri,
            _server_uri(spec.store),
        )
        tags = {SHELL_JOB_RUN_ID_TAG: job.job_id, WEBAPP_URL_TAG: api.host}
        try:
            info = job.info()
        except ExecutionError:
            info = None  # the run is submitted: its page is a nicety, not a reason to fail
        if info:
            if info.get("run_page_url"):
                job.job_url = str(info["run_page_url"])
                tags[RUN_URL_TAG] = job.job_url
            if info.get("job_id") is not None:
                tags[SHELL_JOB_ID_TAG] = str(info["job_id"])
        spec.store.set_tags(spec.run_id, tags)
        # Waiting for its cluster until Databricks runs it; following the job moves it on.
        spec.store.update_run(
            spec.run_id, status=RunStatus.SCHEDULED, only_if_status=RunStatus.RUNNING
        )
        return job

    def attach(self, run: Run, store: TrackingStore) -> SubmittedRun:
        tags = run.data.tags
        job_id = tags.get(JOB_ID_TAG, "")
        if not job_id and not run.info.status.is_terminal:
            raise ExecutionError(
                f"Run {run.info.run_id} has no Databricks run id yet (tag {JOB_ID_TAG}): it "
                "is being submitted, or its submitter died before Databricks answered."
            )
        workspace = tags.get(WEBAPP_URL_TAG, "").rstrip("/")
        if job_id and workspace and workspace != self.api.host:
            raise UserInputError(
                f"Run {run.info.run_id} runs in the Databricks workspace {workspace}, but the "
                f"credentials found ({self.api.source}) are for {self.api.host}: set "
                "DATABRICKS_HOST and DATABRICKS_TOKEN (or DATABRICKS_CONFIG_PROFILE) for that "
                "workspace."
            )
        job = DatabricksJob(
            self.api, run.info.run_id, job_id, store, run.info.artifact_uri, _server_uri(store)
        )
        job.job_url = tags.get(JOB_URL_TAG) or tags.get(RUN_URL_TAG)
        return job


def _server_uri(store: TrackingStore) -> str | None:
    """The tracking server keeping the run's artifacts, when the store is one."""
    uri = getattr(store, "uri", None)
    return uri if isinstance(uri, str) and uri.startswith(("http://", "https://")) else None
