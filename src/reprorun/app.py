"""The application object: what the CLI, the server and the tests build the same way.

``Reprorun`` owns the settings (read through ``reprorun.config.SETTINGS``), the tracking store
(opened once, and only when first asked for: ``reprorun run`` starts before any store module is
imported), the backend and environment-manager registries, and what each backend declares it
can do (``Capabilities``). The CLI builds one per invocation on click's context (``ctx.obj``),
``reprorun.server.app.create_app`` builds one for the server, and tests build one with the
``app`` fixture. Layers: above ``projects`` (it composes them), below ``cli`` and ``server``.

Everything heavy is imported inside the methods, so importing this module costs only
``reprorun.config``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reprorun import config

if TYPE_CHECKING:
    from reprorun.backends.base import Backend
    from reprorun.envs.base import EnvManager
    from reprorun.tracking.store.base import TrackingStore


@dataclass(frozen=True)
class Capabilities:
    """What a backend declares it can do (see docs/backends.md), as data.

    ``remote``: the job runs outside this process tree (the run follows the job's status);
    ``shares_filesystem``: the job can open this machine's files (None: only on one node);
    ``tracking_uri``: where the job logs, when its configuration says (None: the run's store);
    ``follows_runs``: it can rebuild a run's handle in another process (``attach``), so
    ``reprorun runs status|logs|kill`` work for its runs."""

    remote: bool
    shares_filesystem: bool | None
    tracking_uri: str | None
    follows_runs: bool

    @classmethod
    def of(cls, backend: Backend | type[Backend]) -> Capabilities:
        from reprorun.backends.base import Backend

        kind = backend if isinstance(backend, type) else type(backend)
        attach = getattr(kind, "attach", None)
        return cls(
            remote=bool(backend.remote),
            shares_filesystem=backend.shares_filesystem,
            tracking_uri=backend.tracking_uri,
            follows_runs=attach is not None and attach is not getattr(Backend, "attach", None),
        )


class Reprorun:
    """One application: its settings, its store, its registries.

    ``tracking_uri`` names the store (None: the ``tracking_uri`` setting, else the embedded
    default); ``artifact_root`` overrides where new experiments keep artifacts (the server's
    ``--artifacts-destination``)."""

    def __init__(self, tracking_uri: str | None = None, *, artifact_root: str | None = None):
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        self._stores: dict[str | None, TrackingStore] = {}
        self._lock = threading.Lock()

    # Settings ---------------------------------------------------------------------------

    @property
    def settings(self) -> Mapping[str, str | None]:
        """Every setting's value from the environment, by name (None: unset)."""
        return config.settings()

    def tracking(self, tracking_uri: str | None = None) -> config.TrackingTarget:
        """Where ``tracking_uri`` (default: this application's store) records runs."""
        return config.resolve_tracking(tracking_uri or self.tracking_uri)

    # The store ----------------------------------------------------------------------------

    @property
    def store(self) -> TrackingStore:
        """This application's store, opened on first use."""
        return self.store_at(None)

    def store_at(self, tracking_uri: str | None) -> TrackingStore:
        """The store at ``tracking_uri`` (None: this application's), opened once.

        A command's ``--tracking-uri`` names the store it works on; the CLI's application is
        built before the command's options are read, so it is passed here."""
        with self._lock:
            found = self._stores.get(tracking_uri)
            if found is None:
                from reprorun.tracking.store import open_store

                found = open_store(
                    tracking_uri or self.tracking_uri, artifact_root=self.artifact_root
                )
                self._stores[tracking_uri] = found
            return found

    # Registries ---------------------------------------------------------------------------

    def backend(
        self, name: str | None, options: Mapping[str, Any] | None = None, source: str = ""
    ) -> Backend:
        """The backend called ``name`` (``local`` when None), configured with ``options``."""
        from reprorun.backends.registry import get_backend

        return get_backend(name, options, source)

    def backend_names(self) -> list[str]:
        """The names ``--backend`` accepts: the built-in backends and installed plugins'."""
        from reprorun.backends.registry import backend_names

        return backend_names()

    def capabilities(self, backend: Backend | str | None) -> Capabilities:
        """What ``backend`` (a backend, or a name built with its default options) can do."""
        if backend is None or isinstance(backend, str):
            backend = self.backend(backend)
        return Capabilities.of(backend)

    def env_manager(self, name: str | None) -> EnvManager:
        """The environment manager called ``name`` (``local`` when None)."""
        from reprorun.envs.registry import get_env_manager

        return get_env_manager(name)

    def env_manager_names(self) -> list[str]:
        """The names ``--env-manager`` accepts: the built-in managers and installed plugins'."""
        from reprorun.envs.registry import env_manager_names

        return env_manager_names()
