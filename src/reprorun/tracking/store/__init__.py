"""Tracking stores. ``open_store`` returns the store for a tracking URI, one per process."""

from __future__ import annotations

import threading

from reprorun.config import resolve_tracking
from reprorun.errors import TrackingError
from reprorun.tracking.store.base import TrackingStore
from reprorun.tracking.store.sql import (
    DEFAULT_EXPERIMENT_ID,
    DEFAULT_EXPERIMENT_NAME,
    SqlStore,
)

__all__ = [
    "DEFAULT_EXPERIMENT_ID",
    "DEFAULT_EXPERIMENT_NAME",
    "SqlStore",
    "TrackingStore",
    "close_stores",
    "open_store",
]

_stores: dict[tuple[str, str], TrackingStore] = {}
_lock = threading.Lock()


def open_store(
    tracking_uri: str | None = None, *, artifact_root: str | None = None
) -> TrackingStore:
    """The store for ``tracking_uri`` (or the configured default), opened once per process:
    a ``SqlStore`` for databases, a ``RestStore`` for http(s) tracking servers.
    ``artifact_root`` overrides where new experiments keep artifacts (the server's
    ``--artifacts-destination``)."""
    target = resolve_tracking(tracking_uri)
    root = artifact_root or target.artifact_root
    key = (target.uri, root)
    with _lock:
        found = _stores.get(key)
        if found is None:
            if target.is_remote:
                from reprorun.tracking.store.rest import RestStore

                found = RestStore(target.uri)
            else:
                found = _open(target.uri, target.sqlite_path, root)
            _stores[key] = found
        return found


def _open(uri: str, sqlite_path: str | None, artifact_root: str) -> SqlStore:
    if sqlite_path is not None:
        import sqlite3

        from reprorun.tracking.store.database import SqliteDatabase

        try:
            return SqlStore(SqliteDatabase(sqlite_path), artifact_root)
        except (sqlite3.Error, OSError) as exc:
            raise TrackingError(
                f"Cannot open the tracking store {sqlite_path}: {exc}. Check the path and its "
                "permissions, or choose another with --tracking-uri / REPRORUN_TRACKING_URI."
            ) from exc
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    from reprorun.tracking.store.database import SqlAlchemyDatabase

    try:
        return SqlStore(SqlAlchemyDatabase(uri), artifact_root)
    except ImportError as exc:
        from reprorun.errors import InvalidTrackingUri

        raise InvalidTrackingUri(
            f"Tracking URI {uri!r} needs a database driver that is not installed ({exc.name}). "
            "Install it, e.g. pip install 'psycopg[binary]' (or psycopg2-binary) for postgresql://."
        ) from exc
    except (ArgumentError, NoSuchModuleError) as exc:
        from reprorun.errors import InvalidTrackingUri

        raise InvalidTrackingUri(
            f"Tracking URI {uri!r} is not a usable database URL: {exc}"
        ) from exc
    except SQLAlchemyError as exc:
        raise TrackingError(f"Cannot open the tracking store {uri}: {exc}") from exc


def close_stores() -> None:
    """Close every open store (tests; long-lived processes switching stores)."""
    with _lock:
        for store in _stores.values():
            store.close()
        _stores.clear()
