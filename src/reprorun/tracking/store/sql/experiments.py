"""Experiments: create, read, search, rename, delete/restore, tags."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reprorun.errors import ResourceAlreadyExists, ResourceNotFound, UserInputError
from reprorun.tracking import validation
from reprorun.tracking.entities import Experiment, Page, ViewType, now_ms
from reprorun.tracking.store.database import Connection
from reprorun.tracking.store.sql.common import (
    DEFAULT_EXPERIMENT_ID,
    MAX_TAG_VALUE,
    StoreBase,
    artifact_path,
    check_items,
    check_max_results,
    exp_int,
    page,
    page_clause,
    search_error,
)


class ExperimentStore(StoreBase):
    """The experiments part of ``SqlStore``."""

    def create_experiment(
        self, name: str, artifact_location: str | None = None, tags: Mapping[str, str] | None = None
    ) -> str:
        name = validation.check_experiment_name(name)
        check_items(dict(tags or {}), MAX_TAG_VALUE, "experiment tag")

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
            location = artifact_location or artifact_path(self.artifact_root, exp_id)
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
            lambda c: read_experiments(
                c, "WHERE experiment_id = :id", {"id": exp_int(experiment_id)}
            )
        )
        if not exp:
            raise ResourceNotFound(f"No experiment with id {experiment_id!r}.")
        return exp[0]

    def get_experiment_by_name(self, name: str) -> Experiment | None:
        exp = self.db.read(lambda c: read_experiments(c, "WHERE name = :n", {"n": name}))
        return exp[0] if exp else None

    def list_experiments(self) -> list[Experiment]:
        return self.db.read(
            lambda c: read_experiments(
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
        limit = check_max_results(max_results)
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
        where = "e " + page_clause(conditions, terms, limit, offset)
        found = self.db.read(lambda c: read_experiments(c, where, sql.params, alias="e."))
        return page(found, limit, offset)

    def rename_experiment(self, experiment_id: str, new_name: str) -> None:
        new_name = validation.check_experiment_name(new_name)

        def rename(conn: Connection) -> None:
            self._require_experiment(conn, experiment_id)
            taken = conn.fetch(
                "SELECT experiment_id FROM experiments WHERE name = :n", {"n": new_name}
            )
            if taken and str(taken[0][0]) != str(exp_int(experiment_id)):
                raise ResourceAlreadyExists(f"An experiment named {new_name!r} already exists.")
            conn.execute(
                "UPDATE experiments SET name = :n, last_update_time = :t WHERE experiment_id = :id",
                {"n": new_name, "t": now_ms(), "id": exp_int(experiment_id)},
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
            values = {"s": stage, "t": now_ms(), "id": exp_int(experiment_id)}
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
        check_items({key: value}, MAX_TAG_VALUE, "experiment tag")

        def write(conn: Connection) -> None:
            self._require_experiment(conn, experiment_id)
            conn.execute(
                'INSERT INTO experiment_tags (experiment_id, "key", value) VALUES (:id, :k, :v) '
                'ON CONFLICT (experiment_id, "key") DO UPDATE SET value = excluded.value',
                {"id": exp_int(experiment_id), "k": key, "v": value},
            )

        self.db.write(write)

    def delete_experiment_tag(self, experiment_id: str, key: str) -> None:
        def delete(conn: Connection) -> None:
            self._require_experiment(conn, experiment_id)
            if not conn.execute(
                'DELETE FROM experiment_tags WHERE experiment_id = :id AND "key" = :k',
                {"id": exp_int(experiment_id), "k": key},
            ):
                raise ResourceNotFound(f"Experiment {experiment_id} has no tag {key!r}.")

        self.db.write(delete)

    def _require_experiment(
        self, conn: Connection, experiment_id: str, stage: str = "active"
    ) -> None:
        """The experiment exists in ``stage``; otherwise MLflow's error for the case."""
        rows = conn.fetch(
            "SELECT lifecycle_stage FROM experiments WHERE experiment_id = :id",
            {"id": exp_int(experiment_id)},
        )
        if not rows:
            raise ResourceNotFound(f"No experiment with id {experiment_id!r}.")
        if rows[0][0] != stage:
            raise UserInputError(
                f"The experiment {experiment_id} must be in the '{stage}' state. Current state "
                f"is {rows[0][0]}."
            )


def read_experiments(
    conn: Connection, where: str, params: Mapping[str, Any], alias: str = ""
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
