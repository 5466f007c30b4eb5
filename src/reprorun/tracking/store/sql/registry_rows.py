"""The model registry's rows and rules, for ``registry.RegistryStore``: MLflow's limits and
checks (with its messages), reading registered models and versions a page at a time (a fixed
number of statements), the search helpers, and what a ``models:/`` source points at."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from reprorun.errors import ResourceNotFound, UserInputError
from reprorun.tracking.registry_entities import (
    STAGE_DELETED,
    ModelVersion,
    RegisteredModel,
)
from reprorun.tracking.store.database import Connection

MAX_NAME = 256
MAX_TAG_VALUE = 5000
MAX_DESCRIPTION = 5000
MAX_SOURCE = 1000
MAX_MODELS_PAGE = 1000  # MLflow's limits for search_registered_models / search_model_versions
MAX_VERSIONS_PAGE = 200_000
MODEL_VERSIONS_TAG = "mlflow.modelVersions"  # on a logged model: the versions made from it
PROMPT_TAG = "mlflow.prompt.is_prompt"  # MLflow's prompts are registered models with it

_ALIAS = re.compile(r"^[\w\-]*$")
_VERSION_ALIAS = re.compile(r"^[vV]\d+$")
VERSION_COLUMNS = (
    "name, version, creation_time, last_updated_time, description, user_id, current_stage, "
    "source, storage_location, run_id, run_link, model_id, status, status_message"
)
MODEL_ORDER = {
    "name": "m.name",
    "timestamp": "m.creation_time",
    "creation_timestamp": "m.creation_time",
    "last_updated_timestamp": "m.last_updated_time",
}
VERSION_ORDER = {
    "name": "v.name",
    "version_number": "v.version",
    "creation_timestamp": "v.creation_time",
    "timestamp": "v.creation_time",
    "last_updated_timestamp": "v.last_updated_time",
    "run_id": "v.run_id",
    "source_path": "v.source",
}
MODEL_FILTER_KEYS = frozenset({"name"})
VERSION_FILTER_KEYS = frozenset({"name", "run_id", "source_path", "version_number", "model_id"})


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


def check_text(value: Any, what: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise UserInputError(f"The {what} must be a string, got {type(value).__name__}.")
    if len(value) > limit:
        raise UserInputError(f"The {what} is {len(value)} characters long; the limit is {limit}.")
    return value


def model_not_found(name: str) -> ResourceNotFound:
    return ResourceNotFound(f"Registered Model with name={name} not found")


def version_not_found(name: str, version: int | str) -> ResourceNotFound:
    return ResourceNotFound(f"Model Version (name={name}, version={version}) not found")


def checked_max_results(value: Any, limit: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UserInputError(f"max_results must be a positive integer, got {value!r}.")
    if value > limit:
        raise UserInputError(
            "Invalid value for request parameter max_results. "
            f"It must be at most {limit}, but got value {value}"
        )
    return value


# --- reading and writing rows ---------------------------------------------------------------


def write_tags(
    conn: Connection, table: str, owner: Mapping[str, Any], tags: Mapping[str, str]
) -> None:
    columns = ", ".join(owner)
    conn.executemany(
        f'INSERT INTO {table} ({columns}, "key", value) VALUES '
        f"({', '.join(':' + c for c in owner)}, :k, :val) "
        f'ON CONFLICT ({columns}, "key") DO UPDATE SET value = excluded.value',
        [{**owner, "k": k, "val": v} for k, v in tags.items()],
    )


def prompts_condition(clauses: Sequence[Any], name_column: str) -> str:
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


def check_filter_clause(clause: Any, keys: frozenset[str], what: str) -> None:
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


def order_terms(order_by: Sequence[str] | None, columns: Mapping[str, str], tie: str) -> list[str]:
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


CHUNK = 500  # names bound per statement (SQLite's default limit on binds is 32,766)


def by_names(
    conn: Connection, sql: str, names: Sequence[str], extra: Mapping[str, Any] | None = None
) -> list[Any]:
    """Rows of ``sql`` (whose ``{names}`` is replaced by ``(:n0, :n1, ...)``) for every name,
    a chunk of names per statement: plain bound IN lists, which both databases answer from
    the name's index."""
    unique = sorted(set(names))
    rows: list[Any] = []
    for i in range(0, len(unique), CHUNK):
        chunk = unique[i : i + CHUNK]
        binds = {f"n{j}": name for j, name in enumerate(chunk)}
        listed = "(" + ", ".join(":" + b for b in binds) + ")"
        rows += conn.fetch(sql.replace("{names}", listed), {**binds, **(extra or {})})
    return rows


def read_versions(conn: Connection, where: str, params: Mapping[str, Any]) -> list[ModelVersion]:
    """The versions ``where`` selects, with their tags and aliases (three statements whatever
    their number)."""
    columns = ", ".join("v." + c.strip() for c in VERSION_COLUMNS.split(","))
    rows = conn.fetch(f"SELECT {columns} FROM model_versions v {where}", params)
    if not rows:
        return []
    names = [r[0] for r in rows]
    tags: dict[tuple[str, int], dict[str, str]] = {}
    for name, version, key, value in by_names(
        conn,
        'SELECT name, version, "key", value FROM model_version_tags WHERE name IN {names}',
        names,
    ):
        tags.setdefault((name, int(version)), {})[key] = value
    aliases: dict[tuple[str, int], list[str]] = {}
    for name, alias, version in by_names(
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


def read_models(conn: Connection, where: str, params: Mapping[str, Any]) -> list[RegisteredModel]:
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
    for name, key, value in by_names(
        conn, 'SELECT name, "key", value FROM registered_model_tags WHERE name IN {names}', names
    ):
        tags.setdefault(name, {})[key] = value
    aliases: dict[str, dict[str, int]] = {}
    for name, alias, version in by_names(
        conn,
        "SELECT name, alias, version FROM registered_model_aliases WHERE name IN {names} "
        "ORDER BY alias",
        names,
    ):
        aliases.setdefault(name, {})[alias] = int(version)
    # The newest version of each (model, stage), in full.
    latest: dict[str, list[ModelVersion]] = {}
    unique = sorted(set(names))
    for i in range(0, len(unique), CHUNK):
        binds: dict[str, Any] = {f"n{j}": n for j, n in enumerate(unique[i : i + CHUNK])}
        listed = ", ".join(":" + b for b in binds)
        newest = (
            "JOIN (SELECT name, current_stage, MAX(version) AS newest FROM model_versions "
            f"WHERE name IN ({listed}) AND current_stage != :deleted "
            "GROUP BY name, current_stage) l ON v.name = l.name AND v.version = l.newest"
        )
        for v in read_versions(conn, newest, {**binds, "deleted": STAGE_DELETED}):
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


def source_location(conn: Connection, source: str) -> tuple[str | None, str | None, str | None]:
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


def note_version_on_logged_model(conn: Connection, model_id: str, name: str, number: int) -> None:
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
