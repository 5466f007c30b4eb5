"""Runs and what they log: create, read, search, update, delete/restore; params, metrics (full
history and latest) and tags, each batch in one transaction."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from reprorun.errors import ParamConflict, ResourceNotFound, SearchError, UserInputError
from reprorun.tracking import validation
from reprorun.tracking.entities import (
    Metric,
    Page,
    Run,
    RunData,
    RunInfo,
    RunStatus,
    SystemTags,
    ViewType,
    now_ms,
)
from reprorun.tracking.store.base import run_id_prefix
from reprorun.tracking.store.database import Connection, Row
from reprorun.tracking.store.sql.common import (
    MAX_PARAM_VALUE,
    MAX_TAG_VALUE,
    StoreBase,
    artifact_path,
    check_items,
    check_max_results,
    exp_int,
    generated_name,
    page,
    page_clause,
)
from reprorun.tracking.store.sql.logged_models import check_model_metric, write_model_metrics

_RUN_COLUMNS = (
    "run_uuid, experiment_id, name, status, start_time, end_time, artifact_uri, user_id, "
    "lifecycle_stage"
)
# What params and latest_metrics copy from their run (search/plans.py reads them), selected
# from the run itself: ``INSERT ... SELECT :id, ..., {_RUN_COPY}``.
_RUN_COPY = "experiment_id, start_time FROM runs WHERE run_uuid = :id"


class RunStore(StoreBase):
    """The runs part of ``SqlStore``: runs and their params, metrics and tags."""

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
        name = run_name or generated_name(run_id)
        all_tags = {**(tags or {}), SystemTags.RUN_NAME: name}
        if user_id:
            all_tags.setdefault(SystemTags.USER, user_id)
        check_items(params or {}, MAX_PARAM_VALUE, "parameter")
        check_items(all_tags, MAX_TAG_VALUE, "tag")

        def create(conn: Connection) -> str:
            rows = conn.fetch(
                "SELECT artifact_location, lifecycle_stage FROM experiments "
                "WHERE experiment_id = :id",
                {"id": exp_int(experiment_id)},
            )
            if not rows:
                raise ResourceNotFound(f"No experiment with id {experiment_id!r}.")
            if rows[0][1] != "active":
                raise UserInputError(
                    f"The experiment {experiment_id} must be in the 'active' state. Current "
                    "state is deleted; restore it first."
                )
            artifact_uri = artifact_path(rows[0][0], run_id, "artifacts")
            conn.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (:id, :exp, :name, :status, :start, "
                "NULL, :uri, :user, 'active')",
                {
                    "id": run_id,
                    "exp": exp_int(experiment_id),
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
        grammar), ordered by ``order_by`` then newest first, one page at a time.

        One experiment ordered by nothing, a metric or a param is read through an index plan
        (``search.plans``) with keyset page tokens; anything else as one sorted statement with
        offset tokens. Both give the same runs in the same order."""
        from reprorun.tracking import search
        from reprorun.tracking.search import plans

        clauses = search.parse_filter(filter_string)
        order = search.parse_order_by(order_by, search.RUN_ORDER_ATTRIBUTES)
        limit = check_max_results(max_results)
        position = plans.decode_token(page_token)
        if not experiment_ids:
            return Page([])
        fingerprint = plans.query_fingerprint(
            sorted(str(e) for e in experiment_ids),
            run_view_type.value,
            filter_string or "",
            list(order_by or []),
        )
        if isinstance(position, plans.Cursor) and position.query != fingerprint:
            raise SearchError(
                "Invalid page token: it belongs to another search (other experiments, filter or "
                "order_by); send the same search with it, or start from the first page."
            )
        sql = search.SqlBuilder(self.db.dialect)
        exps = ", ".join(sql.bind(exp_int(e)) for e in experiment_ids)
        stages = ", ".join(sql.bind(s) for s in run_view_type.stages)
        stage = f"r.lifecycle_stage IN ({stages})"
        conditions = [f"r.experiment_id IN ({exps})", stage]
        scope = dict(sql.params)  # the experiments and stages only, bound before the rest
        columns = ", ".join("r." + c.strip() for c in _RUN_COLUMNS.split(","))
        unique = list(dict.fromkeys(exp_int(e) for e in experiment_ids))

        def read(conn: Connection) -> Page[Run]:
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
            kind = plans.plan_kind(order, experiment_ids)
            if kind == "param" and any(
                conn.fetch(plans.long_param_probe(self.db.dialect), {"e": e, "k": order[0].key})
                for e in unique
            ):
                kind = None  # a value longer than the index's prefix: sort them all
            if isinstance(position, plans.Cursor) and position.kind != kind:
                raise SearchError(
                    "Invalid page token: the runs changed since it was given in a way that "
                    "changes how this search is read (a param value over "
                    f"{plans.PARAM_PREFIX} characters); start again from the first page."
                )
            driver = plans.driving_metric(clauses) if kind in ("runs", "oldest") else None
            filters = search.compile_runs_filter(
                [c for c in clauses if c is not driver],
                sql,
                dataset_runs=dataset_runs,
                probe=kind is not None,
            )
            if kind is None:
                offset = position if isinstance(position, int) else 0
                terms = search.compile_runs_order(order, sql)
                statement = f"SELECT {columns} FROM runs r {' '.join(sql.joins)} " + page_clause(
                    conditions + filters, terms, limit, offset
                )
                return page(self._runs_from(conn, conn.fetch(statement, sql.params)), limit, offset)
            if isinstance(position, int) and position:
                raise SearchError(
                    "Invalid page token: an offset token (from an older reprorun) cannot "
                    "continue this search, which now pages by position; start from the first page."
                )
            plan = plans.build_plan(kind, order, sql.bind, self.db.dialect, driver)
            experiments = [sql.bind(e) for e in unique]
            cursor = position if isinstance(position, plans.Cursor) else None
            first = cursor.segment if cursor else 0
            if not 0 <= first < len(plan.segments):
                raise SearchError("Invalid page token: no such part of this search.")
            found: list[tuple[Row, int, tuple[Any, ...]]] = []
            for index in range(first, len(plan.segments)):
                segment = plan.segments[index]
                where = [*segment.where, stage, *filters]
                if cursor is not None and index == cursor.segment:
                    where.append(plans.after_condition(segment.order, cursor.after, sql.bind))
                statement = plans.segment_statement(
                    segment, experiments, where, columns, limit + 1 - len(found)
                )
                rows = conn.fetch(statement, sql.params)
                width = len(segment.order)
                found += [(row[:-width], index, tuple(row[-width:])) for row in rows]
                if len(found) > limit:
                    break
            runs = self._runs_from(conn, [row for row, _, _ in found[:limit]])
            if len(found) <= limit:
                return Page(runs)
            _, index, values = found[limit - 1]
            after = tuple(float(v) if isinstance(v, float) else v for v in values)
            return Page(runs, plans.encode_cursor(plans.Cursor(kind, index, after, fingerprint)))

        return self.db.read(read)

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
            check_items({SystemTags.RUN_NAME: run_name}, MAX_TAG_VALUE, "tag")
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
        check_items(params, MAX_PARAM_VALUE, "parameter")
        check_items(tags, MAX_TAG_VALUE, "tag")
        for m in metrics:
            validation.check_metric(m.key, m.value, m.timestamp, m.step)
            check_model_metric(m)

        def write(conn: Connection) -> None:
            self._require_run(conn, run_id)
            self._write_params(conn, run_id, params)
            self._write_tags(conn, run_id, tags)
            self._write_metrics(conn, run_id, metrics)
            write_model_metrics(conn, run_id, metrics)

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
            'INSERT INTO params (run_uuid, "key", value, experiment_id, start_time) '
            f"SELECT :id, :k, :v, {_RUN_COPY}",
            [{"id": run_id, "k": k, "v": v} for k, v in params.items() if k not in existing],
        )

    def _write_tags(self, conn: Connection, run_id: str, tags: Mapping[str, str]) -> None:
        conn.executemany(
            'INSERT INTO tags (run_uuid, "key", value, experiment_id) '
            "SELECT :id, :k, :v, experiment_id FROM runs WHERE run_uuid = :id "
            'ON CONFLICT (run_uuid, "key") DO UPDATE SET value = excluded.value',
            [{"id": run_id, "k": k, "v": v} for k, v in tags.items()],
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
            'INSERT INTO latest_metrics (run_uuid, "key", value, is_nan, step, "timestamp", '
            f"experiment_id, start_time) SELECT :id, :k, :v, :nan, :s, :t, {_RUN_COPY} "
            'ON CONFLICT (run_uuid, "key") DO UPDATE SET value = excluded.value, '
            'is_nan = excluded.is_nan, step = excluded.step, "timestamp" = excluded."timestamp" '
            "WHERE excluded.step > latest_metrics.step OR (excluded.step = latest_metrics.step "
            'AND excluded."timestamp" >= latest_metrics."timestamp")',
            list(latest.values()),
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
