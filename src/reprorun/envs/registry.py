"""Environment managers by name: the built-in ones and any package's, registered as entry
points in the group ``reprorun.env_managers``. An entry point names an ``EnvManager``
subclass (or any callable taking no argument that returns an ``EnvManager``); its module is
imported only when the manager is chosen. See docs/backends.md.
"""

from __future__ import annotations

from collections.abc import Callable

from reprorun._plugins import ENV_MANAGERS_GROUP, load, names
from reprorun.envs.base import EnvManager


def get_env_manager(name: str | None) -> EnvManager:
    """The environment manager called ``name`` (``local`` when None)."""
    factory: Callable[[], EnvManager] = load(
        ENV_MANAGERS_GROUP, "env manager", (name or "local").lower()
    )
    return factory()


def env_manager_names() -> list[str]:
    """The names ``--env-manager`` accepts: the built-in managers and installed plugins'."""
    return names(ENV_MANAGERS_GROUP)
