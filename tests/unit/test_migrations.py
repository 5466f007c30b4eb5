"""Schema migrations: a store written by reprorun 0.1 (schema version 1) opens, upgraded in place.

A version-1 store is built by hand, the way 0.1 built one: on SQLite with 0.1's exact DDL (kept
below, from ``schema_sqlite.sql`` of that release), on PostgreSQL with ``create_all`` of 0.1's
tables (today's schema minus the logged-model and alembic tables; a test checks that they generate
0.1's DDL). It holds a finished run with params, tags and a metric history. Opening it with
``SqlStore`` must migrate it through alembic to the current version without losing the run, and leave it
exactly like a store created at that version. A store from a newer reprorun is refused untouched.

Backends: stdlib sqlite3, SQLAlchemy over pysqlite (the other migration path), and PostgreSQL
(REPRORUN_TEST_POSTGRES_URL, see tests/pg.py; the PostgreSQL cases fail without it).
"""

from __future__ import annotations

import math
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, create_engine, inspect, text
from sqlalchemy.pool import NullPool

from reprorun.errors import StoreVersionError
from reprorun.tracking.entities import LoggedModelStatus, Metric, RunStatus
from reprorun.tracking.store import schema
from reprorun.tracking.store.database import SqlAlchemyDatabase, SqliteDatabase
from reprorun.tracking.store.sql import SqlStore
from reprorun.tracking.store.version import SCHEMA_VERSION
from tests import pg

BACKENDS = ("sqlite3", "sqlite+pysqlite", "postgresql")
# Tables added after 0.1: logged models (2), the metrics attached to them (4), alembic's.
V2_TABLES = (
    "logged_models",
    "logged_model_tags",
    "logged_model_params",
    "logged_model_metrics",
    "alembic_version",
)
# Version 6's model registry.
V6_TABLES = (
    "registered_models",
    "registered_model_tags",
    "registered_model_aliases",
    "model_versions",
    "model_version_tags",
)

# reprorun 0.1's schema_sqlite.sql (its header comment and trailing spaces left out).
V1_SQLITE_DDL = """\
CREATE TABLE experiments (
\texperiment_id INTEGER NOT NULL,
\tname VARCHAR(256) NOT NULL,
\tartifact_location VARCHAR(1000) NOT NULL,
\tlifecycle_stage VARCHAR(32) DEFAULT 'active' NOT NULL,
\tcreation_time BIGINT,
\tlast_update_time BIGINT,
\tPRIMARY KEY (experiment_id),
\tUNIQUE (name)
);

CREATE TABLE schema_version (
\tversion INTEGER NOT NULL
);

CREATE TABLE experiment_tags (
\texperiment_id INTEGER NOT NULL,
\t"key" VARCHAR(250) NOT NULL,
\tvalue VARCHAR(5000),
\tPRIMARY KEY (experiment_id, "key"),
\tFOREIGN KEY(experiment_id) REFERENCES experiments (experiment_id)
);

CREATE TABLE runs (
\trun_uuid VARCHAR(32) NOT NULL,
\tname VARCHAR(250),
\texperiment_id INTEGER NOT NULL,
\tuser_id VARCHAR(256),
\tstatus VARCHAR(20) NOT NULL,
\tstart_time BIGINT NOT NULL,
\tend_time BIGINT,
\tartifact_uri VARCHAR(1000) NOT NULL,
\tlifecycle_stage VARCHAR(20) DEFAULT 'active' NOT NULL,
\tPRIMARY KEY (run_uuid),
\tFOREIGN KEY(experiment_id) REFERENCES experiments (experiment_id)
);

CREATE INDEX ix_runs_experiment_start ON runs (experiment_id, start_time);

CREATE TABLE latest_metrics (
\trun_uuid VARCHAR(32) NOT NULL,
\t"key" VARCHAR(250) NOT NULL,
\tvalue FLOAT NOT NULL,
\tis_nan BOOLEAN DEFAULT '0' NOT NULL,
\tstep BIGINT NOT NULL,
\ttimestamp BIGINT NOT NULL,
\tPRIMARY KEY (run_uuid, "key"),
\tFOREIGN KEY(run_uuid) REFERENCES runs (run_uuid)
);

CREATE TABLE metrics (
\tid INTEGER NOT NULL,
\trun_uuid VARCHAR(32) NOT NULL,
\t"key" VARCHAR(250) NOT NULL,
\tvalue FLOAT NOT NULL,
\tis_nan BOOLEAN DEFAULT '0' NOT NULL,
\tstep BIGINT NOT NULL,
\ttimestamp BIGINT NOT NULL,
\tPRIMARY KEY (id),
\tFOREIGN KEY(run_uuid) REFERENCES runs (run_uuid)
);

CREATE INDEX ix_metrics_run_key_step ON metrics (run_uuid, "key", step);

CREATE TABLE params (
\trun_uuid VARCHAR(32) NOT NULL,
\t"key" VARCHAR(250) NOT NULL,
\tvalue VARCHAR(8000) NOT NULL,
\tPRIMARY KEY (run_uuid, "key"),
\tFOREIGN KEY(run_uuid) REFERENCES runs (run_uuid)
);

CREATE TABLE tags (
\trun_uuid VARCHAR(32) NOT NULL,
\t"key" VARCHAR(250) NOT NULL,
\tvalue VARCHAR(8000),
\tPRIMARY KEY (run_uuid, "key"),
\tFOREIGN KEY(run_uuid) REFERENCES runs (run_uuid)
);
"""

OPENERS = 4
V5_COPIES = ("params", "tags", "latest_metrics")
NEWER = SCHEMA_VERSION + 1
RUN_ID = "0123456789abcdef0123456789abcdef"
ROOT = "file:///stores/artifacts"


def v1_metadata() -> MetaData:
    """reprorun 0.1's tables: today's schema without what versions 2 to 6 added."""
    from sqlalchemy import Index

    v1 = MetaData()
    for table in schema.metadata.sorted_tables:
        if table.name in V2_TABLES or table.name in V6_TABLES:
            continue
        # Version 5 copied the run's experiment and start time into these, with new indexes.
        copy = table.to_metadata(v1)
        for index in list(copy.indexes):
            copy.indexes.discard(index)
        if table.name in V5_COPIES:  # version 5 copied the run's experiment and start time
            for name in ("experiment_id", "start_time"):
                if name in copy.c:
                    copy._columns.remove(copy.c[name])
        if copy.name == "metrics":  # version 3 replaced 0.1's index on metric points
            Index("ix_metrics_run_key_step", copy.c.run_uuid, copy.c.key, copy.c.step)
        if copy.name == "runs":  # version 5 replaced it by (experiment, newest first, run)
            Index("ix_runs_experiment_start", copy.c.experiment_id, copy.c.start_time)
    return v1


def test_the_v1_tables_are_0_1s_schema() -> None:
    """What the PostgreSQL case creates is what 0.1 created: the same tables."""
    from sqlalchemy.dialects import sqlite
    from sqlalchemy.schema import CreateIndex, CreateTable

    statements: list[str] = []
    for table in v1_metadata().sorted_tables:
        statements.append(str(CreateTable(table).compile(dialect=sqlite.dialect())).strip())
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            statements.append(str(CreateIndex(index).compile(dialect=sqlite.dialect())).strip())
    generated = "\n".join(s + ";\n" for s in statements)
    assert "\n".join(line.rstrip() for line in generated.split("\n")) == V1_SQLITE_DDL


# --- building a version-1 store -------------------------------------------------------------

Execute = Callable[[str, Mapping[str, Any]], None]


def seed_v1(execute: Execute, fetch: Callable[[str], list[Any]]) -> str:
    """What 0.1 wrote for: a store, an experiment with a tag, one finished run. Returns the
    experiment id."""
    execute("INSERT INTO schema_version (version) VALUES (1)", {})
    execute(
        "INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage, "
        "creation_time, last_update_time) VALUES (0, 'Default', :loc, 'active', 10, 10)",
        {"loc": f"{ROOT}/0"},
    )
    # As 0.1's create_experiment: the id comes from the database.
    execute(
        "INSERT INTO experiments (name, artifact_location, lifecycle_stage, creation_time, "
        "last_update_time) VALUES ('old', :loc, 'active', 20, 20)",
        {"loc": f"{ROOT}/1"},
    )
    exp_id = str(fetch("SELECT experiment_id FROM experiments WHERE name = 'old'")[0][0])
    execute(
        "INSERT INTO experiment_tags (experiment_id, \"key\", value) VALUES (:e, 'team', 'ml')",
        {"e": int(exp_id)},
    )
    execute(
        "INSERT INTO runs (run_uuid, name, experiment_id, user_id, status, start_time, end_time, "
        "artifact_uri, lifecycle_stage) VALUES (:id, 'before-upgrade', :e, 'ana', 'FINISHED', "
        "1000, 2000, :uri, 'active')",
        {"id": RUN_ID, "e": int(exp_id), "uri": f"{ROOT}/{exp_id}/{RUN_ID}/artifacts"},
    )
    execute(
        "INSERT INTO params (run_uuid, \"key\", value) VALUES (:id, 'alpha', '0.5')",
        {"id": RUN_ID},
    )
    for key, value in (("mlflow.runName", "before-upgrade"), ("mlflow.user", "ana"), ("t", "x")):
        execute(
            'INSERT INTO tags (run_uuid, "key", value) VALUES (:id, :k, :v)',
            {"id": RUN_ID, "k": key, "v": value},
        )
    history = [("loss", 0.9, False, 0, 1000), ("loss", 0.4, False, 1, 1100)]
    history.append(("acc", 0.0, True, 0, 1000))  # NaN, stored as 0.0 with is_nan
    for key, value, is_nan, step, ts in history:
        row = {"id": RUN_ID, "k": key, "v": value, "n": is_nan, "s": step, "t": ts}
        execute(
            'INSERT INTO metrics (run_uuid, "key", value, is_nan, step, "timestamp") '
            "VALUES (:id, :k, :v, :n, :s, :t)",
            row,
        )
    for key, value, is_nan, step, ts in (history[1], history[2]):
        execute(
            'INSERT INTO latest_metrics (run_uuid, "key", value, is_nan, step, "timestamp") '
            "VALUES (:id, :k, :v, :n, :s, :t)",
            {"id": RUN_ID, "k": key, "v": value, "n": is_nan, "s": step, "t": ts},
        )
    return exp_id


def make_v1_sqlite(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        conn.executescript(V1_SQLITE_DDL)
        exp_id = seed_v1(conn.execute, lambda sql: conn.execute(sql).fetchall())
        conn.commit()
    finally:
        conn.close()
    return exp_id


def make_v1_sqlalchemy(url: str) -> str:
    engine = create_engine(url, poolclass=NullPool)
    try:
        v1_metadata().create_all(engine)
        with engine.begin() as conn:
            return seed_v1(
                lambda sql, params: conn.execute(text(sql), dict(params)),
                lambda sql: list(conn.execute(text(sql)).fetchall()),
            )
    finally:
        engine.dispose()


class Backend:
    """One version-1 store on one backend, opened as many times as a test likes."""

    def __init__(self, name: str, *, path: Path | None = None, url: str | None = None):
        """A SQLite backend takes the file's ``path``, PostgreSQL the schema's ``url``."""
        self.name = name
        self.path = path or Path("unused")
        self.url = url or f"sqlite:///{path}"

    def make_v1(self) -> str:
        if self.name == "postgresql":
            return make_v1_sqlalchemy(self.url)
        return make_v1_sqlite(self.path)

    def open(self) -> SqlStore:
        if self.name == "sqlite3":
            return SqlStore(SqliteDatabase(str(self.path)), ROOT)
        if self.name == "sqlite+pysqlite":
            return SqlStore(SqlAlchemyDatabase(f"sqlite+pysqlite:///{self.path}"), ROOT)
        return SqlStore(SqlAlchemyDatabase(self.url), ROOT)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        engine = create_engine(self.url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(text(sql)).fetchall()]
        finally:
            engine.dispose()

    def shape(self) -> dict[str, Any]:
        """Tables, columns (name, type, nullable, default), keys and indexes, comparable."""
        engine = create_engine(self.url, poolclass=NullPool)
        try:
            insp = inspect(engine)
            shape: dict[str, Any] = {}
            for table in sorted(insp.get_table_names()):
                columns = [
                    (c["name"], str(c["type"]), c["nullable"], _default(c.get("default")))
                    for c in insp.get_columns(table)
                ]
                shape[table] = {
                    "columns": sorted(columns),
                    "pk": insp.get_pk_constraint(table)["constrained_columns"],
                    "fks": sorted(
                        (tuple(f["constrained_columns"]), f["referred_table"])
                        for f in insp.get_foreign_keys(table)
                    ),
                    "indexes": self.indexes(engine, table),
                }
            return shape
        finally:
            engine.dispose()

    @staticmethod
    def indexes(engine: Any, table: str) -> list[tuple[str, str]]:
        """Each index's name and definition as the database keeps it (expressions, order,
        partial conditions: what SQLAlchemy's reflection skips on SQLite)."""
        if engine.dialect.name == "sqlite":
            sql = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = :t"
        else:
            sql = (
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = :t "
                "AND schemaname = current_schema()"
            )
        with engine.connect() as conn:
            rows = conn.execute(text(sql), {"t": table}).fetchall()
        # PostgreSQL names the schema (each test has its own): leave it out.
        return sorted(
            (str(name), re.sub(r" ON \w+\.", " ON ", " ".join(str(d or "").split())))
            for name, d in rows
        )


def _default(value: Any) -> str | None:
    """'active', 'active'::character varying and "'active'" all mean the same default."""
    if value is None:
        return None
    return str(value).split("::")[0].strip("'\"")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "postgresql":
        return Backend("postgresql", url=request.getfixturevalue("postgres_url"))
    return Backend(request.param, path=tmp_path / "v1.db")


@pytest.fixture
def migrated(backend: Backend) -> Iterator[tuple[SqlStore, str]]:
    exp_id = backend.make_v1()
    assert backend.query("SELECT version FROM schema_version") == [(1,)]
    store = backend.open()
    yield store, exp_id
    store.close()


# --- the migration ------------------------------------------------------------------------


def test_a_v1_store_is_migrated_to_v2(backend: Backend, migrated: tuple[SqlStore, str]) -> None:
    assert backend.query("SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    assert backend.query("SELECT version_num FROM alembic_version") == [(f"{SCHEMA_VERSION:04d}",)]
    tables = set(backend.shape())
    assert {
        "logged_models",
        "logged_model_tags",
        "logged_model_params",
        "logged_model_metrics",
    } <= tables


def test_the_run_survives_the_migration(migrated: tuple[SqlStore, str]) -> None:
    store, exp_id = migrated
    run = store.get_run(RUN_ID)
    info = run.info
    assert (info.experiment_id, info.run_name, info.user_id) == (exp_id, "before-upgrade", "ana")
    assert (info.status, info.start_time, info.end_time) == (RunStatus.FINISHED, 1000, 2000)
    assert info.artifact_uri == f"{ROOT}/{exp_id}/{RUN_ID}/artifacts"
    assert run.data.params == {"alpha": "0.5"}
    assert run.data.tags == {"mlflow.runName": "before-upgrade", "mlflow.user": "ana", "t": "x"}
    assert run.data.metrics["loss"] == 0.4 and math.isnan(run.data.metrics["acc"])
    assert [(m.step, m.value) for m in store.get_metric_history(RUN_ID, "loss")] == [
        (0, 0.9),
        (1, 0.4),
    ]
    old = store.get_experiment(exp_id)
    assert (old.name, old.tags) == ("old", {"team": "ml"})
    assert [e.name for e in store.list_experiments()] == ["Default", "old"]
    assert [r.info.run_id for r in store.search_runs([exp_id], "params.alpha = '0.5'")] == [RUN_ID]


def test_the_migrated_store_takes_new_writes(migrated: tuple[SqlStore, str]) -> None:
    store, exp_id = migrated
    store.log_metric(RUN_ID, Metric("loss", 0.1, 1200, 2))
    assert store.get_run(RUN_ID).data.metrics["loss"] == 0.1
    assert len(store.get_metric_history(RUN_ID, "loss")) == 3
    assert store.create_experiment("after-upgrade") == str(int(exp_id) + 1)
    new_run = store.create_run(exp_id, params={"alpha": "0.7"}).info.run_id
    assert {r.info.run_id for r in store.search_runs([exp_id])} == {RUN_ID, new_run}

    model = store.create_logged_model(
        exp_id, name="clf", source_run_id=RUN_ID, tags={"k": "v"}, params={"depth": "2"}
    )
    assert model.artifact_location == f"{ROOT}/{exp_id}/models/{model.model_id}/artifacts"
    assert model.status is LoggedModelStatus.PENDING
    ready = store.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    assert (ready.status, ready.tags, ready.params) == (
        LoggedModelStatus.READY,
        {"k": "v"},
        {"depth": "2"},
    )
    found = store.search_logged_models([exp_id], filter_string="status = 'READY'")
    assert [m.model_id for m in found] == [model.model_id]
    # Version 4: a metric logged with the model's id is attached to it.
    store.log_metric(RUN_ID, Metric("auc", 0.8, 1300, 0, model.model_id, "val", "d1"))
    store.log_metric(RUN_ID, Metric("auc", 0.8, 1300, 0, model.model_id, "val", "d1"))  # kept once
    (point,) = store.get_logged_model(model.model_id).metrics
    assert (point.key, point.value, point.run_id, point.dataset_name) == ("auc", 0.8, RUN_ID, "val")
    on_val = store.search_logged_models([exp_id], datasets=[{"dataset_name": "val"}])
    assert [m.model_id for m in on_val] == [model.model_id]


def test_a_migrated_store_reopens_without_migrating_again(
    backend: Backend, migrated: tuple[SqlStore, str]
) -> None:
    store, _ = migrated
    store.close()
    again = backend.open()
    try:
        assert again.get_run(RUN_ID).data.params == {"alpha": "0.5"}
    finally:
        again.close()
    assert backend.query("SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    assert backend.query("SELECT version_num FROM alembic_version") == [(f"{SCHEMA_VERSION:04d}",)]


def test_the_migrated_schema_is_the_new_schema(
    backend: Backend, migrated: tuple[SqlStore, str], tmp_path: Path
) -> None:
    """Migration 0002 and schema.py describe the same tables, keys, defaults and indexes."""
    migrated_shape = backend.shape()
    if backend.name == "postgresql":
        with pg.fresh_schema() as url:
            fresh = Backend("postgresql", url=url)
            fresh.open().close()
            fresh_shape = fresh.shape()
    else:
        fresh = Backend(backend.name, path=tmp_path / "fresh.db")
        fresh.open().close()
        fresh_shape = fresh.shape()
    assert migrated_shape == fresh_shape


class Gate:
    """Lets every opener read the store's version (1) but holds the first write of the
    migration until all of them have set out to migrate, then lets them go together.

    PostgreSQL: an exclusive lock on ``experiments``, which the first migration step (a table
    with a foreign key to it) needs. SQLite: the write lock (the file is switched to WAL first,
    as any store opened since 0.1 is, so readers pass).
    """

    def __init__(self, backend: Backend):
        self.backend = backend
        self.engine = create_engine(backend.url, poolclass=NullPool)
        self.conn = self.engine.connect()
        if backend.name == "postgresql":
            self.conn.exec_driver_sql("BEGIN")
            self.conn.exec_driver_sql("LOCK TABLE experiments IN ACCESS EXCLUSIVE MODE")
        else:
            self.conn.exec_driver_sql("PRAGMA journal_mode = WAL")
            self.conn.exec_driver_sql("BEGIN IMMEDIATE")

    def wait_for(self, procs: list[subprocess.Popen[str]]) -> None:
        """Until every opener waits on the gate (PostgreSQL shows it; SQLite does not)."""
        if self.backend.name != "postgresql":
            time.sleep(2.0)
            return
        probe = create_engine(self.backend.url, poolclass=NullPool)
        waiting = 0
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and all(p.poll() is None for p in procs):
                with probe.connect() as conn:
                    waiting = conn.exec_driver_sql(
                        "SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted"
                    ).scalar_one()
                if waiting >= len(procs):
                    return
                time.sleep(0.05)
        finally:
            probe.dispose()
        raise AssertionError(f"{waiting} of {len(procs)} openers reached the gate")

    def open(self) -> None:
        self.conn.exec_driver_sql("COMMIT" if self.backend.name == "postgresql" else "ROLLBACK")
        self.conn.close()
        self.engine.dispose()


def test_concurrent_openers_of_a_v1_store_all_succeed(backend: Backend) -> None:
    """Processes opening an old store at once (server workers, parallel runs), while another
    connection is writing: all of them find version 1, then wait (for the writer, as any write
    waits, and for each other); one migrates, the others find it done; none fails. The gate
    makes the race certain instead of a matter of timing."""
    backend.make_v1()
    database = {
        "sqlite3": f"SqliteDatabase({str(backend.path)!r})",
        "sqlite+pysqlite": f"SqlAlchemyDatabase({f'sqlite+pysqlite:///{backend.path}'!r})",
        "postgresql": f"SqlAlchemyDatabase({backend.url!r})",
    }[backend.name]
    # Each opener imports everything, says "ready" and opens the store; the gate holds it.
    code = (
        "from reprorun.tracking.store.database import SqliteDatabase, SqlAlchemyDatabase\n"
        "from reprorun.tracking.store.sql import SqlStore\n"
        "import sqlalchemy, alembic.command, filelock\n"
        "print('ready', flush=True)\n"
        f"SqlStore({database}, {ROOT!r}).close()\n"
    )
    gate = Gate(backend)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(OPENERS)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline() == "ready\n"
        gate.wait_for(procs)
        gate.open()
        # communicate() first: returncode is set once it returns.
        results = [(p.communicate(timeout=120)[0], p.returncode) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    failed = [out for out, code in results if code != 0]
    assert not failed, f"{len(failed)} of {OPENERS} openers failed; the first said:\n{failed[0]}"
    assert backend.query("SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    assert backend.query("SELECT version_num FROM alembic_version") == [(f"{SCHEMA_VERSION:04d}",)]
    store = backend.open()
    try:
        assert store.get_run(RUN_ID).data.params == {"alpha": "0.5"}
    finally:
        store.close()


# --- a store from the future ----------------------------------------------------------------


def test_a_store_from_a_newer_reprorun_is_refused_untouched(backend: Backend) -> None:
    backend.open().close()
    engine = create_engine(backend.url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"UPDATE schema_version SET version = {NEWER}"))
    finally:
        engine.dispose()
    before = backend.shape()
    with pytest.raises(StoreVersionError, match=rf"newer reprorun \(schema version {NEWER};"):
        backend.open()
    assert backend.query("SELECT version FROM schema_version") == [(NEWER,)]
    assert backend.query("SELECT version_num FROM alembic_version") == [(f"{SCHEMA_VERSION:04d}",)]
    assert backend.shape() == before
