"""MLflow 3's logged models: create, read, search, tags and params, and the metric points
attached to them."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from reprorun.errors import ResourceNotFound, UserInputError
from reprorun.tracking import validation
from reprorun.tracking.entities import (
    LoggedModel,
    LoggedModelStatus,
    Metric,
    ModelMetric,
    Page,
    now_ms,
)
from reprorun.tracking.store.database import Connection
from reprorun.tracking.store.sql.common import (
    MAX_PARAM_VALUE,
    MAX_TAG_VALUE,
    StoreBase,
    artifact_path,
    check_items,
    check_length,
    check_max_results,
    exp_int,
    generated_name,
    page,
    page_clause,
    search_error,
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


class LoggedModelStore(StoreBase):
    """The logged models part of ``SqlStore``."""

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
        name = name or generated_name(model_id[2:])
        if source_run_id is not None and (
            not isinstance(source_run_id, str) or len(source_run_id) > 32
        ):
            raise UserInputError(
                f"Invalid source_run_id {source_run_id!r}: expected a run id of at most 32 "
                "characters."
            )
        check_items(dict(tags or {}), MAX_TAG_VALUE, "model tag", check_length)
        check_items(dict(params or {}), MAX_PARAM_VALUE, "model parameter", check_length)

        def create(conn: Connection) -> None:
            rows = conn.fetch(
                "SELECT artifact_location FROM experiments WHERE experiment_id = :id",
                {"id": exp_int(experiment_id)},
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
            location = artifact_path(rows[0][0], "models", model_id, "artifacts")
            t = now_ms()
            conn.execute(
                "INSERT INTO logged_models (model_id, experiment_id, name, artifact_location, "
                "creation_timestamp_ms, last_updated_timestamp_ms, status, lifecycle_stage, "
                "model_type, source_run_id) VALUES (:id, :exp, :name, :loc, :t, :t, 'PENDING', "
                "'active', :type, :run)",
                {
                    "id": model_id,
                    "exp": exp_int(experiment_id),
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
        check_items(dict(tags), MAX_TAG_VALUE, "model tag", check_length)
        self._update_model(
            model_id,
            "last_updated_timestamp_ms = :t",
            {},
            lambda c: self._write_model_items(c, "logged_model_tags", model_id, tags),
        )

    def log_logged_model_params(self, model_id: str, params: Mapping[str, str]) -> None:
        check_items(dict(params), MAX_PARAM_VALUE, "model parameter", check_length)
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

        limit = check_max_results(max_results)
        offset = search.decode_page_token(page_token)
        if not experiment_ids:
            return Page([])
        sql = search.SqlBuilder(self.db.dialect)
        exps = ", ".join(sql.bind(exp_int(e)) for e in experiment_ids)
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
        where = "m " + page_clause(conditions, terms, limit, offset)
        found = self.db.read(lambda c: self._logged_models(c, where, sql.params, alias="m."))
        return page(found, limit, offset)

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


def write_model_metrics(conn: Connection, run_id: str, metrics: Sequence[Metric]) -> None:
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
    experiment = conn.fetch("SELECT experiment_id FROM runs WHERE run_uuid = :id", {"id": run_id})[
        0
    ][0]
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


def check_model_metric(m: Metric) -> None:
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
