"""Backends by name: the built-in ones and any package's, registered as entry points in the
group ``reprorun.backends``. An entry point names a factory ``create(config, source) ->
Backend`` (``config``: the ``--backend-config`` mapping; ``source``: its file, for messages);
its module is imported only when the backend is chosen. See docs/backends.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from reprorun._plugins import BACKENDS_GROUP, load, names
from reprorun.backends.base import Backend

Factory = Callable[[Mapping[str, Any], str], Backend]


def get_backend(
    name: str | None, config: Mapping[str, Any] | None = None, source: str = ""
) -> Backend:
    """The backend called ``name``, configured and validated before any work starts
    (``source`` names the config file in error messages)."""
    factory: Factory = load(BACKENDS_GROUP, "backend", (name or "local").lower())
    return factory(config or {}, source)


def backend_names() -> list[str]:
    """The names ``--backend`` accepts: the built-in backends and installed plugins'."""
    return names(BACKENDS_GROUP)
