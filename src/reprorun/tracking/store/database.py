"""Two ways to reach a SQL database, behind one small interface.

The store's queries are plain SQL with ``:named`` parameters, valid on SQLite and
PostgreSQL alike. ``SqliteDatabase`` runs them with the standard library's sqlite3: that is
the embedded default, and it keeps ``reprorun run`` from paying SQLAlchemy's ~200 ms import.
``SqlAlchemyDatabase`` runs the same text through a SQLAlchemy Core engine (pooled
connections) for every other URL, and for SQLite when a driver is named explicitly
(``sqlite+pysqlite:///...``). The schema itself is declared once in SQLAlchemy Core
(``schema.py``); the SQLite DDL is generated from it and pinned by a test.

A SQLite file that cannot serve as a store (damaged, not a store, read-only, on a full or
failing disk) raises ``StoreFileError`` naming the file and what to do, whether found on
opening or by any later statement: both classes translate sqlite3's errors in one place
(``sqlite_errors``). A new store file is created whole (written aside, then linked into
place), so an existing file that is empty or not SQLite is never a store being born: it is
refused rather than silently re-created empty.
"""

from __future__ import annotations

import os
import shlex
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Protocol, TypeVar

from reprorun.errors import StoreFileError

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


SQLITE_HEADER = b"SQLite format 3\x00"
WAL_SIBLINGS = ("-wal", "-shm", "-journal")

# sqlite3 errors that mean the file itself is unusable, by SQLite error name (Python 3.11+)
# and by message (any Python, and through SQLAlchemy): damaged, not writable, disk trouble.
_DAMAGED = ("SQLITE_CORRUPT", "SQLITE_NOTADB", "malformed", "file is not a database")
_UNWRITABLE = (
    "SQLITE_READONLY",
    "SQLITE_CANTOPEN",
    "SQLITE_PERM",
    "readonly database",
    "unable to open database file",
    "access permission denied",
)
_DISK = ("SQLITE_IOERR", "SQLITE_FULL", "disk i/o error", "database or disk is full")


def _has(exc: BaseException, needles: tuple[str, ...]) -> bool:
    name = str(getattr(exc, "sqlite_errorname", ""))
    text = str(exc).lower()
    return any(name.startswith(n) if n.isupper() else n in text for n in needles)


def store_file_error(path: str, exc: BaseException) -> StoreFileError | None:
    """The ``StoreFileError`` for a sqlite3 error (or a SQLAlchemy error wrapping one) that
    says the file at ``path`` is unusable; ``None`` for any other error."""
    import sqlite3

    orig = getattr(exc, "orig", exc)  # SQLAlchemy's DBAPIError wraps the driver's error
    if not isinstance(orig, sqlite3.Error):
        return None
    q = shlex.quote(path)
    if _has(orig, _DAMAGED):
        return damaged(path, str(orig))
    if _has(orig, _UNWRITABLE):
        folder = shlex.quote(str(Path(path).parent))
        return StoreFileError(
            path,
            f"cannot open or write the file ({orig}).",
            "Make the file and its folder readable and writable by this user, on a file "
            f"system mounted read-write (SQLite writes {q}-wal and {q}-shm beside it; see "
            f"ls -la {folder}), or choose another store with --tracking-uri / "
            "REPRORUN_TRACKING_URI.",
        )
    if _has(orig, _DISK):
        folder = shlex.quote(str(Path(path).parent))
        return StoreFileError(
            path,
            f"the disk failed or is full ({orig}).",
            f"Free space where it lives (df -h {folder}) or check the disk for errors "
            f"(dmesg), then try again; sqlite3 {q} 'PRAGMA integrity_check' tells whether "
            "the file was damaged.",
        )
    return None


@contextmanager
def sqlite_errors(path: str) -> Iterator[None]:
    """Re-raise sqlite3 errors that mean the store file is unusable as ``StoreFileError``."""
    try:
        yield
    except Exception as exc:
        error = store_file_error(path, exc)
        if error is None:
            raise
        raise error from exc


def damaged(path: str, detail: str) -> StoreFileError:
    q = shlex.quote(path)
    return StoreFileError(
        path,
        f"the file is damaged ({detail}).",
        f"Check it with: sqlite3 {q} 'PRAGMA integrity_check'\n"
        "Restore it from a backup if you have one, or salvage what is readable into a new "
        f"file with: sqlite3 {q} .recover | sqlite3 {shlex.quote(path + '.recovered')} "
        "and, with no reprorun running, move the damaged file (and any -wal, -shm file "
        "beside it) aside and put the recovered one in its place.\n"
        f"To start a new empty store instead: {init_command(path)}",
        replaceable=True,
    )


def init_command(path: str) -> str:
    return f"reprorun store init --force --tracking-uri {shlex.quote(path)}"


def not_a_store(path: str, what: str) -> StoreFileError:
    return StoreFileError(
        path,
        f"this is not a reprorun store: {what}.",
        "If it held your runs, it was truncated or overwritten: restore it from a backup. "
        "To keep it and record elsewhere, choose another store with --tracking-uri / "
        "REPRORUN_TRACKING_URI. To start a new empty store here, run:\n"
        f"  {init_command(path)}\n"
        "(it moves the file aside, renamed with a .broken-<time> suffix; nothing is deleted).",
        replaceable=True,
    )


def prepare_sqlite_file(path: str) -> None:
    """Check that an existing file at ``path`` is SQLite, or create a new empty store file
    whole: written beside it, then linked into place (only if still absent), so another
    process never sees a half-created store and an empty file is never one."""
    import sqlite3

    target = Path(path)
    try:
        with open(target, "rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        raise not_a_store(path, "it is a directory") from None
    except OSError as exc:
        raise StoreFileError(
            path,
            f"cannot read the file ({exc.strerror or exc}).",
            "Make it readable and writable by this user, or choose another store with "
            "--tracking-uri / REPRORUN_TRACKING_URI.",
        ) from exc
    else:
        if not header:
            raise not_a_store(path, "the file is empty (0 bytes)")
        if header != SQLITE_HEADER:
            raise not_a_store(path, "the file is not a SQLite database")
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    fresh = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.new")
    try:
        with sqlite_errors(path):
            raw = sqlite3.connect(fresh, isolation_level=None)
            try:
                raw.execute("PRAGMA journal_mode = WAL")  # writes the header: never 0 bytes
            finally:
                raw.close()
        try:
            os.link(fresh, target)
        except FileExistsError:
            pass  # another process created it first: use theirs
        except OSError:
            # A file system without hard links: create-exclusive, then copy the few bytes.
            with suppress(FileExistsError), open(target, "xb") as out:
                out.write(fresh.read_bytes())
    finally:
        for suffix in ("", *WAL_SIBLINGS):
            Path(f"{fresh}{suffix}").unlink(missing_ok=True)


def check_tables(path: str, names: Iterable[str]) -> None:
    """A SQLite file holding tables but no ``schema_version`` is someone else's database."""
    found = sorted(names)
    if found and "schema_version" not in found:
        listed = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        raise not_a_store(path, f"it is a SQLite database with other tables ({listed})")


def sqlite_file(database: str | None) -> str | None:
    """The file a SQLite URL's database names; None for in-memory and URI-style names."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database


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
        self._raw: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        if path != ":memory:":
            prepare_sqlite_file(path)
        with sqlite_errors(path):
            self._raw = sqlite3.connect(
                path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            try:
                self._raw.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
                unicode_lower(self._raw)
                self._raw.execute("PRAGMA foreign_keys = ON")
                if path != ":memory:":
                    enable_wal(self._raw, timeout)
                    self._raw.execute("PRAGMA synchronous = NORMAL")
                    tables = self._raw.execute(
                        "SELECT name FROM sqlite_master WHERE type = 'table'"
                    ).fetchall()
                    check_tables(path, (t[0] for t in tables))
            except BaseException:
                self.close()
                raise

    def _conn(self) -> Any:
        if self._raw is None:
            raise RuntimeError(f"database {self.path} is closed")
        return self._raw

    def read(self, fn: Callable[[Connection], T]) -> T:
        return self._transaction("BEGIN", fn)

    def write(self, fn: Callable[[Connection], T]) -> T:
        return self._transaction("BEGIN IMMEDIATE", fn)

    def _transaction(self, begin: str, fn: Callable[[Connection], T]) -> T:
        with self._lock, sqlite_errors(self.path):
            raw = self._conn()
            raw.execute(begin)
            try:
                result = fn(_SqliteConnection(raw))
                raw.execute("COMMIT")
            except BaseException:
                # A failed COMMIT can leave the transaction open, and SQLite may already have
                # rolled back (disk full, I/O error): never let ROLLBACK hide the real error.
                if raw.in_transaction:
                    with suppress(Exception):
                        raw.execute("ROLLBACK")
                raise
            return result

    def executescript(self, script: str) -> None:
        with self._lock, sqlite_errors(self.path):
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
        self.path = sqlite_file(self.engine.url.database) if self.dialect == "sqlite" else None
        if self.path is not None:
            prepare_sqlite_file(self.path)
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

        if self.path is not None:
            path = self.path

            def tables(conn: Connection) -> list[Row]:
                return conn.fetch("SELECT name FROM sqlite_master WHERE type = 'table'")

            try:
                check_tables(path, (t[0] for t in self.read(tables)))
            except BaseException:
                self.engine.dispose()
                raise

    @contextmanager
    def errors(self) -> Iterator[None]:
        """sqlite3 errors about the store file as ``StoreFileError`` (SQLite files only)."""
        if self.path is None:
            yield
            return
        with sqlite_errors(self.path):
            yield

    def read(self, fn: Callable[[Connection], T]) -> T:
        with self.errors(), self.engine.connect() as conn, conn.begin():
            return fn(_SqlAlchemyConnection(conn))

    def write(self, fn: Callable[[Connection], T]) -> T:
        with self.errors(), self.engine.connect() as conn:
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
