"""The model registry, MLflow's: registered models (tags, aliases), their numbered versions
(tags, stages kept for old clients), search with MLflow's filter grammar.

Errors and messages are MLflow's (its clients and REST tests match them). A deleted version
keeps its number in the internal stage ``Deleted_Internal`` and is invisible everywhere, so
numbers are never reused; deleting a registered model removes everything of it. The rows,
limits and checks are in ``registry_rows``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reprorun.errors import ResourceAlreadyExists, ResourceNotFound, UserInputError
from reprorun.tracking.entities import Page, now_ms
from reprorun.tracking.registry_entities import (
    ACTIVE_STAGES,
    READY,
    STAGE_ARCHIVED,
    STAGE_DELETED,
    STAGE_NONE,
    STAGES,
    ModelVersion,
    RegisteredModel,
    canonical_stage,
)
from reprorun.tracking.store.database import Connection
from reprorun.tracking.store.sql.common import StoreBase, check_items, page, page_clause
from reprorun.tracking.store.sql.registry_rows import (
    MAX_DESCRIPTION,
    MAX_MODELS_PAGE,
    MAX_SOURCE,
    MAX_TAG_VALUE,
    MAX_VERSIONS_PAGE,
    MODEL_FILTER_KEYS,
    MODEL_ORDER,
    MODEL_VERSIONS_TAG,
    PROMPT_TAG,
    VERSION_COLUMNS,
    VERSION_FILTER_KEYS,
    VERSION_ORDER,
    check_alias,
    check_filter_clause,
    check_model_name,
    check_text,
    checked_max_results,
    model_not_found,
    note_version_on_logged_model,
    order_terms,
    prompts_condition,
    read_models,
    read_versions,
    source_location,
    version_not_found,
    version_number,
    write_tags,
)


class RegistryStore(StoreBase):
    """The model registry part of ``SqlStore``."""

    # --- registered models --------------------------------------------------------------

    def create_registered_model(
        self,
        name: str,
        tags: Mapping[str, str] | None = None,
        description: str | None = None,
    ) -> RegisteredModel:
        check_model_name(name)
        check_items(dict(tags or {}), MAX_TAG_VALUE, "registered model tag")
        check_text(description, "description", MAX_DESCRIPTION)

        def create(conn: Connection) -> None:
            t = now_ms()
            if not conn.execute(
                "INSERT INTO registered_models (name, creation_time, last_updated_time, "
                "description) VALUES (:n, :t, :t, :d) ON CONFLICT (name) DO NOTHING",
                {"n": name, "t": t, "d": description},
            ):
                raise ResourceAlreadyExists(f"Registered Model (name={name}) already exists.")
            write_tags(conn, "registered_model_tags", {"name": name}, tags or {})

        self.db.write(create)
        return self.get_registered_model(name)

    def get_registered_model(self, name: str) -> RegisteredModel:
        check_model_name(name)
        found = self.db.read(lambda c: read_models(c, "WHERE m.name = :n", {"n": name}))
        if not found:
            raise model_not_found(name)
        return found[0]

    def update_registered_model(self, name: str, description: str | None) -> RegisteredModel:
        check_text(description, "description", MAX_DESCRIPTION)
        self._touch_model(name, "description = :d", {"d": description})
        return self.get_registered_model(name)

    def rename_registered_model(self, name: str, new_name: str) -> RegisteredModel:
        check_model_name(name)
        check_model_name(new_name)

        def rename(conn: Connection) -> None:
            rows = conn.fetch(
                "SELECT creation_time, description FROM registered_models WHERE name = :n",
                {"n": name},
            )
            if not rows:
                raise model_not_found(name)
            if new_name == name:
                return
            t = now_ms()
            # The new row first, the rows naming the model moved to it, then the old row
            # goes: every foreign key holds at each step, on SQLite and PostgreSQL.
            if not conn.execute(
                "INSERT INTO registered_models (name, creation_time, last_updated_time, "
                "description) VALUES (:n, :c, :t, :d) ON CONFLICT (name) DO NOTHING",
                {"n": new_name, "c": rows[0][0], "t": t, "d": rows[0][1]},
            ):
                raise ResourceAlreadyExists(f"Registered Model (name={new_name}) already exists.")
            for table in (
                "registered_model_tags",
                "registered_model_aliases",
                "model_version_tags",
            ):
                conn.execute(
                    f"UPDATE {table} SET name = :new WHERE name = :old",
                    {"new": new_name, "old": name},
                )
            conn.execute(
                "UPDATE model_versions SET name = :new, last_updated_time = :t WHERE name = :old",
                {"new": new_name, "old": name, "t": t},
            )
            conn.execute("DELETE FROM registered_models WHERE name = :n", {"n": name})

        self.db.write(rename)
        return self.get_registered_model(new_name)

    def delete_registered_model(self, name: str) -> None:
        check_model_name(name)

        def delete(conn: Connection) -> None:
            if not conn.fetch("SELECT 1 FROM registered_models WHERE name = :n", {"n": name}):
                raise model_not_found(name)
            for table in (
                "model_version_tags",
                "registered_model_aliases",
                "registered_model_tags",
                "model_versions",
                "registered_models",
            ):
                conn.execute(f"DELETE FROM {table} WHERE name = :n", {"n": name})

        self.db.write(delete)

    def search_registered_models(
        self,
        filter_string: str | None = None,
        max_results: int = 100,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> Page[RegisteredModel]:
        """MLflow's filter: ``name`` and ``tags.<key>`` with =, !=, LIKE, ILIKE (joined by
        AND); order by ``name``, ``creation_timestamp`` (``timestamp``) or
        ``last_updated_timestamp``; name ascending by default and to break ties."""
        from reprorun.tracking import search
        from reprorun.tracking.search.grammar import _parse_filter

        limit = checked_max_results(max_results, MAX_MODELS_PAGE)
        offset = search.decode_page_token(page_token)
        sql = search.SqlBuilder(self.db.dialect)
        clauses = _parse_filter(filter_string, frozenset(), MODEL_FILTER_KEYS)
        conditions = [prompts_condition(clauses, "m.name")]
        for c in clauses:
            check_filter_clause(c, MODEL_FILTER_KEYS, "registered models")
            if c.entity == search.TAG and c.key == PROMPT_TAG:
                continue
            if c.entity == search.TAG:
                link = f'x.name = m.name AND x."key" = {sql.bind(c.key)}'
                test = sql.compare("x.value", c.op, c.value)
                conditions.append(
                    f"EXISTS (SELECT 1 FROM registered_model_tags x WHERE {link} AND {test})"
                )
            else:
                conditions.append(sql.compare("m.name", c.op, c.value))
        terms = order_terms(order_by, MODEL_ORDER, "m.name")
        where = page_clause(conditions, terms, limit, offset)
        found = self.db.read(lambda c: read_models(c, where, sql.params))
        return page(found, limit, offset)

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        check_items({key: value}, MAX_TAG_VALUE, "registered model tag")
        self._touch_model(
            name,
            "",
            also=lambda c: write_tags(c, "registered_model_tags", {"name": name}, {key: value}),
        )

    def delete_registered_model_tag(self, name: str, key: str) -> None:
        def delete(conn: Connection) -> None:
            conn.execute(
                'DELETE FROM registered_model_tags WHERE name = :n AND "key" = :k',
                {"n": name, "k": key},
            )

        self._touch_model(name, "", also=delete)

    # --- aliases ---------------------------------------------------------------------------

    def set_registered_model_alias(self, name: str, alias: str, version: str | int) -> None:
        check_alias(alias)
        number = version_number(version)

        def set_alias(conn: Connection) -> None:
            self._version_row(conn, name, number)
            conn.execute(
                "INSERT INTO registered_model_aliases (name, alias, version) VALUES (:n, :a, :v) "
                "ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version",
                {"n": name, "a": alias, "v": number},
            )

        self._touch_model(name, "", also=set_alias)

    def delete_registered_model_alias(self, name: str, alias: str) -> None:
        check_alias(alias)

        def delete(conn: Connection) -> None:
            conn.execute(
                "DELETE FROM registered_model_aliases WHERE name = :n AND alias = :a",
                {"n": name, "a": alias},
            )

        self._touch_model(name, "", also=delete)

    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        check_model_name(name)

        def find(conn: Connection) -> ModelVersion:
            if not conn.fetch("SELECT 1 FROM registered_models WHERE name = :n", {"n": name}):
                raise model_not_found(name)
            rows = conn.fetch(
                "SELECT version FROM registered_model_aliases WHERE name = :n AND alias = :a",
                {"n": name, "a": alias},
            )
            if not rows:
                raise ResourceNotFound(f"Registered model alias {alias} not found.")
            return self._version_row(conn, name, int(rows[0][0]))

        return self.db.read(find)

    # --- versions ----------------------------------------------------------------------------

    def get_latest_versions(
        self, name: str, stages: Sequence[str] | None = None
    ) -> list[ModelVersion]:
        """The newest version in each stage (of ``stages``, all by default)."""
        wanted = {canonical_stage(s) for s in stages} if stages else set(STAGES)
        model = self.get_registered_model(name)
        return [v for v in model.latest_versions if v.current_stage in wanted]

    def create_model_version(
        self,
        name: str,
        source: str,
        run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        run_link: str | None = None,
        description: str | None = None,
        model_id: str | None = None,
        *,
        user_id: str | None = None,
        storage_location: str | None = None,
    ) -> ModelVersion:
        """The next version of ``name`` (READY at once: the files are not copied).
        ``source`` may be ``models:/m-<id>`` or ``models:/<name>/<version>``: its files'
        location is kept beside it (``storage_location``, what the download URI gives)."""
        check_model_name(name)
        if not isinstance(source, str) or not source:
            raise UserInputError("Missing value for required parameter 'source'.")
        check_text(source, "model version source", MAX_SOURCE)
        check_text(description, "description", MAX_DESCRIPTION)
        check_text(run_link, "run_link", 500)
        if run_id is not None and (not isinstance(run_id, str) or len(run_id) > 32):
            raise UserInputError(f"Invalid run_id {run_id!r}: expected a run id.")
        check_items(dict(tags or {}), MAX_TAG_VALUE, "model version tag")

        def create(conn: Connection) -> int:
            t = now_ms()
            # Locks the model's row (PostgreSQL) so concurrent creators number in turn.
            if not conn.execute(
                "UPDATE registered_models SET last_updated_time = :t WHERE name = :n",
                {"n": name, "t": t},
            ):
                raise model_not_found(name)
            location, found_run, found_model = source_location(conn, source)
            latest = conn.fetch(
                "SELECT MAX(version) FROM model_versions WHERE name = :n", {"n": name}
            )[0][0]
            number = int(latest or 0) + 1
            conn.execute(
                f"INSERT INTO model_versions ({VERSION_COLUMNS}) VALUES (:n, :v, :t, :t, :d, "
                ":u, :stage, :src, :loc, :run, :link, :model, :status, NULL)",
                {
                    "n": name,
                    "v": number,
                    "t": t,
                    "d": description,
                    "u": user_id,
                    "stage": STAGE_NONE,
                    "src": source,
                    "loc": storage_location or location,
                    "run": run_id or found_run,
                    "link": run_link or None,
                    "model": model_id or found_model,
                    "status": READY,
                },
            )
            write_tags(conn, "model_version_tags", {"name": name, "version": number}, tags or {})
            if model_id or found_model:
                note_version_on_logged_model(conn, str(model_id or found_model), name, number)
            return number

        number = self.db.write(create)
        return self.get_model_version(name, number)

    def get_model_version(self, name: str, version: str | int) -> ModelVersion:
        check_model_name(name)
        number = version_number(version)
        return self.db.read(lambda c: self._version_row(c, name, number))

    def update_model_version(
        self, name: str, version: str | int, description: str | None
    ) -> ModelVersion:
        check_text(description, "description", MAX_DESCRIPTION)
        self._touch_version(name, version, "description = :d", {"d": description})
        return self.get_model_version(name, version)

    def transition_model_version_stage(
        self, name: str, version: str | int, stage: str, archive_existing_versions: bool = False
    ) -> ModelVersion:
        """Move a version to a stage (old clients; aliases replace stages). With
        ``archive_existing_versions``, the others in that stage (Staging or Production) are
        archived."""
        target = canonical_stage(stage)
        if archive_existing_versions and target not in ACTIVE_STAGES:
            raise UserInputError(
                "Model version transition cannot archive existing model versions because "
                f"'{stage}' is not an Active stage. Valid stages are {list(ACTIVE_STAGES)}"
            )
        number = version_number(version)

        def archive(conn: Connection) -> None:
            if archive_existing_versions:
                conn.execute(
                    "UPDATE model_versions SET current_stage = :a, last_updated_time = :t "
                    "WHERE name = :n AND version != :v AND current_stage = :s",
                    {"a": STAGE_ARCHIVED, "t": now_ms(), "n": name, "v": number, "s": target},
                )

        self._touch_version(name, number, "current_stage = :s", {"s": target}, also=archive)
        return self.get_model_version(name, number)

    def delete_model_version(self, name: str, version: str | int) -> None:
        number = version_number(version)

        def forget(conn: Connection) -> None:
            key = {"n": name, "v": number}
            conn.execute(
                "DELETE FROM registered_model_aliases WHERE name = :n AND version = :v", key
            )
            conn.execute("DELETE FROM model_version_tags WHERE name = :n AND version = :v", key)

        # As MLflow: the row stays (its number is never given again), emptied of what it held.
        self._touch_version(
            name,
            number,
            "current_stage = :deleted, description = NULL, user_id = NULL, "
            "source = 'REDACTED-SOURCE-PATH', storage_location = NULL, "
            "run_id = 'REDACTED-RUN-ID', run_link = 'REDACTED-RUN-LINK', status_message = NULL",
            {"deleted": STAGE_DELETED},
            also=forget,
        )

    def search_model_versions(
        self,
        filter_string: str | None = None,
        max_results: int = 10_000,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> Page[ModelVersion]:
        """MLflow's filter: ``name``, ``source_path``, ``run_id`` (also IN), ``model_id``,
        ``version_number`` (compared as a number) and ``tags.<key>``; default order name
        ascending, then version descending."""
        from reprorun.tracking import search
        from reprorun.tracking.search.grammar import _parse_filter

        limit = checked_max_results(max_results, MAX_VERSIONS_PAGE)
        offset = search.decode_page_token(page_token)
        sql = search.SqlBuilder(self.db.dialect)
        numeric = frozenset({"version_number"})
        clauses = _parse_filter(filter_string, numeric, VERSION_FILTER_KEYS)
        conditions = [
            f"v.current_stage != {sql.bind(STAGE_DELETED)}",
            prompts_condition(clauses, "v.name"),
        ]
        for c in clauses:
            check_filter_clause(c, VERSION_FILTER_KEYS, "model versions")
            if c.entity == search.TAG and c.key == PROMPT_TAG:
                continue
            if c.entity == search.TAG:
                link = f'x.name = v.name AND x.version = v.version AND x."key" = {sql.bind(c.key)}'
                test = sql.compare("x.value", c.op, c.value)
                conditions.append(
                    f"EXISTS (SELECT 1 FROM model_version_tags x WHERE {link} AND {test})"
                )
            elif c.key == "version_number":
                value = c.value
                number = int(value) if isinstance(value, float) and value.is_integer() else value
                conditions.append(sql.compare("v.version", c.op, number))
            else:
                column = {"source_path": "v.source"}.get(c.key, f"v.{c.key}")
                value = c.value
                if c.op in search.SET_OPS and isinstance(value, tuple):
                    value = tuple(str(x) for x in value)
                conditions.append(sql.compare(column, c.op, value))
        terms = order_terms(order_by, VERSION_ORDER, "v.name")
        if "v.version DESC" not in terms and "v.version ASC" not in terms:
            terms.append("v.version DESC")
        where = page_clause(conditions, terms, limit, offset)
        found = self.db.read(lambda c: read_versions(c, where, sql.params))
        return page(found, limit, offset)

    def set_model_version_tag(self, name: str, version: str | int, key: str, value: str) -> None:
        check_items({key: value}, MAX_TAG_VALUE, "model version tag")
        number = version_number(version)
        self._touch_version(
            name,
            number,
            "",
            also=lambda c: write_tags(
                c, "model_version_tags", {"name": name, "version": number}, {key: value}
            ),
        )

    def delete_model_version_tag(self, name: str, version: str | int, key: str) -> None:
        number = version_number(version)

        def delete(conn: Connection) -> None:
            conn.execute(
                'DELETE FROM model_version_tags WHERE name = :n AND version = :v AND "key" = :k',
                {"n": name, "v": number, "k": key},
            )

        self._touch_version(name, number, "", also=delete)

    def get_model_version_download_uri(self, name: str, version: str | int) -> str:
        return self.get_model_version(name, version).download_uri

    # --- helpers ---------------------------------------------------------------------------

    def _version_row(self, conn: Connection, name: str, number: int) -> ModelVersion:
        found = read_versions(
            conn,
            "WHERE v.name = :n AND v.version = :v AND v.current_stage != :deleted",
            {"n": name, "v": number, "deleted": STAGE_DELETED},
        )
        if not found:
            raise version_not_found(name, number)
        return found[0]

    def _touch_model(
        self, name: str, sets: str, values: Mapping[str, Any] | None = None, also: Any = None
    ) -> None:
        check_model_name(name)
        assignments = ", ".join(s for s in (sets, "last_updated_time = :t") if s)

        def update(conn: Connection) -> None:
            if not conn.execute(
                f"UPDATE registered_models SET {assignments} WHERE name = :n",
                {"n": name, "t": now_ms(), **(values or {})},
            ):
                raise model_not_found(name)
            if also is not None:
                also(conn)

        self.db.write(update)

    def _touch_version(
        self,
        name: str,
        version: str | int,
        sets: str,
        values: Mapping[str, Any] | None = None,
        also: Any = None,
    ) -> None:
        check_model_name(name)
        number = version_number(version)
        assignments = ", ".join(s for s in (sets, "last_updated_time = :t") if s)

        def update(conn: Connection) -> None:
            if not conn.execute(
                f"UPDATE model_versions SET {assignments} WHERE name = :n AND version = :v "
                "AND current_stage != :gone",
                {"n": name, "v": number, "t": now_ms(), "gone": STAGE_DELETED, **(values or {})},
            ):
                raise version_not_found(name, number)
            conn.execute(
                "UPDATE registered_models SET last_updated_time = :t WHERE name = :n",
                {"n": name, "t": now_ms()},
            )
            if also is not None:
                also(conn)

        self.db.write(update)


__all__ = [
    "MODEL_VERSIONS_TAG",
    "RegistryStore",
    "check_alias",
    "check_model_name",
    "version_number",
]
