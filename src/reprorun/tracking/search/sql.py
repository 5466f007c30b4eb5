"""Parsed search clauses as SQL: WHERE conditions and ORDER BY terms over the runs and
experiments tables, with named placeholders only (values never enter the SQL text).

``datasets.*`` clauses are not compiled here: the store matches them in Python
(reprorun.tracking.search.datasets) and passes the runs found.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from reprorun.errors import SearchError
from reprorun.tracking.search.grammar import (
    ATTRIBUTE,
    DATASET,
    METRIC,
    NULL_OPS,
    PARAM,
    SET_OPS,
    TAG,
    Clause,
    OrderBy,
)

# Each run attribute a filter or order can name, and its column; the numeric ones are
# grammar.RUN_NUMERIC_ATTRIBUTES, which the parser compares with numbers.
_RUN_STRING_ATTRIBUTES = {
    "run_id": "run_uuid",
    "run_name": "name",
    "run name": "name",
    "status": "status",
    "user_id": "user_id",
    "artifact_uri": "artifact_uri",
    "lifecycle_stage": "lifecycle_stage",
}
_RUN_NUMERIC_ATTRIBUTES = {
    "start_time": "start_time",
    "end_time": "end_time",
    "created": "start_time",
}

RUN_SEARCH_ATTRIBUTES = {*_RUN_STRING_ATTRIBUTES, *_RUN_NUMERIC_ATTRIBUTES} - {"lifecycle_stage"}
# Beyond MLflow: runs can also be ordered by how long they took (the UI's duration column).
RUN_ORDER_ATTRIBUTES = RUN_SEARCH_ATTRIBUTES | {"duration"}


class SqlBuilder:
    """Collects WHERE/JOIN fragments and their named parameters for one statement."""

    def __init__(self, dialect: str):
        self.dialect = dialect
        self.params: dict[str, Any] = {}
        self.joins: list[str] = []

    def bind(self, value: Any) -> str:
        name = f"q{len(self.params)}"
        self.params[name] = value
        return ":" + name

    def compare(self, column: str, op: str, value: Any) -> str:
        # A backslash is an ordinary character everywhere (PostgreSQL would read it as an
        # escape; SQLite's LIKE and GLOB do not).
        escape = "" if self.dialect == "sqlite" else " ESCAPE ''"
        if op == "LIKE":
            if self.dialect == "sqlite":  # SQLite's LIKE ignores case; GLOB does not.
                return f"{column} GLOB {self.bind(_like_to_glob(str(value)))}"
            return f"{column} LIKE {self.bind(value)}{escape}"
        if op == "ILIKE":
            # LOWER is Unicode-aware on SQLite too (database.py registers Python's).
            return f"LOWER({column}) LIKE LOWER({self.bind(value)}){escape}"
        if op in SET_OPS:
            assert isinstance(value, tuple)
            if not value:
                return "1 = 0" if op == "IN" else "1 = 1"
            names = ", ".join(self.bind(v) for v in value)
            return f"{column} {op} ({names})"
        return f"{column} {op} {self.bind(value)}"

    def member_of(self, column: str, values: Sequence[str]) -> str:
        """``column`` is one of ``values``, bound as one JSON list however many they are."""
        items = self.bind(json.dumps(list(values)))
        if self.dialect == "sqlite":
            return f"{column} IN (SELECT value FROM json_each({items}))"
        return f"{column} IN (SELECT json_array_elements_text(CAST({items} AS json)))"


def _like_to_glob(pattern: str) -> str:
    out = []
    for ch in pattern:
        out.append({"%": "*", "_": "?", "*": "[*]", "?": "[?]", "[": "[[]"}.get(ch, ch))
    return "".join(out)


def compile_runs_filter(
    clauses: Sequence[Clause],
    sql: SqlBuilder,
    run: str = "r",
    dataset_runs: Sequence[str] | None = None,
    *,
    probe: bool = False,
) -> list[str]:
    """WHERE conditions over the runs table aliased ``run``. ``datasets.*`` clauses keep the
    runs ``dataset_runs`` names (what ``runs_matching_datasets`` found); they need it.

    ``probe``: each param/metric/tag test stays a lookup made for each run read (what an index
    plan wants: it reads runs in order and stops at a full page). PostgreSQL would otherwise
    turn EXISTS into a join over every row of the key and sort; an OFFSET keeps it a probe."""
    keep = " LIMIT 1 OFFSET 0" if probe else ""
    conditions: list[str] = []
    if any(c.entity == DATASET for c in clauses):
        if dataset_runs is None:
            raise ValueError("datasets.* clauses need the runs whose inputs match them")
        conditions.append(sql.member_of(f"{run}.run_uuid", dataset_runs))
    for c in clauses:
        if c.entity == DATASET:
            continue
        if c.entity == ATTRIBUTE:
            key = c.key.lower()
            column = _RUN_STRING_ATTRIBUTES.get(key) or _RUN_NUMERIC_ATTRIBUTES.get(key)
            if column is None:
                raise SearchError(
                    f"Invalid filter: unknown attribute {c.key!r}; searchable attributes are "
                    f"{', '.join(sorted(RUN_SEARCH_ATTRIBUTES))}."
                )
            value = c.value
            if key in _RUN_NUMERIC_ATTRIBUTES and isinstance(value, float) and value.is_integer():
                value = int(value)
            conditions.append(sql.compare(f"{run}.{column}", c.op, value))
            continue
        table = {METRIC: "latest_metrics", PARAM: "params", TAG: "tags"}[c.entity]
        key = sql.bind(c.key)
        link = f'x.run_uuid = {run}.run_uuid AND x."key" = {key}'
        if c.op == "IS NULL":
            conditions.append(f"NOT EXISTS (SELECT 1 FROM {table} x WHERE {link}{keep})")
        elif c.op == "IS NOT NULL":
            conditions.append(f"EXISTS (SELECT 1 FROM {table} x WHERE {link}{keep})")
        else:
            extra = f" AND x.is_nan = {sql.bind(False)}" if c.entity == METRIC else ""
            test = sql.compare("x.value", c.op, c.value)
            conditions.append(
                f"EXISTS (SELECT 1 FROM {table} x WHERE {link}{extra} AND {test}{keep})"
            )
    return conditions


def compile_runs_order(order: Sequence[OrderBy], sql: SqlBuilder, run: str = "r") -> list[str]:
    """ORDER BY terms (missing values last, as MLflow); adds LEFT JOINs to ``sql.joins``."""
    terms: list[str] = []
    for n, o in enumerate(order):
        direction = "ASC" if o.ascending else "DESC"
        if o.entity == ATTRIBUTE:
            key = o.key.lower()
            if key == "duration":
                column = f"({run}.end_time - {run}.start_time)"
            else:
                column = f"{run}.{_RUN_STRING_ATTRIBUTES.get(key) or _RUN_NUMERIC_ATTRIBUTES[key]}"
            # NULLs (a running run's end_time) last on every database.
            terms.append(f"CASE WHEN {column} IS NULL THEN 1 ELSE 0 END")
            terms.append(f"{column} {direction}")
            continue
        table = {METRIC: "latest_metrics", PARAM: "params", TAG: "tags"}[o.entity]
        alias = f"o{n}"
        sql.joins.append(
            f"LEFT JOIN {table} {alias} ON {alias}.run_uuid = {run}.run_uuid "
            f'AND {alias}."key" = {sql.bind(o.key)}'
        )
        # As MLflow: real values first, then NaN, then runs without the key; within the last
        # two groups only the tie-breakers order (the same on SQLite and PostgreSQL).
        if o.entity == METRIC:
            nan = f"{alias}.is_nan = {sql.bind(True)}"
            terms.append(f"CASE WHEN {alias}.value IS NULL THEN 2 WHEN {nan} THEN 1 ELSE 0 END")
            terms.append(f"CASE WHEN {nan} THEN NULL ELSE {alias}.value END {direction}")
        else:
            # Params and tags by code point on every database (PostgreSQL's own collation
            # would order them by language rules; search/plans.py reads params in this order).
            collate = ' COLLATE "C"' if sql.dialect == "postgresql" else ""
            terms.append(f"CASE WHEN {alias}.value IS NULL THEN 1 ELSE 0 END")
            terms.append(f"{alias}.value{collate} {direction}")
    # MLflow's tie-breakers: newest first, then run id.
    terms += [f"{run}.start_time DESC", f"{run}.run_uuid"]
    return terms


EXPERIMENT_ORDER_ATTRIBUTES = {"name", "experiment_id", "creation_time", "last_update_time"}


def compile_experiments_filter(clauses: Sequence[Clause], sql: SqlBuilder) -> list[str]:
    conditions: list[str] = []
    for c in clauses:
        if c.entity == TAG:
            link = f'x.experiment_id = e.experiment_id AND x."key" = {sql.bind(c.key)}'
            if c.op in NULL_OPS:
                neg = "NOT " if c.op == "IS NULL" else ""
                conditions.append(f"{neg}EXISTS (SELECT 1 FROM experiment_tags x WHERE {link})")
            else:
                test = sql.compare("x.value", c.op, c.value)
                conditions.append(
                    f"EXISTS (SELECT 1 FROM experiment_tags x WHERE {link} AND {test})"
                )
        elif (
            c.entity == ATTRIBUTE and c.key in ("name", "experiment_id") and c.op not in NULL_OPS
        ) or (c.entity == ATTRIBUTE and c.key in ("creation_time", "last_update_time")):
            conditions.append(sql.compare(f"e.{c.key}", c.op, c.value))
        else:
            raise SearchError(
                f"Invalid experiment filter: cannot filter on {c.entity} {c.key!r}; use "
                "attributes.name, attributes.creation_time, attributes.last_update_time or tags.*."
            )
    return conditions
