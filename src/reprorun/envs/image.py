"""The image of a run that executes elsewhere (the kubernetes backend's job): the project's
docker_env image with the project and reprorun's in-run client copied in, built with ``docker
build`` and pushed to a registry, pinned by the digest the registry gave it (as MLflow does).
The engine and registry credentials are whatever the docker command uses here (DOCKER_HOST,
docker login)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from reprorun.envs.client import client_root
from reprorun.envs.docker import CLIENT_MOUNT
from reprorun.errors import ExecutionError

CODE_DIR = "/mlflow/projects/code"  # where MLflow's project image holds the project
CLIENT_DIR = CLIENT_MOUNT  # reprorun's in-run client, as in docker_env runs
DOCKER_TIMEOUT = 3600.0  # seconds for a docker build or push


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
