"""The tracking store over SQL: experiments, runs, params, metrics (full history), tags, logged
models.

Every public method is one transaction; ``create_run`` and ``log_batch`` write a whole batch
at once. Queries are plain SQL valid on SQLite and PostgreSQL (see ``database.py``). The store
is assembled from one part per concern:

- ``lifecycle``: the schema's creation, version check and migration (to ``version.py``'s);
- ``experiments``, ``runs`` (with their params, metrics and tags), ``logged_models``;
- ``registry``: the model registry (registered models, versions, tags, aliases);
- ``ui``: queries only the web UI and the REST API's summaries ask;
- ``common``: limits, argument and page checks the parts share.
"""

from __future__ import annotations

from reprorun.tracking.store.base import get_or_create_experiment
from reprorun.tracking.store.database import Database
from reprorun.tracking.store.sql.experiments import ExperimentStore
from reprorun.tracking.store.sql.lifecycle import ensure_schema
from reprorun.tracking.store.sql.logged_models import LoggedModelStore
from reprorun.tracking.store.sql.registry import RegistryStore
from reprorun.tracking.store.sql.runs import RunStore
from reprorun.tracking.store.sql.ui import UiQueries

__all__ = ["SqlStore"]


class SqlStore(ExperimentStore, RunStore, LoggedModelStore, RegistryStore, UiQueries):
    """Tracking store on a ``Database``; artifact locations are derived from ``artifact_root``."""

    def __init__(self, db: Database, artifact_root: str):
        self.db = db
        self.artifact_root = artifact_root.rstrip("/")
        ensure_schema(self.db, self.artifact_root)

    def close(self) -> None:
        self.db.close()

    def get_or_create_experiment(self, name: str) -> str:
        return get_or_create_experiment(self, name)
