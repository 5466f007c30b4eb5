"""The kubernetes backend: ``create`` (its entry point) checks the options, the template and
the cluster's access before any work; a submission builds the run's image and creates the Job."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
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
from reprorun.backends.heartbeat import metrics_interval
from reprorun.backends.kubernetes.api import Cluster, connect
from reprorun.backends.kubernetes.job import KubernetesJob
from reprorun.backends.kubernetes.manifest import dns_label, job_manifest, job_name, keep_manifest
from reprorun.backends.kubernetes.options import (
    NAME,
    KubernetesBackendConfig,
    check_repository_uri,
    check_template,
    check_with_client,
    client_module,
    load_template,
)
from reprorun.envs.image import CODE_DIR, build_image, image_tag
from reprorun.errors import ExecutionError, UserInputError
from reprorun.tracking.entities import Run, RunStatus
from reprorun.tracking.store.base import TrackingStore

# MLflow's tags for the image a kubernetes run used.
IMAGE_URI_TAG = "mlflow.docker.image.uri"
IMAGE_ID_TAG = "mlflow.docker.image.id"
MAX_CONFIG_TAG = 8000  # a tag's longest value


def create(config: Mapping[str, Any], source: str) -> Backend:
    """The backend, with its options, template and cluster access checked."""
    options = parse_options(NAME, KubernetesBackendConfig, config, source)
    tracking_options(options.tracking_uri, options.env_vars)
    where = f"Backend config {source}: " if source else "Backend config: "
    check_repository_uri(options.repository_uri, where)
    template, path = load_template(options, source, where)
    template_where = f"Job template {path}: " if path else f"{where}kube-job-template: "
    check_template(template, template_where)
    client = client_module()
    check_with_client(template, template_where, client)
    options = dataclasses.replace(options, kube_job_template=template, kube_job_template_path=path)
    return KubernetesBackend(options, connect(options.kube_context, client))


class KubernetesBackend(Backend):
    name = NAME
    remote = True
    shares_filesystem = False

    def __init__(self, config: KubernetesBackendConfig, cluster: Cluster):
        self.config = config
        self.cluster = cluster
        # MLflow's variable for the tracking URI its kubernetes jobs get.
        self.tracking_uri = config.tracking_uri or os.environ.get("KUBE_MLFLOW_TRACKING_URI")

    def check_env(self, env_manager: str) -> None:
        if env_manager != "docker":
            raise UserInputError(
                "The kubernetes backend runs the project in an image built from its "
                "docker_env (as MLflow does): give the MLproject a docker_env (image: ...) "
                f"and run it with --env-manager docker (its default), not {env_manager}."
            )

    def options_json(self) -> str:
        """The options under their config keys, the template included (so ``attach`` needs
        no file); without it if that does not fit in a tag."""
        data = {
            f.metadata.get("key", f.name): getattr(self.config, f.name)
            for f in dataclasses.fields(self.config)
        }
        text = json.dumps(data, default=str)
        if len(text) > MAX_CONFIG_TAG and self.config.kube_job_template_path:
            text = json.dumps({**data, "kube-job-template": None}, default=str)
        return text

    def _submit(self, spec: LaunchSpec) -> SubmittedRun:
        if not spec.docker_image:
            raise ExecutionError(
                "The kubernetes backend needs the project's docker_env image to build the "
                "job's image from."
            )
        template = self.config.kube_job_template
        assert template is not None  # create() loaded it
        project = spec.project_name or spec.cwd.name
        name = job_name(project, spec.run_id)
        namespace = str((template.get("metadata") or {}).get("namespace") or "")
        namespace = namespace or self.cluster.namespace
        workdir = f"{CODE_DIR}/{spec.subdirectory}" if spec.subdirectory else CODE_DIR

        def manifest_for(image: str) -> dict[str, Any]:
            manifest = job_manifest(
                template,
                name=name,
                container=dns_label(project),
                image=image,
                command=spec.command,
                workdir=workdir,
                env={**self.config.env_vars, **spec.job_env},
                namespace=namespace,
                heartbeat=heartbeat_interval(),
                metrics=metrics_interval(spec),
            )
            return with_deadline(manifest, spec.timeout_seconds)  # --timeout

        # The API's own checks (namespace, permissions, quota, fields) before minutes of build.
        tag = image_tag(self.config.repository_uri, spec.run_id)
        self.cluster.create_job(namespace, manifest_for(tag), dry_run=True)
        image = build_image(
            spec.root, spec.docker_image, self.config.repository_uri, spec.run_id, self.config.push
        )
        spec.store.set_tags(spec.run_id, {IMAGE_URI_TAG: image.tag, IMAGE_ID_TAG: image.image_id})
        manifest = manifest_for(image.reference)
        keep_manifest(spec.artifact_dir, manifest)
        self.cluster.create_job(namespace, manifest)
        # Pending until a node runs its pod; following the job moves the run to RUNNING.
        spec.store.update_run(
            spec.run_id, status=RunStatus.SCHEDULED, only_if_status=RunStatus.RUNNING
        )
        return KubernetesJob(
            spec.run_id,
            f"{namespace}/{name}",
            spec.store,
            spec.artifact_uri,
            self.cluster,
            _server_uri(spec.store),
        )

    def attach(self, run: Run, store: TrackingStore) -> SubmittedRun:
        job_id = run.data.tags.get(JOB_ID_TAG, "")
        if "/" not in job_id and not run.info.status.is_terminal:
            raise ExecutionError(
                f"Run {run.info.run_id} has no Kubernetes job yet (tag {JOB_ID_TAG}): its "
                "image is being built or the job submitted, or its submitter stopped before "
                "the job was created."
            )
        return KubernetesJob(
            run.info.run_id, job_id, store, run.info.artifact_uri, self.cluster, _server_uri(store)
        )


def with_deadline(manifest: dict[str, Any], seconds: float | None) -> dict[str, Any]:
    """``--timeout`` as the Job's ``activeDeadlineSeconds`` (whole seconds, rounded up), when
    shorter than the template's own: Kubernetes then fails the Job with DeadlineExceeded.
    The deadline counts from the Job's start, pending pods included."""
    if seconds:
        spec = manifest.setdefault("spec", {})
        own = spec.get("activeDeadlineSeconds")
        limit = max(1, math.ceil(seconds))
        if not isinstance(own, int) or limit < own:
            spec["activeDeadlineSeconds"] = limit
    return manifest


def _server_uri(store: TrackingStore) -> str | None:
    """The tracking server keeping the run's artifacts, when the store is one."""
    uri = getattr(store, "uri", None)
    return uri if isinstance(uri, str) and uri.startswith(("http://", "https://")) else None
