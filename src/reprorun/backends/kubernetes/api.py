"""The cluster's API, through the ``kubernetes`` client: connecting (kubeconfig or in-cluster)
and the few calls the backend makes, with errors that say what to do."""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from reprorun.backends.kubernetes.options import client_problems
from reprorun.errors import ExecutionError, UserInputError

API_TIMEOUT = 30.0  # seconds for one request to the Kubernetes API

T = TypeVar("T")


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
                f"The kubernetes client refused to {what}: {client_problems(exc)}"
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
