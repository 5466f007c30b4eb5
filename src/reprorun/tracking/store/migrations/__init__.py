"""Schema migrations with alembic: one revision per schema version, named ``0001``, ``0002``...

A new store is created at the current version directly (and stamped so); ``upgrade`` brings a
store written by an older reprorun up to date. It runs only when the stored version is behind,
so alembic is imported on that path alone.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any


def revision(version: int) -> str:
    return f"{version:04d}"


def upgrade(engine: Any, head: int) -> None:
    """Upgrade the database behind ``engine`` (a SQLAlchemy engine) to schema ``head``, in one
    transaction. The stored version is read inside it, after taking the write lock (SQLite's
    BEGIN IMMEDIATE, an advisory lock on PostgreSQL), so a process that waited for another's
    migration finds nothing left to do."""
    from alembic.config import Config

    from reprorun.tracking.store.database import sqlite_errors, sqlite_file

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    path = sqlite_file(engine.url.database) if engine.dialect.name == "sqlite" else None
    with (
        sqlite_errors(path) if path else nullcontext(),
        engine.connect() as plain,
        plain.execution_options(sqlite_begin="IMMEDIATE") as conn,
        conn.begin(),
    ):
        _upgrade(conn, config, head)


def _upgrade(conn: Any, config: Any, head: int) -> None:
    from alembic import command
    from sqlalchemy import inspect, text

    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(7242015)"))  # any fixed key
    current = int(conn.execute(text("SELECT version FROM schema_version")).scalar_one())
    if current >= head:
        return
    config.attributes["connection"] = conn
    if not inspect(conn).has_table("alembic_version"):
        # Stores written before alembic was adopted know only their schema_version.
        command.stamp(config, revision(current))
    command.upgrade(config, revision(head))
