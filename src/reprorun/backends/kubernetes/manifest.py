"""The Job reprorun creates: its name, and the user's template with the run filled in."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reprorun.backends.heartbeat import wrapped

MANIFEST_ARTIFACT = "kubernetes/job.yaml"  # the Job as submitted, kept with the run


def dns_label(text: str, limit: int = 63) -> str:
    """``text`` as a DNS-1123 label (Kubernetes names): lowercase letters, digits and '-'."""
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower())
    label = re.sub(r"-{2,}", "-", label).strip("-")[:limit].rstrip("-")
    return label or "reprorun"


def job_name(project_name: str, run_id: str) -> str:
    """``<project>-<run id>``, at most 63 characters (the Job's pods carry it as a label)."""
    run = dns_label(run_id, 40)
    return f"{dns_label(project_name, 62 - len(run))}-{run}"


def pod_spec(template: Mapping[str, Any]) -> dict[str, Any] | None:
    spec = template.get("spec")
    pod_template = spec.get("template") if isinstance(spec, dict) else None
    pod = pod_template.get("spec") if isinstance(pod_template, dict) else None
    return pod if isinstance(pod, dict) else None


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
    heartbeat: float | None = None,
    metrics: float | None = None,
) -> dict[str, Any]:
    """The Job to create: the template (left as it is) with its name and namespace, and its
    first container's name, image, command, working folder and the run's variables filled
    in. Template variables the run sets are replaced; strings in ``env`` (MLflow's example
    has a placeholder there) are dropped. ``heartbeat``: the command runs under the heartbeat
    wrapper, a beat (and the log so far) every that many seconds; ``metrics``: its samples of
    the system metrics every that many seconds (None: off)."""
    manifest: dict[str, Any] = copy.deepcopy(dict(template))
    metadata = manifest.get("metadata") or {}
    metadata["name"] = name
    metadata["namespace"] = namespace
    manifest["metadata"] = metadata
    pod = pod_spec(manifest)
    assert pod is not None  # check_template made sure
    pod.setdefault("restartPolicy", "Never")  # the pod API's default (Always) is no Job's
    first = pod["containers"][0]
    first["name"] = container
    first["image"] = image
    # Kubernetes expands $(VAR) and turns $$ into $ in command and env values: "$$" keeps a
    # "$" as it is, so bash gets the command exactly as the run rendered it.
    if heartbeat is not None:
        # bash then runs the wrapper (or the command)
        command = wrapped(command, heartbeat, metrics=metrics)
    first["command"] = ["bash", "-c", _literal(command)]  # shell syntax, as every run's
    first["workingDir"] = workdir
    kept = [e for e in first.get("env") or [] if isinstance(e, dict) and e.get("name") not in env]
    first["env"] = kept + [{"name": key, "value": _literal(value)} for key, value in env.items()]
    return manifest


def _literal(text: str) -> str:
    """``text`` as Kubernetes passes it on unexpanded (``$`` written ``$$``)."""
    return text.replace("$", "$$")


def keep_manifest(artifact_dir: Path, manifest: Mapping[str, Any]) -> None:
    """The Job as submitted, with the run's artifacts (``kubectl apply -f`` can rerun it)."""
    import yaml

    path = artifact_dir / MANIFEST_ARTIFACT
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(manifest), sort_keys=False), encoding="utf-8")
