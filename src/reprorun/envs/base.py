"""The environment-manager interface (the registry is ``envs.registry``).

``prepare`` builds (or reuses from the cache) what the command runs in and reports exactly
what it holds (the lock). Managers: local (this interpreter), uv, virtualenv, conda, docker.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from reprorun.envs.declared import DockerEnv, ProjectFiles

Progress = Callable[[str], None]


@dataclass(frozen=True)
class PreparedEnv:
    """What a backend needs to run a command in the environment, and what to record."""

    name: str
    path_prefix: tuple[str, ...] = ()  # folders put in front of PATH
    env_vars: Mapping[str, str] = field(default_factory=dict)
    python: str | None = None  # the interpreter, when there is one
    python_version: str | None = None
    env_hash: str | None = None  # the cache key: same hash, same environment
    lock_text: str | None = None  # the exact package set (requirements.lock format)
    env_dir: Path | None = None
    docker: DockerEnv | None = None  # run the command in this container image
    client_dir: Path | None = None  # reprorun's client, for containers to mount
    release: Callable[[], None] | None = None  # call when the run no longer uses the env
    tags: Mapping[str, str] = field(default_factory=dict)  # recorded on the run
    warnings: tuple[str, ...] = ()  # accepted but worth telling (skipped conda packages, ...)


class EnvManager(abc.ABC):
    name: str

    def prepare(
        self, project: ProjectFiles, *, progress: Progress | None = None, lock: Path | None = None
    ) -> PreparedEnv:
        """Build or reuse the environment for ``project``; ``lock`` re-creates the exact
        package set of an earlier run instead of resolving the project's spec."""
        return self._prepare(project, progress or (lambda _msg: None), lock)

    @abc.abstractmethod
    def _prepare(
        self, project: ProjectFiles, progress: Progress, lock: Path | None
    ) -> PreparedEnv: ...


def default_env_manager(project: ProjectFiles) -> str:
    """uv when the project declares a Python environment, docker for docker_env, else local."""
    if project.env.kind == "docker_env":
        return "docker"
    from reprorun.envs.spec import declared_env_file

    return "uv" if declared_env_file(project) is not None else "local"
