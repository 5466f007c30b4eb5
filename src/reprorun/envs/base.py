"""The environment-manager interface and its registry."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field

from reprorun.errors import UnknownNameError
from reprorun.projects.spec import Project


@dataclass(frozen=True)
class PreparedEnv:
    """What a backend needs to run a command in the environment."""

    name: str
    path_prefix: tuple[str, ...] = ()  # folders put in front of PATH
    env_vars: Mapping[str, str] = field(default_factory=dict)
    python: str | None = None  # the interpreter, when there is one


class EnvManager(abc.ABC):
    name: str

    def prepare(self, project: Project) -> PreparedEnv:
        """Build or reuse the environment for ``project``."""
        return self._prepare(project)

    @abc.abstractmethod
    def _prepare(self, project: Project) -> PreparedEnv: ...


def _local() -> EnvManager:
    from reprorun.envs.local import LocalEnvManager

    return LocalEnvManager()


# name -> factory; factories import their module only when chosen.
ENV_MANAGERS = {"local": _local}


def get_env_manager(name: str | None) -> EnvManager:
    key = (name or "local").lower()
    factory = ENV_MANAGERS.get(key)
    if factory is None:
        raise UnknownNameError("env manager", name or "", sorted(ENV_MANAGERS))
    return factory()
