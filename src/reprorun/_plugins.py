"""Registries by entry points: backends (``reprorun.backends``) and environment managers
(``reprorun.env_managers``) are found by name in the entry points of installed packages.

reprorun declares its own built-in ones the same way, in its pyproject.toml. Reading entry
points scans every installed distribution (several milliseconds on the path of every
``reprorun run``), so the built-in names are also kept here as a static table, the fast path;
``tests/unit/test_plugins.py`` checks it equals what pyproject.toml declares. Entry points are
read only for another name, or to list the names. A built-in name always means the built-in.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from reprorun.errors import ExecutionError, UnknownNameError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

BACKENDS_GROUP = "reprorun.backends"
ENV_MANAGERS_GROUP = "reprorun.env_managers"

# name -> "module:attribute", exactly as in pyproject.toml's [project.entry-points.<group>].
BUILTIN: Mapping[str, Mapping[str, str]] = {
    BACKENDS_GROUP: {
        "local": "reprorun.backends.local:create",
        "ray": "reprorun.backends.ray.backend:create",
        "slurm": "reprorun.backends.slurm.backend:create",
        "kubernetes": "reprorun.backends.kubernetes.backend:create",
        "databricks": "reprorun.backends.databricks.backend:create",
    },
    ENV_MANAGERS_GROUP: {
        "local": "reprorun.envs.local:LocalEnvManager",
        "uv": "reprorun.envs.venv:UvEnvManager",
        "virtualenv": "reprorun.envs.venv:VirtualenvEnvManager",
        "conda": "reprorun.envs.conda:CondaEnvManager",
        "docker": "reprorun.envs.docker:DockerEnvManager",
    },
}


def load(group: str, kind: str, name: str) -> Any:
    """The object registered as ``name`` in ``group``, its module imported only now.
    ``kind`` names the registry in errors ("backend", "env manager")."""
    target = BUILTIN[group].get(name)
    if target is not None:
        module, _, attribute = target.partition(":")
        return getattr(importlib.import_module(module), attribute)
    installed = _installed(group)
    found = installed.get(name)
    if found is None:
        raise UnknownNameError(kind, name, sorted({*BUILTIN[group], *installed}))
    try:
        return found.load()
    except Exception as exc:  # a plugin's import can fail in any way
        package = f" (package {found.dist.name})" if found.dist else ""
        raise ExecutionError(
            f"The {kind} {name!r}{package} could not be loaded from {found.value}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def names(group: str) -> list[str]:
    """Every name registered in ``group``: the built-in ones and the installed plugins'."""
    return sorted({*BUILTIN[group], *_installed(group)})


def _installed(group: str) -> dict[str, EntryPoint]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=group)}
