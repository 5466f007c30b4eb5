"""The model registry, MLflow's: registered models (tags, aliases), their numbered versions
(tags, stages kept for old clients), search with MLflow's filter grammar.

Errors and messages are MLflow's (its clients and REST tests match them). A deleted version
keeps its number in the internal stage ``Deleted_Internal`` and is invisible everywhere, so
numbers are never reused; deleting a registered model removes everything of it.
"""

from __future__ import annotations

import json
import re
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

MAX_NAME = 256
MAX_TAG_VALUE = 5000
MAX_DESCRIPTION = 5000
MAX_SOURCE = 1000
MAX_MODELS_PAGE = 1000  # MLflow's limits for search_registered_models / search_model_versions
MAX_VERSIONS_PAGE = 200_000
MODEL_VERSIONS_TAG = "mlflow.modelVersions"
PROMPT_TAG = "mlflow.prompt.is_prompt"  # on a logged model: the versions made from it

_ALIAS = re.compile(r"^[\w\-]*$")
_VERSION_ALIAS = re.compile(r"^[vV]\d+$")
_VERSION_COLUMNS = (
    "name, version, creation_time, last_updated_time, description, user_id, current_stage, "
    "source, storage_location, run_id, run_link, model_id, status, status_message"
)
_MODEL_ORDER = {
    "name": "m.name",
    "timestamp": "m.creation_time",
    "creation_timestamp": "m.creation_time",
    "last_updated_timestamp": "m.last_updated_time",
}
_VERSION_ORDER = {
    "name": "v.name",
    "version_number": "v.version",
    "creation_timestamp": "v.creation_time",
    "timestamp": "v.creation_time",
    "last_updated_timestamp": "v.last_updated_time",
    "run_id": "v.run_id",
    "source_path": "v.source",
}
_MODEL_FILTER_KEYS = frozenset({"name"})
_VERSION_FILTER_KEYS = frozenset({"name", "run_id", "source_path", "version_number", "model_id"})


# --- checks, with MLflow's messages ---------------------------------------------------------


def check_model_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise UserInputError("Registered model name cannot be empty.")
    if len(name) > MAX_NAME:
        raise UserInputError(
            f"Registered model name is {len(name)} characters long; the limit is {MAX_NAME}."
        )
    return name


def version_number(version: Any) -> int:
    """A version as MLflow takes it: an integer, or a string of one."""
    try:
        if isinstance(version, bool):
            raise ValueError
        number = int(version)
    except (TypeError, ValueError):
        raise UserInputError(f"Parameter 'version' must be an integer, got '{version}'.") from None
    return number


def check_alias(alias: Any) -> str:
    if not isinstance(alias, str) or not alias:
        raise UserInputError("Registered model alias name cannot be empty.")
    if not _ALIAS.match(alias):
        raise UserInputError(
            f"Invalid alias name: '{alias}'. Names may only contain alphanumerics, "
            "underscores, and hyphens."
        )
    if len(alias) > 255:
        raise UserInputError(f"Registered model alias name is longer than 255: '{alias}'.")
    if alias.lower() == "latest":
        raise UserInputError("'latest' alias name (case insensitive) is reserved.")
    if _VERSION_ALIAS.match(alias):
        raise UserInputError(f"Version alias name '{alias}' is reserved.")
    return alias


def _check_text(value: Any, what: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise UserInputError(f"The {what} must be a string, got {type(value).__name__}.")
    if len(value) > limit:
        raise UserInputError(f"The {what} is {len(value)} characters long; the limit is {limit}.")
    return value


def _not_found(name: str) -> ResourceNotFound:
    return ResourceNotFound(f"Registered Model with name={name} not found")


def _version_not_found(name: str, version: int | str) -> ResourceNotFound:
    return ResourceNotFound(f"Model Version (name={name}, version={version}) not found")


def _max_results(value: Any, limit: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UserInputError(f"max_results must be a positive integer, got {value!r}.")
    if value > limit:
        raise UserInputError(
            "Invalid value for request parameter max_results. "
            f"It must be at most {limit}, but got value {value}"
        )
    return value


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
        _check_text(description, "description", MAX_DESCRIPTION)

        def create(conn: Connection) -> None:
            t = now_ms()
            if not conn.execute(
                "INSERT INTO registered_models (name, creation_time, last_updated_time, "
                "description) VALUES (:n, :t, :t, :d) ON CONFLICT (name) DO NOTHING",
                {"n": name, "t": t, "d": description},
            ):
                raise ResourceAlreadyExists(f"Registered Model (name={name}) already exists.")
            _write_tags(conn, "registered_model_tags", {"name": name}, tags or {})

        self.db.write(create)
        return self.get_registered_model(name)

    def get_registered_model(self, name: str) -> RegisteredModel:
        check_model_name(name)
        found = self.db.read(lambda c: _models(c, "WHERE m.name = :n", {"n": name}))
        if not found:
            raise _not_found(name)
        return found[0]

    def update_registered_model(self, name: str, description: str | None) -> RegisteredModel:
        _check_text(description, "description", MAX_DESCRIPTION)
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
                raise _not_found(name)
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
                raise _not_found(name)
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

        limit = _max_results(max_results, MAX_MODELS_PAGE)
        offset = search.decode_page_token(page_token)
        sql = search.SqlBuilder(self.db.dialect)
        clauses = _parse_filter(filter_string, frozenset(), _MODEL_FILTER_KEYS)
        conditions = [_prompts(clauses, "m.name")]
        for c in clauses:
            _check_filter_clause(c, _MODEL_FILTER_KEYS, "registered models")
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
        terms = _order_terms(order_by, _MODEL_ORDER, "m.name")
        where = page_clause(conditions, terms, limit, offset)
        found = self.db.read(lambda c: _models(c, where, sql.params))
        return page(found, limit, offset)

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        check_items({key: value}, MAX_TAG_VALUE, "registered model tag")
        self._touch_model(
            name,
            "",
            also=lambda c: _write_tags(c, "registered_model_tags", {"name": name}, {key: value}),
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
                raise _not_found(name)
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
        _check_text(source, "model version source", MAX_SOURCE)
        _check_text(description, "description", MAX_DESCRIPTION)
        _check_text(run_link, "run_link", 500)
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
                raise _not_found(name)
            location, found_run, found_model = _source_location(conn, source)
            latest = conn.fetch(
                "SELECT MAX(version) FROM model_versions WHERE name = :n", {"n": name}
            )[0][0]
            number = int(latest or 0) + 1
            conn.execute(
                f"INSERT INTO model_versions ({_VERSION_COLUMNS}) VALUES (:n, :v, :t, :t, :d, "
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
            _write_tags(conn, "model_version_tags", {"name": name, "version": number}, tags or {})
            if model_id or found_model:
                _note_version_on_logged_model(conn, str(model_id or found_model), name, number)
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
        _check_text(description, "description", MAX_DESCRIPTION)
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

        limit = _max_results(max_results, MAX_VERSIONS_PAGE)
        offset = search.decode_page_token(page_token)
        sql = search.SqlBuilder(self.db.dialect)
        numeric = frozenset({"version_number"})
        clauses = _parse_filter(filter_string, numeric, _VERSION_FILTER_KEYS)
        conditions = [f"v.current_stage != {sql.bind(STAGE_DELETED)}", _prompts(clauses, "v.name")]
        for c in clauses:
            _check_filter_clause(c, _VERSION_FILTER_KEYS, "model versions")
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
        terms = _order_terms(order_by, _VERSION_ORDER, "v.name")
        if "v.version DESC" not in terms and "v.version ASC" not in terms:
            terms.append("v.version DESC")
        where = page_clause(conditions, terms, limit, offset)
        found = self.db.read(lambda c: _versions(c, where, sql.params))
        return page(found, limit, offset)

    def set_model_version_tag(self, name: str, version: str | int, key: str, value: str) -> None:
        check_items({key: value}, MAX_TAG_VALUE, "model version tag")
        number = version_number(version)
        self._touch_version(
            name,
            number,
            "",
            also=lambda c: _write_tags(
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
        found = _versions(
            conn,
            "WHERE v.name = :n AND v.version = :v AND v.current_stage != :deleted",
            {"n": name, "v": number, "deleted": STAGE_DELETED},
        )
        if not found:
            raise _version_not_found(name, number)
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
                raise _not_found(name)
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
                raise _version_not_found(name, number)
            conn.execute(
                "UPDATE registered_models SET last_updated_time = :t WHERE name = :n",
                {"n": name, "t": now_ms()},
            )
            if also is not None:
                also(conn)

        self.db.write(update)


# --- reading and writing rows ---------------------------------------------------------------


def _write_tags(
    conn: Connection, table: str, owner: Mapping[str, Any], tags: Mapping[str, str]
) -> None:
    columns = ", ".join(owner)
    conn.executemany(
        f'INSERT INTO {table} ({columns}, "key", value) VALUES '
        f"({', '.join(':' + c for c in owner)}, :k, :val) "
        f'ON CONFLICT ({columns}, "key") DO UPDATE SET value = excluded.value',
        [{**owner, "k": k, "val": v} for k, v in tags.items()],
    )


def _prompts(clauses: Sequence[Any], name_column: str) -> str:
    """MLflow keeps prompts in the registry as models tagged ``mlflow.prompt.is_prompt``:
    a search returns only the others unless its filter asks for prompts
    (``tags.`mlflow.prompt.is_prompt` = 'true'``). MLflow's clients add
    ``!= 'true'`` to every search, which models without the tag satisfy."""
    prompt = (
        f"EXISTS (SELECT 1 FROM registered_model_tags p WHERE p.name = {name_column} AND "
        f"p.\"key\" = '{PROMPT_TAG}' AND p.value = 'true')"
    )
    for c in clauses:
        if c.entity == "tag" and c.key == PROMPT_TAG and isinstance(c.value, str):
            wanted = (c.op == "=" and c.value.lower() == "true") or (
                c.op == "!=" and c.value.lower() == "false"
            )
            return prompt if wanted else f"NOT {prompt}"
    return f"NOT {prompt}"


def _check_filter_clause(clause: Any, keys: frozenset[str], what: str) -> None:
    from reprorun.errors import SearchError
    from reprorun.tracking import search

    if clause.entity == search.TAG:
        if clause.op not in search.STRING_OPS:
            raise SearchError(f"Invalid filter for {what}: {clause.op} cannot compare tags.")
        return
    if clause.entity != search.ATTRIBUTE or clause.key not in keys:
        raise SearchError(
            f"Invalid filter for {what}: cannot filter on {clause.key!r}; use "
            f"{', '.join(sorted(keys))} or tags.<key>."
        )
    if clause.op in search.SET_OPS and clause.key != "run_id":
        raise SearchError(f"Invalid filter for {what}: {clause.op} only compares run_id.")


def _order_terms(order_by: Sequence[str] | None, columns: Mapping[str, str], tie: str) -> list[str]:
    from reprorun.errors import SearchError
    from reprorun.tracking import search

    terms: list[str] = []
    seen: set[str] = set()
    for o in search.parse_order_by(order_by, set(columns)):
        if o.entity != search.ATTRIBUTE:
            raise SearchError(
                f"Invalid order_by: cannot order by {o.entity} {o.key!r}; use "
                f"{', '.join(sorted(columns))}."
            )
        column = columns[o.key.lower()]
        if column in seen:
            raise SearchError(f"`order_by` contains duplicate fields: {list(order_by or ())}")
        seen.add(column)
        terms.append(f"{column} {'ASC' if o.ascending else 'DESC'}")
    if tie not in seen:
        terms.append(f"{tie} ASC")
    return terms


_CHUNK = 500  # names bound per statement (SQLite's default limit on binds is 32,766)


def _by_names(
    conn: Connection, sql: str, names: Sequence[str], extra: Mapping[str, Any] | None = None
) -> list[Any]:
    """Rows of ``sql`` (whose ``{names}`` is replaced by ``(:n0, :n1, ...)``) for every name,
    a chunk of names per statement: plain bound IN lists, which both databases answer from
    the name's index."""
    unique = sorted(set(names))
    rows: list[Any] = []
    for i in range(0, len(unique), _CHUNK):
        chunk = unique[i : i + _CHUNK]
        binds = {f"n{j}": name for j, name in enumerate(chunk)}
        listed = "(" + ", ".join(":" + b for b in binds) + ")"
        rows += conn.fetch(sql.replace("{names}", listed), {**binds, **(extra or {})})
    return rows


def _versions(conn: Connection, where: str, params: Mapping[str, Any]) -> list[ModelVersion]:
    """The versions ``where`` selects, with their tags and aliases (three statements whatever
    their number)."""
    columns = ", ".join("v." + c.strip() for c in _VERSION_COLUMNS.split(","))
    rows = conn.fetch(f"SELECT {columns} FROM model_versions v {where}", params)
    if not rows:
        return []
    names = [r[0] for r in rows]
    tags: dict[tuple[str, int], dict[str, str]] = {}
    for name, version, key, value in _by_names(
        conn,
        'SELECT name, version, "key", value FROM model_version_tags WHERE name IN {names}',
        names,
    ):
        tags.setdefault((name, int(version)), {})[key] = value
    aliases: dict[tuple[str, int], list[str]] = {}
    for name, alias, version in _by_names(
        conn,
        "SELECT name, alias, version FROM registered_model_aliases WHERE name IN {names} "
        "ORDER BY alias",
        names,
    ):
        aliases.setdefault((name, int(version)), []).append(alias)
    return [
        ModelVersion(
            name=r[0],
            version=int(r[1]),
            creation_timestamp=int(r[2]),
            last_updated_timestamp=int(r[3]),
            description=r[4],
            user_id=r[5],
            current_stage=r[6],
            source=r[7],
            storage_location=r[8],
            run_id=r[9],
            run_link=r[10],
            model_id=r[11],
            status=r[12],
            status_message=r[13],
            tags=tags.get((r[0], int(r[1])), {}),
            aliases=aliases.get((r[0], int(r[1])), []),
        )
        for r in rows
    ]


def _models(conn: Connection, where: str, params: Mapping[str, Any]) -> list[RegisteredModel]:
    """The registered models ``where`` selects, with their tags, aliases and latest version
    of each stage (a fixed number of statements whatever their number)."""
    rows = conn.fetch(
        "SELECT m.name, m.creation_time, m.last_updated_time, m.description "
        f"FROM registered_models m {where}",
        params,
    )
    if not rows:
        return []
    names = [r[0] for r in rows]
    tags: dict[str, dict[str, str]] = {}
    for name, key, value in _by_names(
        conn, 'SELECT name, "key", value FROM registered_model_tags WHERE name IN {names}', names
    ):
        tags.setdefault(name, {})[key] = value
    aliases: dict[str, dict[str, int]] = {}
    for name, alias, version in _by_names(
        conn,
        "SELECT name, alias, version FROM registered_model_aliases WHERE name IN {names} "
        "ORDER BY alias",
        names,
    ):
        aliases.setdefault(name, {})[alias] = int(version)
    # The newest version of each (model, stage), in full.
    latest: dict[str, list[ModelVersion]] = {}
    unique = sorted(set(names))
    for i in range(0, len(unique), _CHUNK):
        binds: dict[str, Any] = {f"n{j}": n for j, n in enumerate(unique[i : i + _CHUNK])}
        listed = ", ".join(":" + b for b in binds)
        newest = (
            "JOIN (SELECT name, current_stage, MAX(version) AS newest FROM model_versions "
            f"WHERE name IN ({listed}) AND current_stage != :deleted "
            "GROUP BY name, current_stage) l ON v.name = l.name AND v.version = l.newest"
        )
        for v in _versions(conn, newest, {**binds, "deleted": STAGE_DELETED}):
            latest.setdefault(v.name, []).append(v)
    for found in latest.values():
        found.sort(key=lambda v: v.version)
    return [
        RegisteredModel(
            name=r[0],
            creation_timestamp=int(r[1]),
            last_updated_timestamp=int(r[2]),
            description=r[3],
            tags=tags.get(r[0], {}),
            aliases=aliases.get(r[0], {}),
            latest_versions=latest.get(r[0], []),
        )
        for r in rows
    ]


def _source_location(conn: Connection, source: str) -> tuple[str | None, str | None, str | None]:
    """Where a ``models:/`` source's files are, with the run and logged model it names:
    ``models:/m-<id>`` (a logged model of this store) or ``models:/<name>/<version>``."""
    if not source.startswith("models:/"):
        return None, None, None
    from reprorun.tracking.registry_entities import parse_models_uri

    ref = parse_models_uri(source)
    if ref.model_id is not None:
        rows = conn.fetch(
            "SELECT artifact_location, source_run_id FROM logged_models WHERE model_id = :id",
            {"id": ref.model_id},
        )
        if not rows:
            raise ResourceNotFound(f"Logged model with id={ref.model_id} not found.")
        return rows[0][0], rows[0][1], ref.model_id
    assert ref.name is not None
    if ref.version is not None:
        where = "AND version = :v"
        values: dict[str, Any] = {"v": ref.version}
    elif ref.alias is not None:
        where = (
            "AND version = (SELECT version FROM registered_model_aliases "
            "WHERE name = :n AND alias = :a)"
        )
        values = {"a": ref.alias}
    else:  # latest, or a stage
        where = "AND current_stage != :deleted"
        values = {"deleted": STAGE_DELETED}
        if ref.stage is not None:
            where, values = "AND current_stage = :s", {"s": ref.stage}
        where += " ORDER BY version DESC LIMIT 1"
    rows = conn.fetch(
        "SELECT COALESCE(storage_location, source), run_id, model_id FROM model_versions "
        f"WHERE name = :n AND current_stage != '{STAGE_DELETED}' {where}",
        {"n": ref.name, **values},
    )
    if not rows:
        raise ResourceNotFound(f"No model version for {source}.")
    return rows[0][0], rows[0][1], rows[0][2]


def _note_version_on_logged_model(conn: Connection, model_id: str, name: str, number: int) -> None:
    """As MLflow's server: the logged model's ``mlflow.modelVersions`` tag lists the versions
    registered from it (a model this store does not hold is left alone)."""
    rows = conn.fetch("SELECT 1 FROM logged_models WHERE model_id = :id", {"id": model_id})
    if not rows:
        return
    current = conn.fetch(
        'SELECT value FROM logged_model_tags WHERE model_id = :id AND "key" = :k',
        {"id": model_id, "k": MODEL_VERSIONS_TAG},
    )
    try:
        listed = json.loads(current[0][0]) if current and current[0][0] else []
    except ValueError:
        listed = []
    if not isinstance(listed, list):
        listed = []
    entry = {"name": name, "version": number}
    if entry in listed:
        return
    listed.append(entry)
    conn.execute(
        'INSERT INTO logged_model_tags (model_id, "key", value) VALUES (:id, :k, :v) '
        'ON CONFLICT (model_id, "key") DO UPDATE SET value = excluded.value',
        {"id": model_id, "k": MODEL_VERSIONS_TAG, "v": json.dumps(listed)},
    )


__all__ = [
    "MODEL_VERSIONS_TAG",
    "RegistryStore",
    "check_alias",
    "check_model_name",
    "version_number",
]
