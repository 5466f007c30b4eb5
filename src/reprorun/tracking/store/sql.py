"""The tracking store over SQL: experiments, runs, params, metrics (full history), tags.

Every public method is one transaction; ``create_run`` and ``log_batch`` write a whole batch
at once. Queries are plain SQL valid on SQLite and PostgreSQL (see ``database.py``).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from reprorun.errors import (
    ParamConflict,
    ResourceAlreadyExists,
    ResourceNotFound,
    StoreVersionError,
    TrackingError,
    UserInputError,
)
from reprorun.tracking.entities import (
    Experiment,
    Metric,
    Run,
    RunData,
    RunInfo,
    RunStatus,
    SystemTags,
    now_ms,
)
from reprorun.tracking.store.database import Connection, Database, Row, SqliteDatabase

SCHEMA_VERSION = 1  # keep equal to schema.SCHEMA_VERSION (a test checks)
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
        name = name.strip()
        if not name:
            raise UserInputError("An experiment name must not be empty.")

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

    def get_or_create_experiment(self, name: str) -> str:
        found = self.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.create_experiment(name)
        except ResourceAlreadyExists:  # created by a concurrent run in between
            found = self.get_experiment_by_name(name)
            assert found is not None
            return found.experiment_id

    def _experiments(
        self, conn: Connection, where: str, params: Mapping[str, Any]
    ) -> list[Experiment]:
        rows = conn.fetch(
            "SELECT experiment_id, name, artifact_location, lifecycle_stage, creation_time, "
            f"last_update_time FROM experiments {where}",
            params,
        )
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
                raise TrackingError(f"Experiment {experiment_id} is deleted; restore it first.")
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
            raise ResourceNotFound(f"No run with id {run_id!r}.")
        return runs[0]

    def resolve_run_id(self, prefix: str) -> str:
        """A full run id from a unique prefix (at least 4 characters), as git does for commits."""
        prefix = prefix.strip().lower()
        if len(prefix) == 32:
            return prefix
        if len(prefix) < 4 or not all(c in "0123456789abcdef" for c in prefix):
            raise ResourceNotFound(
                f"No run with id {prefix!r} (give the full id or at least 4 hex digits)."
            )
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

    def search_runs(self, experiment_ids: Sequence[str], *, max_results: int = 1000) -> list[Run]:
        """Active runs of the experiments, newest first."""
        if not experiment_ids:
            return []
        ids = {f"e{i}": _exp_int(e) for i, e in enumerate(experiment_ids)}
        where = (
            f"WHERE experiment_id IN ({', '.join(':' + k for k in ids)}) "
            "AND lifecycle_stage = 'active' ORDER BY start_time DESC, run_uuid LIMIT :limit"
        )
        return self.db.read(lambda c: self._runs(c, where, {**ids, "limit": int(max_results)}))

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
            sets.append("end_time = :end")
            values["end"] = end_time
        if run_name is not None:
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
                raise ResourceNotFound(f"No run with id {run_id!r}.")
            if changed and run_name is not None:
                self._write_tags(conn, run_id, {SystemTags.RUN_NAME: run_name})
            return changed > 0

        return self.db.write(update)

    def _runs(self, conn: Connection, where: str, params: Mapping[str, Any]) -> list[Run]:
        rows = conn.fetch(f"SELECT {_RUN_COLUMNS} FROM runs {where}", params)
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
        for metric in metrics:
            _check_key(metric.key, "metric")

        def write(conn: Connection) -> None:
            self._require_run(conn, run_id)
            self._write_params(conn, run_id, params)
            self._write_tags(conn, run_id, tags)
            self._write_metrics(conn, run_id, metrics)

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
                'WHERE run_uuid = :id AND "key" = :k ORDER BY step, "timestamp", id',
                {"id": run_id, "k": key},
            )
        )
        return [Metric(r[0], math.nan if r[2] else float(r[1]), int(r[3]), int(r[4])) for r in rows]

    def _require_run(self, conn: Connection, run_id: str) -> None:
        if not conn.fetch("SELECT 1 FROM runs WHERE run_uuid = :id", {"id": run_id}):
            raise ResourceNotFound(f"No run with id {run_id!r}.")

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

    def _write_metrics(self, conn: Connection, run_id: str, metrics: Iterable[Metric]) -> None:
        rows = [
            {
                "id": run_id,
                "k": m.key,
                "v": 0.0 if math.isnan(m.value) else m.value,
                "nan": math.isnan(m.value),
                "s": m.step,
                "t": m.timestamp,
            }
            for m in metrics
        ]
        if not rows:
            return
        conn.executemany(
            'INSERT INTO metrics (run_uuid, "key", value, is_nan, step, "timestamp") '
            "VALUES (:id, :k, :v, :nan, :s, :t)",
            rows,
        )
        # The latest value is the one at the highest step, then the latest timestamp (MLflow).
        conn.executemany(
            'INSERT INTO latest_metrics (run_uuid, "key", value, is_nan, step, "timestamp") '
            "VALUES (:id, :k, :v, :nan, :s, :t) "
            'ON CONFLICT (run_uuid, "key") DO UPDATE SET value = excluded.value, '
            'is_nan = excluded.is_nan, step = excluded.step, "timestamp" = excluded."timestamp" '
            "WHERE excluded.step > latest_metrics.step OR (excluded.step = latest_metrics.step "
            'AND excluded."timestamp" >= latest_metrics."timestamp")',
            rows,
        )


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


def _check_key(key: str, kind: str) -> None:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY:
        raise UserInputError(f"Invalid {kind} key {key!r}: expected 1 to {MAX_KEY} characters.")


def _check_items(items: Mapping[str, str], max_value: int, kind: str) -> None:
    for key, value in items.items():
        _check_key(key, kind)
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
