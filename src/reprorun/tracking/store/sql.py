"""The tracking store over SQL: experiments, runs, params, metrics (full history), tags.

Every public method is one transaction; ``create_run`` and ``log_batch`` write a whole batch
at once. Queries are plain SQL valid on SQLite and PostgreSQL (see ``database.py``).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from reprorun.errors import (
    ParamConflict,
    ResourceAlreadyExists,
    ResourceNotFound,
    SearchError,
    StoreVersionError,
    UserInputError,
)
from reprorun.tracking import validation
from reprorun.tracking.entities import (
    Experiment,
    LoggedModel,
    LoggedModelStatus,
    Metric,
    ModelMetric,
    Page,
    Run,
    RunData,
    RunInfo,
    RunStatus,
    SystemTags,
    ViewType,
    now_ms,
)
from reprorun.tracking.store.base import get_or_create_experiment, run_id_prefix
from reprorun.tracking.store.database import Connection, Database, Row, SqliteDatabase

SCHEMA_VERSION = 4  # keep equal to schema.SCHEMA_VERSION (a test checks)
MAX_RESULTS = 50_000  # the largest page a search returns (MLflow's limit)
DEFAULT_EXPERIMENT_ID = "0"
DEFAULT_EXPERIMENT_NAME = "Default"
MAX_PARAM_VALUE = 8000
MAX_TAG_VALUE = 8000
MAX_KEY = 250

_RUN_COLUMNS = (
    "run_uuid, experiment_id, name, status, start_time, end_time, artifact_uri, user_id, "
    "lifecycle_stage"
)


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


class SqlStore:
    """Tracking store on a ``Database``; artifact locations are derived from ``artifact_root``."""

    def __init__(self, db: Database, artifact_root: str):
        self.db = db
        self.artifact_root = artifact_root.rstrip("/")
        self._ensure_schema()

    # --- schema ---------------------------------------------------------------------------

    def _ensure_schema(self) -> None:
        def current(conn: Connection) -> int | None:
            if self.db.dialect == "sqlite":
                exists = conn.fetch(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
                )
                if not exists:
                    return None
            rows = conn.fetch("SELECT version FROM schema_version")
            return int(rows[0][0]) if rows else None

        try:
            version = self.db.read(current)
        except Exception:  # the table does not exist yet (non-SQLite databases)
            version = None
        if version is None:
            self._create_schema()
            return
        if version > SCHEMA_VERSION:
            raise StoreVersionError(
                f"The tracking store was written by a newer reprorun (schema version {version}; "
                f"this reprorun knows up to {SCHEMA_VERSION}). Upgrade reprorun to use it."
            )
        if version < SCHEMA_VERSION:
            self._migrate()

    def _migrate(self) -> None:
        """Bring an older store up to ``SCHEMA_VERSION`` (alembic). Concurrent openers are
        serialised: a file lock for SQLite, an advisory lock inside ``upgrade`` for servers."""
        from contextlib import AbstractContextManager, nullcontext

        from filelock import FileLock

        from reprorun.tracking.store.database import SqlAlchemyDatabase
        from reprorun.tracking.store.migrations import upgrade

        # SQLAlchemyDatabase's SQLite set-up (busy timeout, BEGIN IMMEDIATE) for both paths.
        db = self.db
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
            if db is not self.db:
                db.close()

    def _create_schema(self) -> None:
        if isinstance(self.db, SqliteDatabase):
            ddl = (Path(__file__).parent / "schema_sqlite.sql").read_text("utf-8")
            statements = [s.strip() for s in ddl.split(";\n") if s.strip()]

            def create(conn: Connection) -> None:
                # Another process may have won the race while we waited for the write lock.
                if conn.fetch("SELECT 1 FROM sqlite_master WHERE name = 'schema_version'"):
                    return
                for statement in statements:
                    conn.execute(statement)
                self._seed(conn)

            self.db.write(create)
            return
        from reprorun.tracking.store import schema
        from reprorun.tracking.store.database import SqlAlchemyDatabase

        assert isinstance(self.db, SqlAlchemyDatabase)
        schema.metadata.create_all(self.db.engine)

        def seed(conn: Connection) -> None:
            if not conn.fetch("SELECT version FROM schema_version"):
                self._seed(conn)

        self.db.write(seed)

    def _seed(self, conn: Connection) -> None:
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
                "loc": _join(self.artifact_root, DEFAULT_EXPERIMENT_ID),
                "t": t,
            },
        )

    def close(self) -> None:
        self.db.close()

    # --- experiments ----------------------------------------------------------------------

    def create_experiment(
        self, name: str, artifact_location: str | None = None, tags: Mapping[str, str] | None = None
    ) -> str:
        name = validation.check_experiment_name(name)
        _check_items(dict(tags or {}), MAX_TAG_VALUE, "experiment tag")

        def create(conn: Connection) -> str:
            if conn.fetch("SELECT 1 FROM experiments WHERE name = :n", {"n": name}):
                raise ResourceAlreadyExists(f"An experiment named {name!r} already exists.")
            t = now_ms()
            conn.execute(
                "INSERT INTO experiments (name, artifact_location, lifecycle_stage, creation_time, "
                "last_update_time) VALUES (:n, '', 'active', :t, :t)",
                {"n": name, "t": t},
            )
            exp_id = str(
                conn.fetch("SELECT experiment_id FROM experiments WHERE name = :n", {"n": name})[0][
                    0
                ]
            )
            location = artifact_location or _join(self.artifact_root, exp_id)
            conn.execute(
                "UPDATE experiments SET artifact_location = :loc WHERE experiment_id = :id",
                {"loc": location, "id": int(exp_id)},
            )
            conn.executemany(
                'INSERT INTO experiment_tags (experiment_id, "key", value) VALUES (:id, :k, :v)',
                [{"id": int(exp_id), "k": k, "v": v} for k, v in (tags or {}).items()],
            )
            return exp_id

        return self.db.write(create)

    def get_experiment(self, experiment_id: str) -> Experiment:
        exp = self.db.read(
            lambda c: self._experiments(
                c, "WHERE experiment_id = :id", {"id": _exp_int(experiment_id)}
            )
        )
        if not exp:
            raise ResourceNotFound(f"No experiment with id {experiment_id!r}.")
        return exp[0]

    def get_experiment_by_name(self, name: str) -> Experiment | None:
        exp = self.db.read(lambda c: self._experiments(c, "WHERE name = :n", {"n": name}))
        return exp[0] if exp else None

    def list_experiments(self) -> list[Experiment]:
        return self.db.read(
            lambda c: self._experiments(
                c, "WHERE lifecycle_stage = 'active' ORDER BY experiment_id", {}
            )
        )

    def search_experiments(
        self,
        *,
        view_type: ViewType = ViewType.ACTIVE_ONLY,
        max_results: int = 1000,
        filter_string: str | None = None,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> Page[Experiment]:
        """MLflow's SearchExperiments: filter on name/tags/times, order, paginate."""
        from reprorun.tracking import search

        clauses = search.parse_experiment_filter(filter_string)
        order = search.parse_order_by(order_by, search.EXPERIMENT_ORDER_ATTRIBUTES)
        limit = _check_max_results(max_results)
        offset = search.decode_page_token(page_token)
        sql = search.SqlBuilder(self.db.dialect)
        stages = ", ".join(sql.bind(s) for s in view_type.stages)
        conditions = [f"e.lifecycle_stage IN ({stages})"]
        conditions += search.compile_experiments_filter(clauses, sql)
        terms = []
        for o in order:
            if o.entity != search.ATTRIBUTE:
                raise search_error(f"cannot order experiments by {o.entity} {o.key!r}")
            terms.append(f"e.{o.key} {'ASC' if o.ascending else 'DESC'}")
        terms += ["e.creation_time DESC", "e.experiment_id"]
        where = "e " + _page_clause(conditions, terms, limit, offset)
        found = self.db.read(lambda c: self._experiments(c, where, sql.params, alias="e."))
        return _page(found, limit, offset)

    def rename_experiment(self, experiment_id: str, new_name: str) -> None:
        new_name = validation.check_experiment_name(new_name)

        def rename(conn: Connection) -> None:
            self._require_experiment(conn, experiment_id)
            taken = conn.fetch(
                "SELECT experiment_id FROM experiments WHERE name = :n", {"n": new_name}
            )
            if taken and str(taken[0][0]) != str(_exp_int(experiment_id)):
                raise ResourceAlreadyExists(f"An experiment named {new_name!r} already exists.")
            conn.execute(
                "UPDATE experiments SET name = :n, last_update_time = :t WHERE experiment_id = :id",
                {"n": new_name, "t": now_ms(), "id": _exp_int(experiment_id)},
            )

        self.db.write(rename)

    def delete_experiment(self, experiment_id: str) -> None:
        """Mark the experiment and its runs deleted (restorable), as MLflow does."""
        if str(experiment_id) == DEFAULT_EXPERIMENT_ID:
            raise UserInputError("The default experiment (id 0) cannot be deleted.")
        self._set_experiment_stage(experiment_id, "deleted")

    def restore_experiment(self, experiment_id: str) -> None:
        self._set_experiment_stage(experiment_id, "active")

    def _set_experiment_stage(self, experiment_id: str, stage: str) -> None:
        def update(conn: Connection) -> None:
            # Deleting a deleted experiment or restoring an active one finds nothing (MLflow).
            current = "deleted" if stage == "active" else "active"
            try:
                self._require_experiment(conn, experiment_id, current)
            except UserInputError:
                raise ResourceNotFound(
                    f"No {current} experiment with id {experiment_id!r}."
                ) from None
            values = {"s": stage, "t": now_ms(), "id": _exp_int(experiment_id)}
            conn.execute(
                "UPDATE experiments SET lifecycle_stage = :s, last_update_time = :t "
                "WHERE experiment_id = :id",
                values,
            )
            conn.execute(
                "UPDATE runs SET lifecycle_stage = :s WHERE experiment_id = :id",
                {"s": stage, "id": values["id"]},
            )

        self.db.write(update)

    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None:
        _check_items({key: value}, MAX_TAG_VALUE, "experiment tag")

        def write(conn: Connection) -> None:
            self._require_experiment(conn, experiment_id)
            conn.execute(
                'INSERT INTO experiment_tags (experiment_id, "key", value) VALUES (:id, :k, :v) '
                'ON CONFLICT (experiment_id, "key") DO UPDATE SET value = excluded.value',
                {"id": _exp_int(experiment_id), "k": key, "v": value},
            )

        self.db.write(write)

    def delete_experiment_tag(self, experiment_id: str, key: str) -> None:
        def delete(conn: Connection) -> None:
            self._require_experiment(conn, experiment_id)
            if not conn.execute(
                'DELETE FROM experiment_tags WHERE experiment_id = :id AND "key" = :k',
                {"id": _exp_int(experiment_id), "k": key},
            ):
                raise ResourceNotFound(f"Experiment {experiment_id} has no tag {key!r}.")

        self.db.write(delete)

    def _require_experiment(
        self, conn: Connection, experiment_id: str, stage: str = "active"
    ) -> None:
        """The experiment exists in ``stage``; otherwise MLflow's error for the case."""
        rows = conn.fetch(
            "SELECT lifecycle_stage FROM experiments WHERE experiment_id = :id",
            {"id": _exp_int(experiment_id)},
        )
        if not rows:
            raise ResourceNotFound(f"No experiment with id {experiment_id!r}.")
        if rows[0][0] != stage:
            raise UserInputError(
                f"The experiment {experiment_id} must be in the '{stage}' state. Current state "
                f"is {rows[0][0]}."
            )

    def get_or_create_experiment(self, name: str) -> str:
        return get_or_create_experiment(self, name)

    def _experiments(
        self, conn: Connection, where: str, params: Mapping[str, Any], alias: str = ""
    ) -> list[Experiment]:
        columns = ", ".join(
            alias + c
            for c in (
                "experiment_id",
                "name",
                "artifact_location",
                "lifecycle_stage",
                "creation_time",
                "last_update_time",
            )
        )
        rows = conn.fetch(f"SELECT {columns} FROM experiments {where}", params)
        result = []
        for row in rows:
            tag_rows = conn.fetch(
                'SELECT "key", value FROM experiment_tags WHERE experiment_id = :id', {"id": row[0]}
            )
            result.append(
                Experiment(
                    experiment_id=str(row[0]),
                    name=row[1],
                    artifact_location=row[2],
                    lifecycle_stage=row[3],
                    creation_time=row[4],
                    last_update_time=row[5],
                    tags={k: v for k, v in tag_rows},
                )
            )
        return result

    def experiment_summaries(self, view: str = "active") -> list[dict[str, Any]]:
        """Experiments with their number of active runs and last activity (the latest run
        start or end, else the experiment's own update), newest activity first."""
        stages = {"active": "('active')", "deleted": "('deleted')", "all": "('active', 'deleted')"}
        where = f"WHERE lifecycle_stage IN {stages[view]}"

        def read(conn: Connection) -> list[dict[str, Any]]:
            counts = {
                str(eid): (n, last)
                for eid, n, last in conn.fetch(
                    "SELECT experiment_id, COUNT(*), MAX(COALESCE(end_time, start_time)) "
                    "FROM runs WHERE lifecycle_stage = 'active' GROUP BY experiment_id"
                )
            }
            summaries = []
            for exp in self._experiments(conn, where, {}):
                n, last = counts.get(exp.experiment_id, (0, None))
                summary = exp.to_dict()
                summary["run_count"] = n
                summary["last_activity"] = max(last or 0, exp.last_update_time or 0) or None
                summaries.append(summary)
            summaries.sort(key=lambda s: -(s["last_activity"] or 0))
            return summaries

        return self.db.read(read)

    def run_keys(self, experiment_ids: Sequence[str], limit: int = 2000) -> dict[str, list[str]]:
        """The param, metric and tag keys used by the experiments' active runs (sorted)."""
        ids = {f"e{i}": _exp_int(e) for i, e in enumerate(experiment_ids)}
        in_list = ", ".join(":" + k for k in ids)

        def read(conn: Connection) -> dict[str, list[str]]:
            found = {}
            tables = {"params": "params", "metrics": "latest_metrics", "tags": "tags"}
            for name, table in tables.items():
                rows = conn.fetch(
                    f'SELECT DISTINCT x."key" FROM {table} x '
                    "JOIN runs r ON r.run_uuid = x.run_uuid "
                    f"WHERE r.experiment_id IN ({in_list}) AND r.lifecycle_stage = 'active' "
                    f'ORDER BY x."key" LIMIT {int(limit)}',
                    ids,
                )
                found[name] = [r[0] for r in rows]
            return found

        return self.db.read(read)

    def run_tag_values(
        self, experiment_ids: Sequence[str], key: str, limit: int = 10_000
    ) -> list[tuple[str, str]]:
        """(experiment id, value) of the tag ``key`` on the experiments' runs, deleted ones
        too (what a run recorded stays part of its experiment's history, as in MLflow)."""
        ids = {f"e{i}": _exp_int(e) for i, e in enumerate(experiment_ids)}
        if not ids:
            return []
        rows = self.db.read(
            lambda c: c.fetch(
                "SELECT r.experiment_id, t.value FROM tags t "
                "JOIN runs r ON r.run_uuid = t.run_uuid "
                f"WHERE r.experiment_id IN ({', '.join(':' + k for k in ids)}) "
                'AND t."key" = :key '
                f"ORDER BY r.start_time, r.run_uuid LIMIT {int(limit)}",
                {**ids, "key": key},
            )
        )
        return [(str(r[0]), r[1] or "") for r in rows]

    # --- runs -----------------------------------------------------------------------------

    def create_run(
        self,
        experiment_id: str,
        *,
        run_name: str | None = None,
        user_id: str = "",
        start_time: int | None = None,
        tags: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        status: RunStatus = RunStatus.RUNNING,
        run_id: str | None = None,
    ) -> Run:
        """Create a run with its tags and params in one transaction."""
        run_id = run_id or uuid.uuid4().hex
        start = start_time if start_time is not None else now_ms()
        validation.check_int64(start, "start_time")
        name = run_name or _generated_name(run_id)
        all_tags = {**(tags or {}), SystemTags.RUN_NAME: name}
        if user_id:
            all_tags.setdefault(SystemTags.USER, user_id)
        _check_items(params or {}, MAX_PARAM_VALUE, "parameter")
        _check_items(all_tags, MAX_TAG_VALUE, "tag")

        def create(conn: Connection) -> str:
            rows = conn.fetch(
                "SELECT artifact_location, lifecycle_stage FROM experiments "
                "WHERE experiment_id = :id",
                {"id": _exp_int(experiment_id)},
            )
            if not rows:
                raise ResourceNotFound(f"No experiment with id {experiment_id!r}.")
            if rows[0][1] != "active":
                raise UserInputError(
                    f"The experiment {experiment_id} must be in the 'active' state. Current "
                    "state is deleted; restore it first."
                )
            artifact_uri = _join(rows[0][0], run_id, "artifacts")
            conn.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (:id, :exp, :name, :status, :start, "
                "NULL, :uri, :user, 'active')",
                {
                    "id": run_id,
                    "exp": _exp_int(experiment_id),
                    "name": name,
                    "status": status.value,
                    "start": start,
                    "uri": artifact_uri,
                    "user": user_id,
                },
            )
            self._write_params(conn, run_id, params or {})
            self._write_tags(conn, run_id, all_tags)
            return artifact_uri

        self.db.write(create)
        return self.get_run(run_id)

    def get_run(self, run_id: str) -> Run:
        runs = self.db.read(lambda c: self._runs(c, "WHERE run_uuid = :id", {"id": run_id}))
        if not runs:
            raise ResourceNotFound(f"Run with id={run_id} not found.")
        return runs[0]

    def resolve_run_id(self, prefix: str) -> str:
        """A full run id from a unique prefix (at least 4 characters), as git does for commits."""
        prefix = run_id_prefix(prefix)
        if len(prefix) == 32:
            return prefix
        rows = self.db.read(
            lambda c: c.fetch(
                "SELECT run_uuid FROM runs WHERE run_uuid LIKE :p LIMIT 3", {"p": prefix + "%"}
            )
        )
        if not rows:
            raise ResourceNotFound(f"No run id starts with {prefix!r}.")
        if len(rows) > 1:
            raise ResourceNotFound(f"Run id prefix {prefix!r} is ambiguous; give more digits.")
        return str(rows[0][0])

    def search_runs(
        self,
        experiment_ids: Sequence[str],
        filter_string: str | None = None,
        *,
        run_view_type: ViewType = ViewType.ACTIVE_ONLY,
        max_results: int = 1000,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> Page[Run]:
        """MLflow's SearchRuns: the runs of the experiments matching ``filter_string`` (MLflow's
        grammar), ordered by ``order_by`` then newest first, one page at a time."""
        from reprorun.tracking import search

        clauses = search.parse_filter(filter_string)
        order = search.parse_order_by(order_by, search.RUN_ORDER_ATTRIBUTES)
        limit = _check_max_results(max_results)
        offset = search.decode_page_token(page_token)
        if not experiment_ids:
            return Page([])
        sql = search.SqlBuilder(self.db.dialect)
        exps = ", ".join(sql.bind(_exp_int(e)) for e in experiment_ids)
        stages = ", ".join(sql.bind(s) for s in run_view_type.stages)
        conditions = [f"r.experiment_id IN ({exps})", f"r.lifecycle_stage IN ({stages})"]
        scope = dict(sql.params)  # the experiments and stages only, bound before the rest
        terms = search.compile_runs_order(order, sql)
        columns = ", ".join("r." + c.strip() for c in _RUN_COLUMNS.split(","))

        def read(conn: Connection) -> list[Run]:
            dataset_runs = None
            if any(c.entity == search.DATASET for c in clauses):
                inputs = conn.fetch(
                    "SELECT r.run_uuid, t.value FROM runs r JOIN tags t ON t.run_uuid = "
                    f'r.run_uuid AND t."key" = :inputs_tag WHERE {" AND ".join(conditions)}',
                    {**scope, "inputs_tag": search.INPUTS_TAG},
                )
                dataset_runs = search.runs_matching_datasets(
                    clauses, [(r[0], r[1]) for r in inputs]
                )
            where = conditions + search.compile_runs_filter(clauses, sql, dataset_runs=dataset_runs)
            statement = f"SELECT {columns} FROM runs r {' '.join(sql.joins)} " + _page_clause(
                where, terms, limit, offset
            )
            return self._runs_from(conn, conn.fetch(statement, sql.params))

        return _page(self.db.read(read), limit, offset)

    def delete_run(self, run_id: str) -> None:
        self._set_run_stage(run_id, "deleted")

    def restore_run(self, run_id: str) -> None:
        self._set_run_stage(run_id, "active")

    def _set_run_stage(self, run_id: str, stage: str) -> None:
        def update(conn: Connection) -> None:
            if not conn.execute(
                "UPDATE runs SET lifecycle_stage = :s WHERE run_uuid = :id",
                {"s": stage, "id": run_id},
            ):
                raise ResourceNotFound(f"Run with id={run_id} not found.")

        self.db.write(update)

    def delete_tag(self, run_id: str, key: str) -> None:
        def delete(conn: Connection) -> None:
            self._require_run(conn, run_id)
            if not conn.execute(
                'DELETE FROM tags WHERE run_uuid = :id AND "key" = :k', {"id": run_id, "k": key}
            ):
                raise ResourceNotFound(f"No tag with name: {key} in run with id {run_id}.")

        self.db.write(delete)

    def update_run(
        self,
        run_id: str,
        *,
        status: RunStatus | None = None,
        end_time: int | None = None,
        run_name: str | None = None,
        only_if_status: RunStatus | None = None,
    ) -> bool:
        """Change status/end time/name. With ``only_if_status``, change nothing unless the run
        is in that status (so a finished run is never turned back). Returns whether it changed.
        """
        sets: list[str] = []
        values: dict[str, Any] = {"id": run_id}
        if status is not None:
            sets.append("status = :status")
            values["status"] = status.value
        if end_time is not None:
            validation.check_int64(end_time, "end_time")
            sets.append("end_time = :end")
            values["end"] = end_time
        if run_name is not None:
            _check_items({SystemTags.RUN_NAME: run_name}, MAX_TAG_VALUE, "tag")
            sets.append("name = :name")
            values["name"] = run_name
        if not sets:
            return False
        guard = ""
        if only_if_status is not None:
            guard = " AND status = :guard"
            values["guard"] = only_if_status.value

        def update(conn: Connection) -> bool:
            changed = conn.execute(
                f"UPDATE runs SET {', '.join(sets)} WHERE run_uuid = :id{guard}", values
            )
            if not changed and not conn.fetch(
                "SELECT 1 FROM runs WHERE run_uuid = :id", {"id": run_id}
            ):
                raise ResourceNotFound(f"Run with id={run_id} not found.")
            if changed and run_name is not None:
                self._write_tags(conn, run_id, {SystemTags.RUN_NAME: run_name})
            return changed > 0

        return self.db.write(update)

    def _runs(self, conn: Connection, where: str, params: Mapping[str, Any]) -> list[Run]:
        return self._runs_from(conn, conn.fetch(f"SELECT {_RUN_COLUMNS} FROM runs {where}", params))

    def _runs_from(self, conn: Connection, rows: list[Row]) -> list[Run]:
        if not rows:
            return []
        run_ids = [r[0] for r in rows]
        data = self._run_data(conn, run_ids)
        return [Run(_run_info(row), data[row[0]]) for row in rows]

    def _run_data(self, conn: Connection, run_ids: list[str]) -> dict[str, RunData]:
        data = {rid: RunData() for rid in run_ids}
        # Chunk IN lists: SQLite allows at most 32766 variables per statement.
        for start in range(0, len(run_ids), 500):
            chunk = run_ids[start : start + 500]
            names = {f"r{i}": rid for i, rid in enumerate(chunk)}
            in_list = ", ".join(":" + k for k in names)
            for rid, key, value in conn.fetch(
                f'SELECT run_uuid, "key", value FROM params WHERE run_uuid IN ({in_list})', names
            ):
                data[rid].params[key] = value
            for rid, key, value in conn.fetch(
                f'SELECT run_uuid, "key", value FROM tags WHERE run_uuid IN ({in_list})', names
            ):
                data[rid].tags[key] = value
            for rid, key, value, is_nan in conn.fetch(
                'SELECT run_uuid, "key", value, is_nan FROM latest_metrics '
                f"WHERE run_uuid IN ({in_list})",
                names,
            ):
                data[rid].metrics[key] = math.nan if is_nan else float(value)
        return data

    def latest_metric_points(self, run_ids: Sequence[str]) -> dict[str, dict[str, tuple[int, int]]]:
        """(timestamp, step) of each run's latest value per metric key (MLflow's REST answers
        show them beside the value)."""
        points: dict[str, dict[str, tuple[int, int]]] = {rid: {} for rid in run_ids}

        def read(conn: Connection) -> None:
            for start in range(0, len(run_ids), 500):
                chunk = run_ids[start : start + 500]
                names = {f"r{i}": rid for i, rid in enumerate(chunk)}
                in_list = ", ".join(":" + k for k in names)
                for rid, key, timestamp, step in conn.fetch(
                    'SELECT run_uuid, "key", "timestamp", step FROM latest_metrics '
                    f"WHERE run_uuid IN ({in_list})",
                    names,
                ):
                    points[rid][key] = (int(timestamp), int(step))

        self.db.read(read)
        return points

    # --- logging --------------------------------------------------------------------------

    def log_batch(
        self,
        run_id: str,
        *,
        metrics: Sequence[Metric] = (),
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Write metrics, params and tags in one transaction (all or nothing)."""
        params = dict(params or {})
        tags = dict(tags or {})
        _check_items(params, MAX_PARAM_VALUE, "parameter")
        _check_items(tags, MAX_TAG_VALUE, "tag")
        for m in metrics:
            validation.check_metric(m.key, m.value, m.timestamp, m.step)
            _check_model_metric(m)

        def write(conn: Connection) -> None:
            self._require_run(conn, run_id)
            self._write_params(conn, run_id, params)
            self._write_tags(conn, run_id, tags)
            self._write_metrics(conn, run_id, metrics)
            self._write_model_metrics(conn, run_id, metrics)

        self.db.write(write)

    def log_param(self, run_id: str, key: str, value: str) -> None:
        self.log_batch(run_id, params={key: value})

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.log_batch(run_id, tags={key: value})

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self.log_batch(run_id, tags=tags)

    def log_metric(self, run_id: str, metric: Metric) -> None:
        self.log_batch(run_id, metrics=[metric])

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        rows = self.db.read(
            lambda c: c.fetch(
                'SELECT "key", value, is_nan, "timestamp", step FROM metrics '
                'WHERE run_uuid = :id AND "key" = :k ORDER BY "timestamp", step, value, id',
                {"id": run_id, "k": key},
            )
        )
        return [Metric(r[0], math.nan if r[2] else float(r[1]), int(r[3]), int(r[4])) for r in rows]

    # --- logged models (MLflow 3) ---------------------------------------------------------

    def create_logged_model(
        self,
        experiment_id: str,
        *,
        name: str | None = None,
        source_run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        model_type: str | None = None,
    ) -> LoggedModel:
        """A PENDING model; its files go under the experiment's ``models/<id>/artifacts``."""
        model_id = "m-" + uuid.uuid4().hex
        validation.check_logged_model_name(name)
        name = name or _generated_name(model_id[2:])
        if source_run_id is not None and (
            not isinstance(source_run_id, str) or len(source_run_id) > 32
        ):
            raise UserInputError(
                f"Invalid source_run_id {source_run_id!r}: expected a run id of at most 32 "
                "characters."
            )
        _check_items(dict(tags or {}), MAX_TAG_VALUE, "model tag", _check_length)
        _check_items(dict(params or {}), MAX_PARAM_VALUE, "model parameter", _check_length)

        def create(conn: Connection) -> None:
            rows = conn.fetch(
                "SELECT artifact_location FROM experiments WHERE experiment_id = :id",
                {"id": _exp_int(experiment_id)},
            )
            if not rows:
                raise ResourceNotFound(f"No experiment with id {experiment_id!r}.")
            if source_run_id:
                # As MLflow, a run this store does not know is taken as given (the model may
                # come from elsewhere); one it knows must be active.
                known = conn.fetch("SELECT 1 FROM runs WHERE run_uuid = :id", {"id": source_run_id})
                if known:
                    self._require_run(conn, source_run_id)
            # MLflow 3's layout: a runs:/<run>/<name> URI finds the files through the
            # model's source run, so they are not copied into the run's own artifacts.
            location = _join(rows[0][0], "models", model_id, "artifacts")
            t = now_ms()
            conn.execute(
                "INSERT INTO logged_models (model_id, experiment_id, name, artifact_location, "
                "creation_timestamp_ms, last_updated_timestamp_ms, status, lifecycle_stage, "
                "model_type, source_run_id) VALUES (:id, :exp, :name, :loc, :t, :t, 'PENDING', "
                "'active', :type, :run)",
                {
                    "id": model_id,
                    "exp": _exp_int(experiment_id),
                    "name": name,
                    "loc": location,
                    "t": t,
                    "type": model_type,
                    "run": source_run_id or None,
                },
            )
            self._write_model_items(conn, "logged_model_tags", model_id, tags or {})
            self._write_model_items(conn, "logged_model_params", model_id, params or {})

        self.db.write(create)
        return self.get_logged_model(model_id)

    def get_logged_model(self, model_id: str, *, allow_deleted: bool = False) -> LoggedModel:
        stages = "('active', 'deleted')" if allow_deleted else "('active')"
        found = self.db.read(
            lambda c: self._logged_models(
                c, f"WHERE model_id = :id AND lifecycle_stage IN {stages}", {"id": model_id}
            )
        )
        if not found:
            raise ResourceNotFound(f"Logged model with id={model_id} not found.")
        return found[0]

    def finalize_logged_model(self, model_id: str, status: LoggedModelStatus) -> LoggedModel:
        self._update_model(
            model_id, "status = :s, last_updated_timestamp_ms = :t", {"s": status.value}
        )
        return self.get_logged_model(model_id)

    def delete_logged_model(self, model_id: str) -> None:
        self._update_model(model_id, "lifecycle_stage = 'deleted', last_updated_timestamp_ms = :t")

    def set_logged_model_tags(self, model_id: str, tags: Mapping[str, str]) -> None:
        _check_items(dict(tags), MAX_TAG_VALUE, "model tag", _check_length)
        self._update_model(
            model_id,
            "last_updated_timestamp_ms = :t",
            {},
            lambda c: self._write_model_items(c, "logged_model_tags", model_id, tags),
        )

    def log_logged_model_params(self, model_id: str, params: Mapping[str, str]) -> None:
        _check_items(dict(params), MAX_PARAM_VALUE, "model parameter", _check_length)
        self._update_model(
            model_id,
            "last_updated_timestamp_ms = :t",
            {},
            lambda c: self._write_model_items(c, "logged_model_params", model_id, params),
        )

    def delete_logged_model_tag(self, model_id: str, key: str) -> None:
        def delete(conn: Connection) -> None:
            if not conn.execute(
                'DELETE FROM logged_model_tags WHERE model_id = :id AND "key" = :k',
                {"id": model_id, "k": key},
            ):
                raise ResourceNotFound(f"No tag with key {key!r} on logged model {model_id}.")

        self._update_model(model_id, "last_updated_timestamp_ms = :t", {}, delete)

    def search_logged_models(
        self,
        experiment_ids: Sequence[str],
        *,
        filter_string: str | None = None,
        max_results: int = 100,
        order_by: Sequence[Mapping[str, Any]] | None = None,
        page_token: str | None = None,
        datasets: Sequence[Mapping[str, Any]] | None = None,
    ) -> Page[LoggedModel]:
        """Active logged models of the experiments, newest first. Filters on ``name``,
        ``status``, ``source_run_id``, ``model_type`` and ``tags.*`` with = / != / LIKE;
        ``datasets`` (``{dataset_name, dataset_digest?}``, any of them) keeps the models with
        a metric measured on one of those datasets, as MLflow."""
        from reprorun.tracking import search

        limit = _check_max_results(max_results)
        offset = search.decode_page_token(page_token)
        if not experiment_ids:
            return Page([])
        sql = search.SqlBuilder(self.db.dialect)
        exps = ", ".join(sql.bind(_exp_int(e)) for e in experiment_ids)
        conditions = [f"m.experiment_id IN ({exps})", "m.lifecycle_stage = 'active'"]
        for c in search.parse_model_filter(filter_string):
            if c.entity == search.TAG:
                link = f'x.model_id = m.model_id AND x."key" = {sql.bind(c.key)}'
                test = sql.compare("x.value", c.op, c.value)
                conditions.append(
                    f"EXISTS (SELECT 1 FROM logged_model_tags x WHERE {link} AND {test})"
                )
            else:
                conditions.append(sql.compare(f"m.{c.key}", c.op, c.value))
        if datasets:
            either = []
            for d in datasets:
                name = d.get("dataset_name")
                if not isinstance(name, str) or not name:
                    raise UserInputError(
                        "`dataset_name` in the `datasets` clause must be specified."
                    )
                test = f"x.dataset_name = {sql.bind(name)}"
                digest = d.get("dataset_digest")
                if digest:
                    test += f" AND x.dataset_digest = {sql.bind(str(digest))}"
                either.append(f"({test})")
            conditions.append(
                "EXISTS (SELECT 1 FROM logged_model_metrics x WHERE x.model_id = m.model_id "
                f"AND ({' OR '.join(either)}))"
            )
        terms = []
        for o in order_by or ():
            field_name = str(o.get("field_name", ""))
            column = field_name.removeprefix("attributes.")
            if column not in search.MODEL_ATTRIBUTES | {
                "creation_timestamp",
                "last_updated_timestamp",
            }:
                raise search_error(f"cannot order logged models by {field_name!r}")
            if column.endswith("timestamp"):
                column += "_ms"
            terms.append(f"m.{column} {'ASC' if o.get('ascending', True) else 'DESC'}")
        terms += ["m.creation_timestamp_ms DESC", "m.model_id"]
        where = "m " + _page_clause(conditions, terms, limit, offset)
        found = self.db.read(lambda c: self._logged_models(c, where, sql.params, alias="m."))
        return _page(found, limit, offset)

    def _update_model(
        self,
        model_id: str,
        sets: str,
        values: Mapping[str, Any] | None = None,
        also: Any = None,
    ) -> None:
        def update(conn: Connection) -> None:
            if not conn.execute(
                f"UPDATE logged_models SET {sets} WHERE model_id = :id",
                {"id": model_id, "t": now_ms(), **(values or {})},
            ):
                raise ResourceNotFound(f"Logged model with id={model_id} not found.")
            if also is not None:
                also(conn)

        self.db.write(update)

    def _write_model_items(
        self, conn: Connection, table: str, model_id: str, items: Mapping[str, str]
    ) -> None:
        conn.executemany(
            f'INSERT INTO {table} (model_id, "key", value) VALUES (:id, :k, :v) '
            'ON CONFLICT (model_id, "key") DO UPDATE SET value = excluded.value',
            [{"id": model_id, "k": k, "v": v} for k, v in items.items()],
        )

    def _logged_models(
        self, conn: Connection, where: str, params: Mapping[str, Any], alias: str = ""
    ) -> list[LoggedModel]:
        columns = ", ".join(alias + c for c in _MODEL_COLUMNS)
        rows = conn.fetch(f"SELECT {columns} FROM logged_models {where}", params)
        models = []
        for row in rows:
            items = {}
            for table in ("logged_model_tags", "logged_model_params"):
                items[table] = {
                    k: v
                    for k, v in conn.fetch(
                        f'SELECT "key", value FROM {table} WHERE model_id = :id', {"id": row[0]}
                    )
                }
            metrics = [
                ModelMetric(
                    key=r[0],
                    value=math.nan if r[2] else float(r[1]),
                    timestamp=int(r[3]),
                    step=int(r[4]),
                    run_id=r[5],
                    dataset_name=r[6],
                    dataset_digest=r[7],
                )
                for r in conn.fetch(
                    "SELECT metric_name, metric_value, is_nan, metric_timestamp_ms, metric_step, "
                    "run_id, dataset_name, dataset_digest FROM logged_model_metrics "
                    "WHERE model_id = :id ORDER BY metric_name, metric_timestamp_ms, metric_step, "
                    "run_id",
                    {"id": row[0]},
                )
            ]
            models.append(
                LoggedModel(
                    model_id=row[0],
                    experiment_id=str(row[1]),
                    name=row[2],
                    artifact_location=row[3],
                    creation_timestamp=int(row[4]),
                    last_updated_timestamp=int(row[5]),
                    status=LoggedModelStatus(row[6]),
                    lifecycle_stage=row[7],
                    model_type=row[8],
                    source_run_id=row[9],
                    status_message=row[10],
                    tags=items["logged_model_tags"],
                    params=items["logged_model_params"],
                    metrics=metrics,
                )
            )
        return models

    def _require_run(self, conn: Connection, run_id: str) -> None:
        """The run exists and is active: a deleted run takes no writes (as MLflow)."""
        rows = conn.fetch("SELECT lifecycle_stage FROM runs WHERE run_uuid = :id", {"id": run_id})
        if not rows:
            raise ResourceNotFound(f"Run with id={run_id} not found.")
        if rows[0][0] != "active":
            raise UserInputError(
                f"The run {run_id} must be in the 'active' state. Current state is {rows[0][0]}."
                " Restore it first (runs/restore)."
            )

    def _write_params(self, conn: Connection, run_id: str, params: Mapping[str, str]) -> None:
        if not params:
            return
        names = {f"k{i}": k for i, k in enumerate(params)}
        existing: dict[str, str] = dict(
            conn.fetch(  # type: ignore[arg-type]
                f'SELECT "key", value FROM params WHERE run_uuid = :id AND "key" IN '
                f"({', '.join(':' + n for n in names)})",
                {"id": run_id, **names},
            )
        )
        for key, value in params.items():
            if key in existing and existing[key] != value:
                raise ParamConflict(run_id, key, existing[key], value)
        conn.executemany(
            'INSERT INTO params (run_uuid, "key", value) VALUES (:id, :k, :v)',
            [{"id": run_id, "k": k, "v": v} for k, v in params.items() if k not in existing],
        )

    def _write_tags(self, conn: Connection, run_id: str, tags: Mapping[str, str]) -> None:
        conn.executemany(
            'INSERT INTO tags (run_uuid, "key", value) VALUES (:id, :k, :v) '
            'ON CONFLICT (run_uuid, "key") DO UPDATE SET value = excluded.value',
            [{"id": run_id, "k": k, "v": v} for k, v in tags.items()],
        )

    def _write_model_metrics(
        self, conn: Connection, run_id: str, metrics: Sequence[Metric]
    ) -> None:
        """Attach the points logged with a ``model_id`` to that logged model (MLflow 3); a
        point already attached (same model, key, time, step and run) is kept as it was."""
        points = [m for m in metrics if m.model_id]
        if not points:
            return
        model_ids = sorted({str(m.model_id) for m in points})
        names = {f"m{i}": model_id for i, model_id in enumerate(model_ids)}
        found = {
            r[0]
            for r in conn.fetch(
                f"SELECT model_id FROM logged_models WHERE model_id IN "
                f"({', '.join(':' + n for n in names)})",
                names,
            )
        }
        for model_id in model_ids:
            if model_id not in found:
                raise ResourceNotFound(f"Logged model with id={model_id} not found.")
        experiment = conn.fetch(
            "SELECT experiment_id FROM runs WHERE run_uuid = :id", {"id": run_id}
        )[0][0]
        rows = {
            (m.model_id, m.key, m.timestamp, m.step): {
                "model": m.model_id,
                "k": m.key,
                "t": m.timestamp,
                "s": m.step,
                "v": 0.0 if m.value != m.value else m.value,
                "nan": m.value != m.value,
                "exp": experiment,
                "run": run_id,
                "dn": m.dataset_name or None,
                "dd": m.dataset_digest or None,
            }
            for m in points
        }
        conn.executemany(
            "INSERT INTO logged_model_metrics (model_id, metric_name, metric_timestamp_ms, "
            "metric_step, metric_value, is_nan, experiment_id, run_id, dataset_name, "
            "dataset_digest) VALUES (:model, :k, :t, :s, :v, :nan, :exp, :run, :dn, :dd) "
            "ON CONFLICT (model_id, metric_name, metric_timestamp_ms, metric_step, run_id) "
            "DO NOTHING",
            list(rows.values()),
        )

    def _write_metrics(self, conn: Connection, run_id: str, metrics: Iterable[Metric]) -> None:
        rows: list[dict[str, Any]] = [
            {"id": run_id, "k": m.key, "v": m.value, "nan": False, "s": m.step, "t": m.timestamp}
            if m.value == m.value  # not NaN
            else {"id": run_id, "k": m.key, "v": 0.0, "nan": True, "s": m.step, "t": m.timestamp}
            for m in metrics
        ]
        if not rows:
            return
        # A point identical to one stored (key, value, step, timestamp) is not stored twice, as
        # in MLflow: its client re-sends a run's metrics when it links them to a logged model.
        # One indexed range query per key finds candidates; usually there are none.
        unique = {(r["k"], r["s"], r["t"], r["v"], r["nan"]): r for r in rows}
        by_key: dict[str, list[tuple[str, int, int, float, bool]]] = {}
        for point in unique:
            by_key.setdefault(point[0], []).append(point)
        for key, points in by_key.items():
            stored = conn.fetch(
                'SELECT "key", step, "timestamp", value, is_nan FROM metrics WHERE run_uuid = :id '
                'AND "key" = :k AND step BETWEEN :s0 AND :s1 AND "timestamp" BETWEEN :t0 AND :t1',
                {
                    "id": run_id,
                    "k": key,
                    "s0": min(p[1] for p in points),
                    "s1": max(p[1] for p in points),
                    "t0": min(p[2] for p in points),
                    "t1": max(p[2] for p in points),
                },
            )
            for k, step, timestamp, value, is_nan in stored:
                unique.pop((k, step, timestamp, value, bool(is_nan)), None)
        conn.executemany(
            'INSERT INTO metrics (run_uuid, "key", value, is_nan, step, "timestamp") '
            "VALUES (:id, :k, :v, :nan, :s, :t)",
            list(unique.values()),
        )
        # The latest value is the one at the highest step, then the latest timestamp (MLflow):
        # one upsert per key, with the batch's own latest point.
        latest: dict[str, dict[str, Any]] = {}
        for r in rows:
            best = latest.get(r["k"])
            if best is None or (r["s"], r["t"]) >= (best["s"], best["t"]):
                latest[r["k"]] = r
        conn.executemany(
            'INSERT INTO latest_metrics (run_uuid, "key", value, is_nan, step, "timestamp") '
            "VALUES (:id, :k, :v, :nan, :s, :t) "
            'ON CONFLICT (run_uuid, "key") DO UPDATE SET value = excluded.value, '
            'is_nan = excluded.is_nan, step = excluded.step, "timestamp" = excluded."timestamp" '
            "WHERE excluded.step > latest_metrics.step OR (excluded.step = latest_metrics.step "
            'AND excluded."timestamp" >= latest_metrics."timestamp")',
            list(latest.values()),
        )


_MODEL_COLUMNS = (
    "model_id",
    "experiment_id",
    "name",
    "artifact_location",
    "creation_timestamp_ms",
    "last_updated_timestamp_ms",
    "status",
    "lifecycle_stage",
    "model_type",
    "source_run_id",
    "status_message",
)


def search_error(message: str) -> UserInputError:
    return SearchError(f"Invalid order_by: {message}.")


def _check_max_results(max_results: int) -> int:
    if not isinstance(max_results, int) or isinstance(max_results, bool) or max_results < 1:
        raise UserInputError(f"max_results must be a positive integer, got {max_results!r}.")
    if max_results > MAX_RESULTS:
        raise UserInputError(  # MLflow's wording, which its clients match
            f"Invalid value {max_results} for parameter 'max_results' supplied: "
            f"it must be at most {MAX_RESULTS}."
        )
    return max_results


def _page_clause(conditions: list[str], terms: list[str], limit: int, offset: int) -> str:
    """WHERE, ORDER BY and one row more than a page (``_page`` tells a next page by it)."""
    return (
        f"WHERE {' AND '.join(conditions)} ORDER BY {', '.join(terms)} "
        f"LIMIT {limit + 1} OFFSET {offset}"
    )


def _page(found: list[Any], limit: int, offset: int) -> Page[Any]:
    """One more row than asked was fetched: its presence means there is a next page."""
    from reprorun.tracking.search import encode_page_token

    if len(found) > limit:
        return Page(found[:limit], encode_page_token(offset + limit))
    return Page(found)


def _run_info(row: Row) -> RunInfo:
    return RunInfo(
        run_id=row[0],
        experiment_id=str(row[1]),
        run_name=row[2] or "",
        status=RunStatus(row[3]),
        start_time=int(row[4]),
        end_time=None if row[5] is None else int(row[5]),
        artifact_uri=row[6],
        user_id=row[7] or "",
        lifecycle_stage=row[8],
    )


def _exp_int(experiment_id: str) -> int:
    try:
        return int(experiment_id)
    except (TypeError, ValueError):
        raise ResourceNotFound(
            f"No experiment with id {experiment_id!r} (ids are integers)."
        ) from None


def _check_model_metric(m: Metric) -> None:
    """The model and dataset a metric point names, if any, fit their columns."""
    for what, value, limit in (
        ("model_id", m.model_id, 64),
        ("dataset_name", m.dataset_name, 500),
        ("dataset_digest", m.dataset_digest, 36),
    ):
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            raise UserInputError(
                f"Invalid {what} {value!r} of metric {m.key!r}: expected a string of at most "
                f"{limit} characters."
            )


def _check_length(key: str, kind: str) -> None:
    """A logged model's tag or parameter key: MLflow checks only its length."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY:
        raise UserInputError(f"Invalid {kind} key {key!r}: expected 1 to {MAX_KEY} characters.")


def _check_items(
    items: Mapping[str, str],
    max_value: int,
    kind: str,
    check_key: Callable[[str, str], None] = validation.check_key,
) -> None:
    """Keys as MLflow accepts them (``validation.check_key`` unless told), string values of at
    most ``max_value`` characters."""
    for key, value in items.items():
        check_key(key, kind)
        if not isinstance(value, str):
            raise UserInputError(
                f"The {kind} {key!r} must be a string, got {type(value).__name__}."
            )
        if len(value) > max_value:
            raise UserInputError(
                f"The {kind} {key!r} is {len(value)} characters long; the limit is {max_value}."
            )


_ADJECTIVES = (
    "bold",
    "calm",
    "eager",
    "gentle",
    "keen",
    "lucid",
    "merry",
    "nimble",
    "quiet",
    "swift",
    "tidy",
    "witty",
)
_NOUNS = (
    "ash",
    "brook",
    "cedar",
    "dune",
    "fern",
    "grove",
    "heron",
    "iris",
    "lark",
    "moss",
    "oak",
    "reef",
)


def _generated_name(run_id: str) -> str:
    """A readable default run name derived from the id, like MLflow's "bold-heron-123"."""
    n = int(run_id[:8], 16)
    return f"{_ADJECTIVES[n % 12]}-{_NOUNS[(n // 12) % 12]}-{n % 1000}"
