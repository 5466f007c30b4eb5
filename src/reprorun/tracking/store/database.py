"""Two ways to reach a SQL database, behind one small interface.

The store's queries are plain SQL with ``:named`` parameters, valid on SQLite and
PostgreSQL alike. ``SqliteDatabase`` runs them with the standard library's sqlite3: that is
the embedded default, and it keeps ``reprorun run`` from paying SQLAlchemy's ~200 ms import.
``SqlAlchemyDatabase`` runs the same text through a SQLAlchemy Core engine (pooled
connections) for every other URL, and for SQLite when a driver is named explicitly
(``sqlite+pysqlite:///...``). The schema itself is declared once in SQLAlchemy Core
(``schema.py``); the SQLite DDL is generated from it and pinned by a test.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
Row = Sequence[Any]
Params = Mapping[str, Any]


class Connection(Protocol):
    """What store code sees inside one transaction."""

    def fetch(self, sql: str, params: Params | None = None) -> list[Row]: ...

    def execute(self, sql: str, params: Params | None = None) -> int:
        """Run one statement; return the number of rows it changed."""
        ...

    def executemany(self, sql: str, rows: Iterable[Params]) -> None: ...


class Database(Protocol):
    dialect: str

    def read(self, fn: Callable[[Connection], T]) -> T: ...

    def write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in one write transaction; commit if it returns, roll back if it raises."""
        ...

    def close(self) -> None: ...


def enable_wal(raw: Any, timeout: float) -> None:
    """Switch to WAL (persistent in the file). Switching needs a moment with no other
    connection busy, and SQLite does not wait for it on the busy timeout: retry."""
    import sqlite3
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            mode = raw.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                raw.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def unicode_lower(raw: Any) -> None:
    """SQLite's LOWER folds ASCII only; ILIKE must match 'ÄPFEL' to 'äpfel' as on PostgreSQL."""
    raw.create_function(
        "lower", 1, lambda v: v.lower() if isinstance(v, str) else v, deterministic=True
    )


class _SqliteConnection:
    def __init__(self, raw: Any):
        self._raw = raw

    def fetch(self, sql: str, params: Params | None = None) -> list[Row]:
        return list(self._raw.execute(sql, params or {}).fetchall())

    def execute(self, sql: str, params: Params | None = None) -> int:
        return int(self._raw.execute(sql, params or {}).rowcount)

    def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        self._raw.executemany(sql, list(rows))


class SqliteDatabase:
    """One sqlite3 connection per process, WAL mode, writes under ``BEGIN IMMEDIATE``.

    ``BEGIN IMMEDIATE`` takes the write lock up front, so two processes writing at once queue
    on the busy timeout instead of failing with "database is locked" half-way through.
    """

    dialect = "sqlite"

    def __init__(self, path: str, *, timeout: float = 60.0):
        import sqlite3

        self.path = path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._raw: sqlite3.Connection | None = sqlite3.connect(
            path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        self._lock = threading.RLock()
        self._raw.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        unicode_lower(self._raw)
        self._raw.execute("PRAGMA foreign_keys = ON")
        if path != ":memory:":
            enable_wal(self._raw, timeout)
            self._raw.execute("PRAGMA synchronous = NORMAL")

    def _conn(self) -> Any:
        if self._raw is None:
            raise RuntimeError(f"database {self.path} is closed")
        return self._raw

    def read(self, fn: Callable[[Connection], T]) -> T:
        with self._lock:
            raw = self._conn()
            raw.execute("BEGIN")
            try:
                return fn(_SqliteConnection(raw))
            finally:
                raw.execute("COMMIT")

    def write(self, fn: Callable[[Connection], T]) -> T:
        with self._lock:
            raw = self._conn()
            raw.execute("BEGIN IMMEDIATE")
            try:
                result = fn(_SqliteConnection(raw))
            except BaseException:
                raw.execute("ROLLBACK")
                raise
            raw.execute("COMMIT")
            return result

    def executescript(self, script: str) -> None:
        with self._lock:
            self._conn().executescript(script)

    def close(self) -> None:
        with self._lock:
            if self._raw is not None:
                self._raw.close()
                self._raw = None


class _SqlAlchemyConnection:
    def __init__(self, conn: Any):
        from sqlalchemy import text

        self._conn = conn
        self._text = text

    def fetch(self, sql: str, params: Params | None = None) -> list[Row]:
        return list(self._conn.execute(self._text(sql), dict(params or {})).fetchall())

    def execute(self, sql: str, params: Params | None = None) -> int:
        return int(self._conn.execute(self._text(sql), dict(params or {})).rowcount)

    def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        batch = [dict(r) for r in rows]
        if batch:
            self._conn.execute(self._text(sql), batch)


class SqlAlchemyDatabase:
    """A SQLAlchemy Core engine; its pool means no per-call connection set-up."""

    def __init__(self, url: str):
        from sqlalchemy import create_engine, event

        self.url = url
        self.engine = create_engine(_with_driver(url), pool_pre_ping=True)
        self.dialect = self.engine.dialect.name
        if self.dialect == "sqlite":
            # pysqlite's own transaction handling defeats BEGIN IMMEDIATE; take it over
            # (the recipe from SQLAlchemy's SQLite dialect documentation).
            @event.listens_for(self.engine, "connect")
            def _connect(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.isolation_level = None
                dbapi_conn.execute("PRAGMA busy_timeout = 60000")
                unicode_lower(dbapi_conn)
                enable_wal(dbapi_conn, 60.0)

            @event.listens_for(self.engine, "begin")
            def _begin(conn: Any) -> None:
                mode = conn.get_execution_options().get("sqlite_begin", "")
                conn.exec_driver_sql(f"BEGIN {mode}".strip())

    def read(self, fn: Callable[[Connection], T]) -> T:
        with self.engine.connect() as conn, conn.begin():
            return fn(_SqlAlchemyConnection(conn))

    def write(self, fn: Callable[[Connection], T]) -> T:
        with self.engine.connect() as conn:
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                return fn(_SqlAlchemyConnection(conn))

    def close(self) -> None:
        self.engine.dispose()


def _with_driver(url: str) -> str:
    """``postgresql://`` with whichever PostgreSQL driver is installed: SQLAlchemy 2.1 assumes
    psycopg 3, 2.0 psycopg2; either works. ``postgres://`` (Heroku's spelling) is accepted."""
    scheme, sep, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres") or not sep:
        return url
    import importlib.util

    for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{driver}://{rest}"
    return f"postgresql://{rest}"
