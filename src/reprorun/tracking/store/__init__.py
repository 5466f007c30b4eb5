"""Tracking stores. ``open_store`` returns the store for a tracking URI, one per process."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from reprorun.config import resolve_tracking
from reprorun.errors import StoreFileError, TrackingError
from reprorun.tracking.store.base import TrackingStore
from reprorun.tracking.store.sql import SqlStore
from reprorun.tracking.store.sql.common import DEFAULT_EXPERIMENT_ID, DEFAULT_EXPERIMENT_NAME

__all__ = [
    "DEFAULT_EXPERIMENT_ID",
    "DEFAULT_EXPERIMENT_NAME",
    "SqlStore",
    "StoreInit",
    "TrackingStore",
    "close_stores",
    "init_store",
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
            # What sqlite_errors did not already name: e.g. the migration lock beside a store
            # on a read-only file system.
            raise StoreFileError(
                sqlite_path,
                f"cannot open it ({exc}).",
                "Check the file, its folder and their permissions (the folder must be writable: "
                "SQLite and reprorun write lock and journal files beside the store), or choose "
                "another store with --tracking-uri / REPRORUN_TRACKING_URI.",
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


@dataclass(frozen=True)
class StoreInit:
    """What ``init_store`` did: ``created`` a new store, and where a broken file was moved."""

    location: str
    created: bool
    moved_to: str | None = None


def init_store(tracking_uri: str | None = None, *, force: bool = False) -> StoreInit:
    """Create the store if it does not exist; check an existing SQLite store whole
    (``PRAGMA quick_check``). With ``force``, a file that is damaged or not a store is moved
    aside (renamed ``<file>.broken-<time>``, with its -wal and -shm files) and a new empty
    store is created in its place; without, that raises ``StoreFileError``."""
    target = resolve_tracking(tracking_uri)
    path = target.sqlite_path
    if target.is_remote or path is None or path == ":memory:":
        open_store(tracking_uri)
        return StoreInit(target.uri, created=False)
    from reprorun.tracking.store.database import damaged

    existed = Path(path).exists()
    try:
        store = _open(target.uri, path, target.artifact_root)
        try:
            found = store.db.read(lambda conn: conn.fetch("PRAGMA quick_check"))
        finally:
            store.close()
        if [tuple(r) for r in found] != [("ok",)]:
            raise damaged(path, "; ".join(str(r[0]) for r in found[:3]))
    except StoreFileError as exc:
        if not (force and exc.replaceable):
            raise
        moved_to = _move_aside(path)
        _open(target.uri, path, target.artifact_root).close()
        return StoreInit(path, created=True, moved_to=moved_to)
    return StoreInit(path, created=not existed)


def _move_aside(path: str) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = f"{path}.broken-{stamp}"
    n = 1
    while os.path.lexists(aside):  # never replace an earlier broken file
        n += 1
        aside = f"{path}.broken-{stamp}-{n}"
    for suffix in ("", "-wal", "-shm", "-journal"):
        if os.path.lexists(path + suffix):
            Path(path + suffix).rename(aside + suffix)
    return aside


def close_stores() -> None:
    """Close every open store (tests; long-lived processes switching stores)."""
    with _lock:
        for store in _stores.values():
            store.close()
        _stores.clear()
