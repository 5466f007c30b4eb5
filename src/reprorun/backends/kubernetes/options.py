"""The kubernetes backend's options (MLflow's keys ``repository-uri``,
``kube-job-template-path``, ``kube-context``, then reprorun's) and the Job template's checks."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from reprorun.backends.kubernetes.manifest import job_manifest, pod_spec
from reprorun.envs.image import CODE_DIR
from reprorun.errors import UserInputError

NAME = "kubernetes"
INSTALL_HINT = "pip install 'reprorun[kubernetes]'"


@dataclass(frozen=True)
class KubernetesBackendConfig:
    """Options of the kubernetes backend: MLflow's keys, then reprorun's common ones."""

    # Where the run's image is pushed (no tag: reprorun tags it with the run id).
    repository_uri: str = field(metadata={"key": "repository-uri"})
    # The Job template (YAML); a relative path is looked up in the current folder (as
    # MLflow does), then next to the config file.
    kube_job_template_path: str | None = field(
        default=None, metadata={"key": "kube-job-template-path"}
    )
    # A context of the kubeconfig (KUBECONFIG or ~/.kube/config); none: its current
    # context, or the pod's service account when there is no kubeconfig (in-cluster).
    kube_context: str | None = field(default=None, metadata={"key": "kube-context"})
    # The template itself instead of a file; reprorun records the one it used here.
    kube_job_template: dict[str, Any] | None = field(
        default=None, metadata={"key": "kube-job-template"}
    )
    # false: build only, for a cluster that runs this Docker engine's images (kind,
    # minikube, Docker Desktop) instead of pulling from a registry.
    push: bool = True
    tracking_uri: str | None = None
    env_vars: dict[str, str] = field(default_factory=dict)


def client_module() -> ModuleType:
    """``kubernetes.client``, or an error saying how to install it."""
    try:
        return importlib.import_module("kubernetes.client")
    except ImportError as exc:
        raise UserInputError(
            f"The kubernetes backend needs the kubernetes Python client ({exc}): {INSTALL_HINT}."
        ) from exc


def check_repository_uri(uri: str, where: str) -> None:
    """A Docker repository reprorun can add a tag to: lowercase, no tag or digest of its own."""
    last = uri.rsplit("/", 1)[-1]
    problem = None
    if not uri or any(c.isspace() for c in uri):
        problem = "an empty name or one with spaces"
    elif ":" in last or "@" in last:
        problem = "a tag or digest (reprorun tags the image with the run id)"
    elif uri != uri.lower():
        problem = "capital letters (Docker repository names are lowercase)"
    if problem:
        raise UserInputError(
            f"{where}repository-uri must be a Docker repository such as "
            f"registry.example.com/team/project, got {uri!r}: {problem}."
        )


def load_template(
    options: KubernetesBackendConfig, source: str, where: str
) -> tuple[dict[str, Any], str | None]:
    """The Job template and the file it came from (absolute), when it came from a file."""
    if options.kube_job_template is not None:
        return options.kube_job_template, options.kube_job_template_path
    given = options.kube_job_template_path
    if given is None:
        raise UserInputError(
            f"{where}the kubernetes backend needs option 'kube-job-template-path': a "
            "Kubernetes Job YAML file (MLflow's job template; see docs/backends/kubernetes.md)."
        )
    path = Path(given).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path]
    if source and not path.is_absolute():
        candidates.append(Path(source).resolve().parent / path)
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        looked = " or ".join(str(c) for c in dict.fromkeys(candidates))
        raise UserInputError(
            f"{where}kube-job-template-path {given!r}: no such file (looked for {looked})."
        )
    import yaml

    try:
        data = yaml.safe_load(found.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserInputError(f"Job template {found} cannot be read as YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise UserInputError(
            f"Job template {found}: expected a Kubernetes Job (a mapping), got "
            f"{type(data).__name__}."
        )
    return data, str(found.resolve())


def check_template(template: Mapping[str, Any], where: str) -> None:
    """A template reprorun can fill in: a batch/v1 Job with at least one container."""
    kind, api = template.get("kind"), template.get("apiVersion")
    if kind != "Job" or api != "batch/v1":
        raise UserInputError(
            f"{where}expected a Kubernetes Job (apiVersion: batch/v1, kind: Job), got "
            f"apiVersion: {api}, kind: {kind}."
        )
    if not isinstance(template.get("metadata") or {}, dict):
        raise UserInputError(f"{where}metadata must be a mapping.")
    pod = pod_spec(template)
    if pod is None:
        raise UserInputError(f"{where}expected a pod template under spec.template.spec.")
    containers = pod.get("containers")
    if not isinstance(containers, list) or not containers:
        raise UserInputError(
            f"{where}spec.template.spec.containers must list at least one container (the "
            "first one runs the project)."
        )
    if not all(isinstance(c, dict) for c in containers):
        raise UserInputError(f"{where}each of spec.template.spec.containers must be a mapping.")
    first = containers[0]
    if "args" in first:
        raise UserInputError(
            f"{where}spec.template.spec.containers[0] has args: reprorun sets this "
            "container's command to run the entry point (bash -c '<command>'), and args would "
            "be appended to it. Remove args."
        )
    if not isinstance(first.get("env") or [], list):
        raise UserInputError(f"{where}spec.template.spec.containers[0].env must be a list.")
    restart = pod.get("restartPolicy")
    if restart not in (None, "Never", "OnFailure"):
        raise UserInputError(
            f"{where}spec.template.spec.restartPolicy must be Never or OnFailure (a Job's "
            f"pods end), got {restart!r}."
        )


def check_with_client(template: Mapping[str, Any], where: str, client: ModuleType) -> None:
    """Clients that check requests against the API's schema (pydantic models, kubernetes
    v35+) refuse unknown or mistyped fields: say so now, not after the image is built."""
    model = getattr(client, "V1Job", None)
    validate = getattr(model, "model_validate", None)
    if validate is None:
        return  # older clients send the manifest as it is; the API server checks it
    sample = job_manifest(
        template,
        name="check",
        container="check",
        image="check",
        command="true",
        workdir=CODE_DIR,
        env={},
        namespace="default",
    )
    try:
        validate(sample)
    except ValueError as exc:
        raise UserInputError(
            f"{where}the kubernetes client refuses this Job: {client_problems(exc)}"
        ) from None


def client_problems(exc: ValueError) -> str:
    """A pydantic ValidationError's problems, one ``field: message`` each."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors())
