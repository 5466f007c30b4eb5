"""What environment a project declares (MLproject's ``python_env``, ``conda_env`` or
``docker_env``), as the environments layer reads it.

The MLproject parser (``reprorun.projects.spec``) builds these; environment managers take any
object with a ``directory`` and an ``env`` (``ProjectFiles``), so this layer never imports the
projects layer above it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class DockerEnv:
    image: str
    volumes: tuple[str, ...] = ()
    # (name, value); value None means "copy from the host"
    environment: tuple[tuple[str, str | None], ...] = ()


@dataclass(frozen=True)
class EnvSpec:
    """Which environment the project declares; read by the environments layer."""

    kind: str | None = None  # "python_env" | "conda_env" | "docker_env" | None
    path: Path | None = None  # the python_env / conda file, absolute
    docker: DockerEnv | None = None


class ProjectFiles(Protocol):
    """The part of a project an environment manager reads: its folder and what it declares."""

    @property
    def directory(self) -> Path: ...

    @property
    def env(self) -> EnvSpec: ...
