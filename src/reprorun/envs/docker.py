"""MLflow's docker_env: the command runs in a container of the project's image.

The image must be present locally or pullable; the engine is whatever ``docker`` talks to
(DOCKER_HOST). The run's working folder, the tracking store's folder and reprorun's client
are mounted at the same paths, so the code inside logs to the same run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from reprorun.envs.base import EnvManager, PreparedEnv, Progress
from reprorun.envs.client import client_root
from reprorun.envs.declared import DockerEnv, ProjectFiles
from reprorun.errors import ExecutionError, UserInputError

CLIENT_MOUNT = "/opt/reprorun-client"
_EVENT_WAIT = 2.0  # seconds the engine gets to report a container's OOM kill


def _docker(args: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker")
    if binary is None:
        raise UserInputError(
            "--env-manager docker needs the docker command, which is not installed."
        )
    try:
        return subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise ExecutionError(f"docker {args[0]} did not answer within {timeout:.0f} s.") from exc


class DockerEnvManager(EnvManager):
    name = "docker"

    def _prepare(self, project: ProjectFiles, progress: Progress, lock: Path | None) -> PreparedEnv:
        docker = project.env.docker
        if docker is None:
            raise UserInputError(
                "--env-manager docker needs a docker_env (image, volumes, environment) in the "
                "project's MLproject."
            )
        host = os.environ.get("DOCKER_HOST", "the default socket")
        advice = "Start one (or set DOCKER_HOST), or run with another --env-manager."
        try:
            engine = _docker(["version", "--format", "{{.Server.Version}}"], timeout=15)
        except ExecutionError:
            raise UserInputError(
                f"No Docker engine answers at {host}: no reply within 15 s. {advice}"
            ) from None
        if engine.returncode != 0:
            problem = engine.stderr.strip().rstrip(".")
            raise UserInputError(f"No Docker engine answers at {host}: {problem}. {advice}")
        inspect = _docker(["image", "inspect", "--format", "{{.Id}}", docker.image])
        if inspect.returncode != 0:
            progress(f"Pulling {docker.image}")
            pulled = _docker(["pull", docker.image], timeout=3600)
            if pulled.returncode != 0:
                raise UserInputError(
                    f"Docker image {docker.image!r} is not on this machine and cannot be pulled: "
                    f"{pulled.stderr.strip()}"
                )
            inspect = _docker(["image", "inspect", "--format", "{{.Id}}", docker.image])
        image_id = inspect.stdout.strip()
        return PreparedEnv(
            name=self.name,
            env_hash=image_id.removeprefix("sha256:")[:20],
            lock_text=f"# reprorun lock: docker image {docker.image} {image_id}\n",
            docker=docker,
            client_dir=client_root(),
        )


def container_name(run_id: str) -> str:
    return f"reprorun-{run_id}"


_ARG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")


def run_options(docker_args: Sequence[str]) -> list[str]:
    """``docker run`` options from MLflow's ``--docker-args`` items: ``NAME=VALUE`` gives
    ``--NAME VALUE`` (``-N VALUE`` for a one-letter name), ``NAME`` alone the flag
    ``--NAME`` (``-N``). UserInputError for a name that is not an option's."""
    argv: list[str] = []
    for item in docker_args:
        name, eq, value = item.partition("=")
        if not _ARG_NAME.fullmatch(name):
            raise UserInputError(
                f"--docker-args {item!r}: expected NAME=VALUE or NAME, where NAME is a "
                f"`docker run` option without its dashes (memory=2g, gpus=all, t)."
            )
        flag = f"-{name}" if len(name) == 1 else f"--{name}"
        argv += [flag, value] if eq else [flag]
    return argv


def oom_killed(run_id: str, since: float) -> str | None:
    """The engine's word that the run's container was OOM-killed (its ``oom`` event since
    ``since``, a Unix time), or None. Asked only when ``docker run`` ended with 137: waits up
    to ``_EVENT_WAIT`` seconds for the engine's events."""
    name = container_name(run_id)
    until = str(int(time.time() + _EVENT_WAIT))
    try:
        found = _docker(
            [
                "events",
                *("--since", str(int(since) - 1), "--until", until),
                *("--filter", f"container={name}", "--filter", "event=oom"),
                *("--format", "{{.Status}}"),
            ],
            timeout=_EVENT_WAIT + 15,
        )
    except (ExecutionError, UserInputError):
        return None
    if found.returncode != 0 or "oom" not in found.stdout.split():
        return None
    return f"the Docker engine reported an OOM kill of container {name} (its memory limit)"


def docker_argv(
    docker: DockerEnv,
    *,
    run_id: str,
    command: str,
    cwd: Path,
    env: Mapping[str, str],
    mounts: list[Path],
    client_dir: Path,
    read_only: tuple[Path, ...] = (),
    docker_args: Sequence[str] = (),
) -> list[str]:
    """``docker run`` for the command: host network (servers bind 127.0.0.1), the working
    folder and ``mounts`` at their own paths (``read_only`` ones too, read-only), reprorun's
    client on PYTHONPATH, and the options the user gave (``--docker-args``, as MLflow)."""
    argv = [
        "docker",
        "run",
        "--rm",
        "--init",
        "--network",
        "host",
        "--name",
        container_name(run_id),
        *run_options(docker_args),
    ]
    for folder in dict.fromkeys([cwd, *mounts]):
        argv += ["-v", f"{folder}:{folder}"]
    for folder in read_only:
        argv += ["-v", f"{folder}:{folder}:ro"]
    argv += ["-v", f"{client_dir}:{CLIENT_MOUNT}:ro", "-w", str(cwd)]
    for volume in docker.volumes:
        argv += ["-v", volume]
    passed = {k: v for k, v in env.items() if k.startswith(("REPRORUN_", "MLFLOW_"))}
    passed["PYTHONPATH"] = CLIENT_MOUNT
    passed["PYTHONUNBUFFERED"] = "1"
    for name, value in docker.environment:
        if value is None:
            if name in os.environ:
                passed[name] = os.environ[name]
        else:
            passed[name] = value
    if passed["PYTHONPATH"] != CLIENT_MOUNT:  # the project's own PYTHONPATH keeps the client
        passed["PYTHONPATH"] = f"{CLIENT_MOUNT}:{passed['PYTHONPATH']}"
    for name, value in passed.items():
        argv += ["-e", f"{name}={value}"]
    return [*argv, docker.image, "bash", "-c", command]


def stop_argv(run_id: str) -> list[str]:
    return ["docker", "kill", container_name(run_id)]
