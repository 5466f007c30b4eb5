"""The schema's lifecycle: create it in an empty database, check the version of an existing
one, migrate an older one (alembic), refuse a newer one.

The version it brings stores to is ``version.SCHEMA_VERSION``. This module does not import
SQLAlchemy unless it must migrate or create a schema on a SQLAlchemy database.
"""

from __future__ import annotations

from pathlib import Path

from reprorun.errors import StoreVersionError
from reprorun.tracking.entities import now_ms
from reprorun.tracking.store.database import Connection, Database, SqliteDatabase
from reprorun.tracking.store.sql.common import (
    DEFAULT_EXPERIMENT_ID,
    DEFAULT_EXPERIMENT_NAME,
    artifact_path,
)
from reprorun.tracking.store.version import SCHEMA_VERSION


def ensure_schema(db: Database, artifact_root: str) -> None:
    """``db`` holds the current schema: created if empty, migrated if older; a store written
    by a newer reprorun is refused rather than misread."""

    def current(conn: Connection) -> int | None:
        if db.dialect == "sqlite":
            exists = conn.fetch(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
            )
            if not exists:
                return None
        rows = conn.fetch("SELECT version FROM schema_version")
        return int(rows[0][0]) if rows else None

    try:
        version = db.read(current)
    except Exception:  # the table does not exist yet (non-SQLite databases)
        version = None
    if version is None:
        _create_schema(db, artifact_root)
        return
    if version > SCHEMA_VERSION:
        raise StoreVersionError(
            f"The tracking store was written by a newer reprorun (schema version {version}; "
            f"this reprorun knows up to {SCHEMA_VERSION}). Upgrade reprorun to use it."
        )
    if version < SCHEMA_VERSION:
        _migrate(db)


def _migrate(store_db: Database) -> None:
    """Bring an older store up to ``SCHEMA_VERSION`` (alembic). Concurrent openers are
    serialised: a file lock for SQLite, an advisory lock inside ``upgrade`` for servers."""
    from contextlib import AbstractContextManager, nullcontext

    from filelock import FileLock

    from reprorun.tracking.store.database import SqlAlchemyDatabase
    from reprorun.tracking.store.migrations import upgrade

    # SQLAlchemyDatabase's SQLite set-up (busy timeout, BEGIN IMMEDIATE) for both paths.
    db = store_db
    if isinstance(db, SqliteDatabase):
        db = SqlAlchemyDatabase(f"sqlite+pysqlite:///{db.path}")
    assert isinstance(db, SqlAlchemyDatabase)
    path = db.engine.url.database if db.dialect == "sqlite" else None
    lock: AbstractContextManager[object] = (
        FileLock(path + ".migrate.lock") if path else nullcontext()
    )
    try:
        with lock:
            upgrade(db.engine, SCHEMA_VERSION)
    finally:
        if db is not store_db:
            db.close()


def _create_schema(db: Database, artifact_root: str) -> None:
    if isinstance(db, SqliteDatabase):
        ddl = (Path(__file__).parent.parent / "schema_sqlite.sql").read_text("utf-8")
        statements = [s.strip() for s in ddl.split(";\n") if s.strip()]

        def create(conn: Connection) -> None:
            # Another process may have won the race while we waited for the write lock.
            if conn.fetch("SELECT 1 FROM sqlite_master WHERE name = 'schema_version'"):
                return
            for statement in statements:
                conn.execute(statement)
            _seed(conn, artifact_root)

        db.write(create)
        return
    from reprorun.tracking.store import schema
    from reprorun.tracking.store.database import SqlAlchemyDatabase

    assert isinstance(db, SqlAlchemyDatabase)
    schema.metadata.create_all(db.engine)

    def seed(conn: Connection) -> None:
        if not conn.fetch("SELECT version FROM schema_version"):
            _seed(conn, artifact_root)

    db.write(seed)


def _seed(conn: Connection, artifact_root: str) -> None:
    conn.execute("INSERT INTO schema_version (version) VALUES (:v)", {"v": SCHEMA_VERSION})
    conn.execute(
        "INSERT INTO alembic_version (version_num) VALUES (:v)", {"v": f"{SCHEMA_VERSION:04d}"}
    )
    t = now_ms()
    conn.execute(
        "INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage, "
        "creation_time, last_update_time) VALUES (0, :name, :loc, 'active', :t, :t)",
        {
            "name": DEFAULT_EXPERIMENT_NAME,
            "loc": artifact_path(artifact_root, DEFAULT_EXPERIMENT_ID),
            "t": t,
        },
    )
