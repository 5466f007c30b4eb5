"""Run the command as a Kubernetes Job, the way MLflow's kubernetes backend does.

The backend config has MLflow's keys: ``repository-uri``, ``kube-job-template-path`` and the
optional ``kube-context``. At submission the project's docker_env image, with the project
copied in (and reprorun's in-run client), is built with ``docker build`` and pushed to
``repository-uri``; a Job made from the user's template runs it: reprorun fills in the Job's
name, the first container's name, image (pinned by digest), command, working folder and the
run's environment variables, and keeps everything else. The Job's status gives the run's, its
pods' logs become the run's log, and cancelling deletes the Job (its pods go with it).

The ``kubernetes`` client is an optional dependency, imported only here.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

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

NAME = "kubernetes"
INSTALL_HINT = "pip install 'reprorun[kubernetes]'"
CODE_DIR = "/mlflow/projects/code"  # where MLflow's project image holds the project
CLIENT_DIR = "/opt/reprorun-client"  # reprorun's in-run client, as in docker_env runs
MANIFEST_ARTIFACT = "kubernetes/job.yaml"  # the Job as submitted, kept with the run
# MLflow's tags for the image a kubernetes run used.
IMAGE_URI_TAG = "mlflow.docker.image.uri"
IMAGE_ID_TAG = "mlflow.docker.image.id"
API_TIMEOUT = 30.0  # seconds for one request to the Kubernetes API
DOCKER_TIMEOUT = 3600.0  # seconds for a docker build or push
MAX_CONFIG_TAG = 8000  # a tag's longest value

T = TypeVar("T")


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


def client_module() -> ModuleType:
    """``kubernetes.client``, or an error saying how to install it."""
    try:
        return importlib.import_module("kubernetes.client")
    except ImportError as exc:
        raise UserInputError(
            f"The kubernetes backend needs the kubernetes Python client ({exc}): {INSTALL_HINT}."
        ) from exc


# --- options and the job template ---------------------------------------------------------


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
    pod = _pod_spec(template)
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


def _pod_spec(template: Mapping[str, Any]) -> dict[str, Any] | None:
    spec = template.get("spec")
    pod_template = spec.get("template") if isinstance(spec, dict) else None
    pod = pod_template.get("spec") if isinstance(pod_template, dict) else None
    return pod if isinstance(pod, dict) else None


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
            f"{where}the kubernetes client refuses this Job: {_problems(exc)}"
        ) from None


def _problems(exc: ValueError) -> str:
    """A pydantic ValidationError's problems, one ``field: message`` each."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors())


# --- names, the image, the manifest -------------------------------------------------------


def dns_label(text: str, limit: int = 63) -> str:
    """``text`` as a DNS-1123 label (Kubernetes names): lowercase letters, digits and '-'."""
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower())
    label = re.sub(r"-{2,}", "-", label).strip("-")[:limit].rstrip("-")
    return label or "reprorun"


def job_name(project_name: str, run_id: str) -> str:
    """``<project>-<run id>``, at most 63 characters (the Job's pods carry it as a label)."""
    run = dns_label(run_id, 40)
    return f"{dns_label(project_name, 62 - len(run))}-{run}"


def image_tag(repository_uri: str, run_id: str) -> str:
    return f"{repository_uri}:{re.sub(r'[^A-Za-z0-9_.-]', '-', run_id)[:128]}"


def dockerfile(base_image: str) -> str:
    """The run's image: the project's docker_env image with the project and the client in it."""
    return (
        "# Written by reprorun: the project's docker_env image, with the project in it.\n"
        f"FROM {base_image}\n"
        f"COPY reprorun-client/ {CLIENT_DIR}/\n"
        f"COPY project/ {CODE_DIR}/\n"
        f"WORKDIR {CODE_DIR}\n"
        f"ENV PYTHONPATH={CLIENT_DIR}${{PYTHONPATH:+:$PYTHONPATH}} PYTHONUNBUFFERED=1\n"
    )


def write_build_context(dest: Path, root: Path, base_image: str, client_dir: Path) -> Path:
    """Fill ``dest`` with the image's build context: Dockerfile, ``project/`` (the shipped
    tree without .git) and ``reprorun-client/``."""
    shutil.copytree(root, dest / "project", symlinks=True, ignore=shutil.ignore_patterns(".git"))
    shutil.copytree(
        client_dir,
        dest / "reprorun-client",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    (dest / "Dockerfile").write_text(dockerfile(base_image), encoding="utf-8")
    return dest


def build_argv(context: Path, tag: str) -> list[str]:
    return ["docker", "build", "--tag", tag, str(context)]


def push_argv(tag: str) -> list[str]:
    return ["docker", "push", tag]


def inspect_argv(tag: str, template: str) -> list[str]:
    return ["docker", "image", "inspect", "--format", template, tag]


@dataclass(frozen=True)
class Image:
    tag: str  # <repository-uri>:<run id>
    reference: str  # what the pod runs: <tag>@<digest> once pushed (as MLflow), else the tag
    image_id: str  # the registry digest once pushed, else the local image id


def repo_digest(repo_digests: Sequence[str], repository_uri: str) -> str | None:
    """The digest the registry gave the pushed image, from ``docker image inspect``'s
    RepoDigests (Docker Hub names are shown without ``docker.io/`` and ``library/``)."""

    def short(name: str) -> str:
        return name.removeprefix("docker.io/").removeprefix("library/")

    pairs = [entry.partition("@")[::2] for entry in repo_digests]
    for name, digest in pairs:
        if short(name) == short(repository_uri):
            return digest
    return pairs[0][1] if len(pairs) == 1 else None


def build_image(root: Path, base_image: str, repository_uri: str, run_id: str, push: bool) -> Image:
    """``docker build`` the run's image (and ``docker push`` it): the engine and registry
    credentials are whatever the docker command uses here (DOCKER_HOST, docker login)."""
    from reprorun.envs.client import client_root

    tag = image_tag(repository_uri, run_id)
    with tempfile.TemporaryDirectory(prefix="reprorun-kubernetes-") as tmp:
        context = write_build_context(Path(tmp), root, base_image, client_root())
        _docker(build_argv(context, tag), f"build the job's image {tag} from {base_image}")
    if not push:
        image_id = _docker(inspect_argv(tag, "{{.Id}}"), f"inspect the image {tag}").strip()
        return Image(tag, tag, image_id)
    _docker(
        push_argv(tag),
        f"push the job's image {tag}",
        "Log in to the registry (docker login), check repository-uri, or set push: false "
        "when the cluster runs this Docker engine's images (kind, minikube, Docker Desktop).",
    )
    out = _docker(inspect_argv(tag, "{{json .RepoDigests}}"), f"inspect the image {tag}")
    try:
        digests = json.loads(out or "null") or []
    except ValueError:
        digests = []
    digest = repo_digest(digests, repository_uri)
    if digest is None:
        raise ExecutionError(
            f"docker push {tag} left no registry digest to pin the job's image to "
            f"(RepoDigests: {out.strip() or 'none'})."
        )
    return Image(tag, f"{tag}@{digest}", digest)


def _docker(argv: list[str], what: str, hint: str = "") -> str:
    binary = shutil.which("docker")
    if binary is None:
        raise ExecutionError(
            "The kubernetes backend builds the job's image with the docker command, which is "
            "not installed here."
        )
    try:
        done = subprocess.run(
            [binary, *argv[1:]],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=DOCKER_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise ExecutionError(
            f"Could not {what}: `{' '.join(argv[:3])} ...` took more than {DOCKER_TIMEOUT:.0f} s."
        ) from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
        raise ExecutionError(
            f"Could not {what}: `{' '.join(argv)}` exited with code {done.returncode}:\n{tail}"
            + (f"\n{hint}" if hint else "")
        )
    return done.stdout


def job_manifest(
    template: Mapping[str, Any],
    *,
    name: str,
    container: str,
    image: str,
    command: str,
    workdir: str,
    env: Mapping[str, str],
    namespace: str,
) -> dict[str, Any]:
    """The Job to create: the template (left as it is) with its name and namespace, and its
    first container's name, image, command, working folder and the run's variables filled
    in. Template variables the run sets are replaced; strings in ``env`` (MLflow's example
    has a placeholder there) are dropped."""
    manifest: dict[str, Any] = copy.deepcopy(dict(template))
    metadata = manifest.get("metadata") or {}
    metadata["name"] = name
    metadata["namespace"] = namespace
    manifest["metadata"] = metadata
    pod = _pod_spec(manifest)
    assert pod is not None  # check_template made sure
    pod.setdefault("restartPolicy", "Never")  # the pod API's default (Always) is no Job's
    first = pod["containers"][0]
    first["name"] = container
    first["image"] = image
    # Kubernetes expands $(VAR) and turns $$ into $ in command and env values: "$$" keeps a
    # "$" as it is, so bash gets the command exactly as the run rendered it.
    first["command"] = ["bash", "-c", _literal(command)]  # shell syntax, as every run's
    first["workingDir"] = workdir
    kept = [e for e in first.get("env") or [] if isinstance(e, dict) and e.get("name") not in env]
    first["env"] = kept + [{"name": key, "value": _literal(value)} for key, value in env.items()]
    return manifest


def _literal(text: str) -> str:
    """``text`` as Kubernetes passes it on unexpanded (``$`` written ``$$``)."""
    return text.replace("$", "$$")


# --- the backend ---------------------------------------------------------------------------


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
            return job_manifest(
                template,
                name=name,
                container=dns_label(project),
                image=image,
                command=spec.command,
                workdir=workdir,
                env={**self.config.env_vars, **spec.job_env},
                namespace=namespace,
            )

        # The API's own checks (namespace, permissions, quota, fields) before minutes of build.
        tag = image_tag(self.config.repository_uri, spec.run_id)
        self.cluster.create_job(namespace, manifest_for(tag), dry_run=True)
        image = build_image(
            spec.root, spec.docker_image, self.config.repository_uri, spec.run_id, self.config.push
        )
        spec.store.set_tags(spec.run_id, {IMAGE_URI_TAG: image.tag, IMAGE_ID_TAG: image.image_id})
        manifest = manifest_for(image.reference)
        _keep_manifest(spec.artifact_dir, manifest)
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


def _keep_manifest(artifact_dir: Path, manifest: Mapping[str, Any]) -> None:
    """The Job as submitted, with the run's artifacts (``kubectl apply -f`` can rerun it)."""
    import yaml

    path = artifact_dir / MANIFEST_ARTIFACT
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(manifest), sort_keys=False), encoding="utf-8")


def _server_uri(store: TrackingStore) -> str | None:
    """The tracking server keeping the run's artifacts, when the store is one."""
    uri = getattr(store, "uri", None)
    return uri if isinstance(uri, str) and uri.startswith(("http://", "https://")) else None


# --- the cluster ---------------------------------------------------------------------------


def connect(context: str | None, client: ModuleType) -> Cluster:
    """The API of ``context`` in the kubeconfig (KUBECONFIG, else ~/.kube/config), else of
    its current context, else the pod's own service account (in-cluster)."""
    config = importlib.import_module("kubernetes.config")
    files = os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())
    present = [p for p in files.split(os.pathsep) if p and Path(p).expanduser().is_file()]
    configuration = client.Configuration()
    if present:
        kubeconfig = os.pathsep.join(present)
        try:
            contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
            names = [c["name"] for c in contexts]
            chosen = context or (active or {}).get("name")
            if chosen not in names:
                which = f"kube-context {context!r}" if context else "the current context"
                raise UserInputError(
                    f"The kubeconfig {kubeconfig} has no {which}; its contexts: "
                    f"{', '.join(names) or 'none'}. Set kube-context in the backend config."
                )
            config.load_kube_config(
                config_file=kubeconfig, context=chosen, client_configuration=configuration
            )
        except (config.ConfigException, OSError, ValueError, TypeError, KeyError) as exc:
            raise UserInputError(
                f"Cannot use the kubeconfig {kubeconfig} (kube-context {context or 'current'}): "
                f"{exc}"
            ) from exc
        found = next(c for c in contexts if c["name"] == chosen)
        namespace = (found.get("context") or {}).get("namespace") or "default"
        where = f"kube-context {chosen}"
    else:
        if context:
            raise UserInputError(
                f"kube-context {context!r} needs a kubeconfig, and there is none at {files} "
                "(set KUBECONFIG)."
            )
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException as exc:
            raise UserInputError(
                f"No Kubernetes cluster to submit to: no kubeconfig at {files}, and this is "
                f"not a pod with a service account ({exc}). Set KUBECONFIG, or kube-context in "
                "the backend config."
            ) from exc
        namespace = _pod_namespace()
        where = "in-cluster service account"
    return Cluster(client, client.ApiClient(configuration=configuration), namespace, where)


def _pod_namespace() -> str:
    try:
        return Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read_text().strip()
    except OSError:
        return "default"


class Cluster:
    """The few calls the backend makes, with the client's errors turned into reprorun's."""

    def __init__(self, client: ModuleType, api: Any, namespace: str, where: str):
        self.client = client
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)
        self.namespace = namespace  # for templates that name none
        self.host = str(api.configuration.host)
        self.where = where  # which context, for messages

    def _call(self, what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return call(*args, _request_timeout=API_TIMEOUT, **kwargs)
        except self.client.ApiException as exc:
            raise ExecutionError(
                f"The Kubernetes API at {self.host} ({self.where}) refused to {what}: "
                f"{exc.status} {exc.reason}: {_api_message(exc)}"
            ) from exc
        except ValueError as exc:  # the client's own check of a request (pydantic)
            raise ExecutionError(
                f"The kubernetes client refused to {what}: {_problems(exc)}"
            ) from exc
        except Exception as exc:  # urllib3's connection, timeout and protocol errors
            if type(exc).__module__.startswith("urllib3"):
                raise ExecutionError(
                    f"Cannot reach the Kubernetes API at {self.host} ({self.where}) to {what}: "
                    f"{exc}"
                ) from exc
            raise

    def _absent(self, exc: ExecutionError) -> bool:
        cause = exc.__cause__
        return isinstance(cause, self.client.ApiException) and cause.status == 404

    def create_job(
        self, namespace: str, manifest: Mapping[str, Any], dry_run: bool = False
    ) -> None:
        """Create the job; unknown fields are errors, as with kubectl (not silently dropped).
        ``dry_run``: only have the API check it."""
        name = manifest["metadata"]["name"]
        what = f"create job {name} in namespace {namespace}"
        self._call(
            f"{what} (a dry run, before building the image)" if dry_run else what,
            self.batch.create_namespaced_job,
            namespace,
            dict(manifest),
            field_validation="Strict",
            **({"dry_run": "All"} if dry_run else {}),
        )

    def read_job(self, namespace: str, name: str) -> Any | None:
        """The job, or None when the API no longer knows it."""
        try:
            return self._call(
                f"read job {namespace}/{name}", self.batch.read_namespaced_job, name, namespace
            )
        except ExecutionError as exc:
            if self._absent(exc):
                return None
            raise

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete the job; its pods go too (in the background, as ``kubectl delete job``)."""
        try:
            self._call(
                f"delete job {namespace}/{name}",
                self.batch.delete_namespaced_job,
                name,
                namespace,
                propagation_policy="Background",
            )
        except ExecutionError as exc:
            if not self._absent(exc):
                raise

    def pods(self, namespace: str, name: str) -> list[Any]:
        """The job's pods, oldest first (one per attempt)."""
        found = self._call(
            f"list the pods of job {namespace}/{name}",
            self.core.list_namespaced_pod,
            namespace,
            label_selector=f"job-name={name}",
        )
        return sorted(found.items or [], key=_created)

    def pod_log(self, namespace: str, pod: str, container: str | None) -> bytes | None:
        """The container's output, or None while it has not started (or once it is gone)."""
        try:
            response = self._call(
                f"read the log of pod {namespace}/{pod}",
                self.core.read_namespaced_pod_log,
                pod,
                namespace,
                container=container,
                _preload_content=False,  # the bytes as they are, not decoded and re-encoded
            )
        except ExecutionError as exc:
            cause = exc.__cause__
            if isinstance(cause, self.client.ApiException) and cause.status in (400, 404):
                return None
            raise
        data: bytes = response.data
        return data


def _created(pod: Any) -> float:
    created = pod.metadata.creation_timestamp if pod.metadata else None
    return float(created.timestamp()) if created is not None else 0.0


def _api_message(exc: Any) -> str:
    """The ``message`` of the API's Status answer, else its body as it is."""
    body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else exc.body
    try:
        message = json.loads(body or "").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or body or "no details")


# --- following the job ---------------------------------------------------------------------


def job_state(job: Any, pods: Sequence[Any]) -> JobState:
    """The run's status from the Job (its conditions Complete/Failed, its ready pods) and
    its pods (Running, or still Pending: SCHEDULED), with the container's exit code."""
    meta, status = job.metadata, job.status
    name = f"{meta.namespace}/{meta.name}"
    code, detail = _exit(pods)
    for condition in (status.conditions if status else None) or []:
        if condition.status != "True":
            continue
        if condition.type == "Complete":
            return JobState(RunStatus.FINISHED, None, code)
        if condition.type == "Failed":
            reason = f"Kubernetes job {name} failed: {condition.reason or 'Failed'}"
            if condition.message:
                reason += f" ({condition.message})"
            if detail:
                reason += f"; {detail}"
            return JobState(RunStatus.FAILED, reason, code)
    if meta.deletion_timestamp is not None:
        return JobState(RunStatus.KILLED, f"Kubernetes job {name} is being deleted")
    running = any(p.status is not None and p.status.phase == "Running" for p in pods)
    if (status is not None and status.ready) or running:
        return JobState(RunStatus.RUNNING)
    return JobState(RunStatus.SCHEDULED)  # pods pending: scheduling, pulling the image


def _exit(pods: Sequence[Any]) -> tuple[int | None, str | None]:
    """The exit code of the last attempt's project container, and what happened to it."""
    for pod in reversed(pods):
        name = pod.metadata.name if pod.metadata else "?"
        containers = pod.spec.containers if pod.spec else None
        ours = containers[0].name if containers else None
        for cs in (pod.status.container_statuses if pod.status else None) or []:
            ended = cs.state.terminated if cs.state else None
            if cs.name == ours and ended is not None:
                why = ended.reason or "exited"
                if ended.message:
                    why += f": {ended.message.strip()}"
                return ended.exit_code, f"pod {name}: exit code {ended.exit_code} ({why})"
        if pod.status is not None and pod.status.reason:
            return None, f"pod {name}: {pod.status.reason} ({pod.status.message or ''})"
    return None, None


class KubernetesJob(RemoteJob):
    backend = NAME
    poll_seconds = 2.0

    def __init__(
        self,
        run_id: str,
        job_id: str,
        store: TrackingStore,
        artifact_uri: str,
        cluster: Cluster,
        tracking_uri: str | None = None,
    ):
        super().__init__(run_id, job_id, store, artifact_uri, tracking_uri)
        self.namespace, _, self.name = job_id.partition("/")
        self.cluster = cluster
        self._deleted = False  # by us: a job that vanishes after that was stopped, not lost
        self._last_log: bytes | None = None  # read just before deleting the job

    def _state(self) -> JobState:
        job = self.cluster.read_job(self.namespace, self.name)
        if job is None:
            if self._deleted:
                return JobState(RunStatus.KILLED)
            return JobState(
                RunStatus.FAILED,
                f"Kubernetes job {self.job_id} no longer exists: it was deleted (kubectl "
                "delete, or ttlSecondsAfterFinished) before reprorun saw it end.",
            )
        state = job_state(job, self.cluster.pods(self.namespace, self.name))
        if state.status is RunStatus.KILLED and self._deleted:
            return JobState(RunStatus.KILLED)
        return state

    def _read_log(self) -> bytes:
        if not self.name:
            return b""
        chunks: list[bytes] = []
        for attempt, pod in enumerate(self.cluster.pods(self.namespace, self.name), start=1):
            containers = pod.spec.containers if pod.spec else None
            text = self.cluster.pod_log(
                self.namespace, pod.metadata.name, containers[0].name if containers else None
            )
            if text is None:
                continue
            if attempt > 1:  # a retry (backoffLimit): the earlier output stays a prefix
                chunks.append(
                    f"\n[reprorun] pod {pod.metadata.name}, attempt {attempt}:\n".encode()
                )
            chunks.append(text)
        live = b"".join(chunks)
        if self._last_log is not None and len(self._last_log) > len(live):
            return self._last_log  # the pods went with the job
        return live

    def _stop(self) -> None:
        with contextlib.suppress(ExecutionError):  # the log is worth keeping, not required
            self._last_log = self._read_log()
        self._deleted = True
        self.cluster.delete_job(self.namespace, self.name)
