"""Index-driven plans for the run searches people send most, so a page costs the same at 10,000
runs as at a million.

A search ordered by nothing (newest first), by start time, by one metric or by one param is read
as a short sequence of *segments*, each an ordered range of one index (schema version 5) a
searched experiment (several experiments' ranges are merged, each read no further than a page):

- newest first: ``runs`` by (experiment, start_time DESC, run_uuid); oldest first reads it
  backwards (the rare runs started in the same millisecond sorted by id). With a filter that
  compares a metric, the runs that have it, from ``latest_metrics`` by (experiment, key, time),
  the value tested in the index;
- ``metrics.k``: the runs with a real value of k (``latest_metrics`` by experiment, key, value,
  then newest first and run id), then those whose value is NaN, then the runs without k;
- ``params.k``: the runs with k by its value, then the runs without it. A param is ordered
  through the first ``schema.PARAM_PREFIX`` characters the index holds, so this plan serves a
  key only while none of its values is longer (one seek in ``ix_params_length`` tells).

That is MLflow's order exactly (real values, NaN, missing; ties newest first, then run id), the
one ``sql.compile_runs_order`` writes as one ORDER BY over every run. Filters are tested on each
row read, in index order, and reading stops when a page is full. Pages continue where the last
left off (keyset): the token names the segment and the last row's order values, so a deep page
reads no more than the first. Any other search (over 50 experiments, several order clauses, an
order by another attribute or a tag, a param key with long values) keeps the single statement
with OFFSET tokens.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reprorun.errors import SearchError
from reprorun.tracking.search.grammar import ATTRIBUTE, METRIC, NUMERIC_OPS, PARAM, Clause, OrderBy

PARAM_PREFIX = 200  # schema.PARAM_PREFIX; schema.py imports SQLAlchemy, this module must not
# Several experiments: each one's index range, merged (UNION ALL of one arm an experiment).
MAX_EXPERIMENTS = 50
TOKEN_VERSION = 2


@dataclass(frozen=True)
class Segment:
    """One ordered index range: rows of ``source`` (the run aliased ``r``) meeting ``where``,
    in ``order`` ((expression, ascending) terms, the last ones making it total)."""

    name: str
    source: str
    where: tuple[str, ...]
    order: tuple[tuple[str, bool], ...]


@dataclass(frozen=True)
class Plan:
    kind: str  # "runs" (newest first), "oldest", "metric" or "param"
    segments: tuple[Segment, ...]


@dataclass(frozen=True)
class Cursor:
    """Where a keyset page token says the next page starts: after ``after`` in ``segment``."""

    kind: str
    segment: int
    after: tuple[Any, ...]
    query: str


_NEWEST = (("r.start_time", False), ("r.run_uuid", True))


def param_sort_value(column: str, dialect: str) -> str:
    """What params sort by: as the index expression of schema.param_sort_value, exactly."""
    collate = ' COLLATE "C"' if dialect == "postgresql" else ""
    return f"substr({column}, 1, {PARAM_PREFIX}){collate}"


def plan_kind(order: Sequence[OrderBy], experiment_ids: Sequence[str]) -> str | None:
    """Which plan serves this search, or None for the general statement."""
    if not 1 <= len(set(experiment_ids)) <= MAX_EXPERIMENTS:
        return None
    if not order:
        return "runs"
    if len(order) != 1:
        return None
    o = order[0]
    if o.entity == ATTRIBUTE:
        if o.key.lower() not in ("start_time", "created"):
            return None
        return "oldest" if o.ascending else "runs"
    return {METRIC: "metric", PARAM: "param"}.get(o.entity)


def long_param_probe(dialect: str) -> str:
    """A statement whose one row tells that param ``:k`` of experiment ``:e`` has values beyond
    the index's prefix: one seek in ``ix_params_length`` (SQLite's planner, without
    statistics, is told which index)."""
    hint = " INDEXED BY ix_params_length" if dialect == "sqlite" else ""
    return (
        f'SELECT 1 FROM params x{hint} WHERE x.experiment_id = :e AND x."key" = :k '  # noqa: S608
        f"AND length(x.value) > {PARAM_PREFIX} LIMIT 1"
    )


def driving_metric(clauses: Sequence[Clause]) -> Clause | None:
    """The filter's first comparison of a metric: a time-ordered search reads the runs that
    have that metric from ``ix_latest_metrics_time``, testing the value in the index, rather
    than every run (a run without the metric cannot match the comparison)."""
    return next((c for c in clauses if c.entity == METRIC and c.op in NUMERIC_OPS), None)


def build_plan(
    kind: str,
    order: Sequence[OrderBy],
    bind: Any,
    dialect: str,
    driver: Clause | None = None,
) -> Plan:
    """The segments of plan ``kind``; ``bind(value)`` binds a value and returns its name.
    ``driver``: the metric comparison (``driving_metric``) a time-ordered plan reads by; the
    caller leaves it out of the filters it tests on each run."""
    if kind in ("runs", "oldest"):
        # Oldest first: start_time ASC, then run id (ties on a millisecond are rare).
        newest = kind == "runs"
        if driver is None:
            by_time = _NEWEST if newest else (("r.start_time", True), ("r.run_uuid", True))
            return Plan(kind, (Segment("runs", "runs r", (), by_time),))
        where = (
            "r.run_uuid = o.run_uuid",
            f'o."key" = {bind(driver.key)}',
            f"o.is_nan = {bind(False)}",
            f"o.value {driver.op} {bind(driver.value)}",
        )
        by_time = (("o.start_time", not newest), ("o.run_uuid", True))
        # SQLite, without statistics, would rather read the value's range and sort it.
        hint = " INDEXED BY ix_latest_metrics_time" if dialect == "sqlite" else ""
        source = f"latest_metrics o{hint} CROSS JOIN runs r"
        return Plan(kind, (Segment("runs", source, where, by_time),))
    o = order[0]
    key = bind(o.key)
    table = "latest_metrics" if kind == "metric" else "params"
    # SQLite's CROSS JOIN keeps the table order as written: the index range drives the join
    # (PostgreSQL plans it as any inner join).
    source = f"{table} o CROSS JOIN runs r"
    link = ("r.run_uuid = o.run_uuid", f'o."key" = {key}')
    ties = (("o.start_time", False), ("o.run_uuid", True))
    # A probe a run (see sql.compile_runs_filter's probe), not an anti-join over every row.
    absent = f"NOT EXISTS (SELECT 1 FROM {table} x WHERE x.run_uuid = r.run_uuid AND "  # noqa: S608
    missing = Segment("missing", "runs r", (f'{absent}x."key" = {key} LIMIT 1 OFFSET 0)',), _NEWEST)
    if kind == "metric":
        real = Segment(
            "value",
            source,
            (*link, f"o.is_nan = {bind(False)}"),
            (("o.value", o.ascending), *ties),
        )
        nan = Segment("nan", source, (*link, f"o.is_nan = {bind(True)}"), ties)
        return Plan(kind, (real, nan, missing))
    value = Segment(
        "value", source, link, ((param_sort_value("o.value", dialect), o.ascending), *ties)
    )
    return Plan(kind, (value, missing))


def scope(segment: Segment, experiment: str) -> list[str]:
    """The experiment condition on the column the segment's index starts with."""
    alias = "r" if segment.source == "runs r" else "o"
    return [f"{alias}.experiment_id = {experiment}"]


def segment_statement(
    segment: Segment,
    experiments: Sequence[str],
    conditions: Sequence[str],
    columns: str,
    limit: int,
) -> str:
    """The statement reading ``limit`` rows of the segment: ``columns`` then the order values
    (``k0``, ``k1``...). ``experiments`` are bound names; several are read one index range
    each, the ranges merged (each arm reads at most ``limit`` rows)."""
    keys = ", ".join(f"{expr} AS k{i}" for i, (expr, _) in enumerate(segment.order))
    inner = ", ".join(f"{e} {'ASC' if asc else 'DESC'}" for e, asc in segment.order)

    def arm(experiment: str) -> str:
        where = " AND ".join([*scope(segment, experiment), *conditions])
        return (
            f"SELECT {columns}, {keys} FROM {segment.source} WHERE {where} "  # noqa: S608
            f"ORDER BY {inner} LIMIT {limit}"
        )

    if len(experiments) == 1:
        return arm(experiments[0])
    outer = ", ".join(
        f"k{i} {'ASC' if asc else 'DESC'}" for i, (_, asc) in enumerate(segment.order)
    )
    arms = " UNION ALL ".join(
        f"SELECT * FROM ({arm(e)}) a{n}"  # noqa: S608
        for n, e in enumerate(experiments)
    )
    return f"{arms} ORDER BY {outer} LIMIT {limit}"


def after_condition(order: Sequence[tuple[str, bool]], values: Sequence[Any], bind: Any) -> str:
    """Rows strictly after ``values`` in ``order`` (no value is NULL): a range on the first
    term, which the index reads, and the exact lexicographic test."""
    if len(values) != len(order):
        raise SearchError("Invalid page token: it does not fit this search; start from page one.")
    names = [bind(v) for v in values]
    alternatives = []
    for i, (expr, ascending) in enumerate(order):
        equal = [f"{e} = {n}" for (e, _), n in zip(order[:i], names[:i], strict=True)]
        alternatives.append(
            " AND ".join([*equal, f"{expr} {'>' if ascending else '<'} {names[i]}"])
        )
    first, ascending = order[0]
    lead = f"{first} {'>=' if ascending else '<='} {names[0]}"
    return f"({lead} AND ({' OR '.join(f'({a})' for a in alternatives)}))"


def query_fingerprint(*parts: Any) -> str:
    """A short digest of the search a keyset token belongs to."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def encode_cursor(cursor: Cursor) -> str:
    body = {
        "v": TOKEN_VERSION,
        "plan": cursor.kind,
        "seg": cursor.segment,
        "after": list(cursor.after),
        "q": cursor.query,
    }
    return base64.b64encode(json.dumps(body).encode()).decode()


def decode_token(token: str | None) -> int | Cursor:
    """An offset (MLflow-style ``{"offset": n}`` tokens, which older reprorun gave and the
    general statement still gives) or the keyset cursor of an index plan's token."""
    from reprorun.tracking.search.pages import decode_page_token

    if not token:
        return 0
    try:
        body = json.loads(base64.b64decode(token, validate=True))
    except (binascii.Error, ValueError, RecursionError) as exc:
        raise SearchError(f"Invalid page token {token!r}: {exc}") from None
    if not isinstance(body, dict) or "v" not in body:
        return decode_page_token(token)
    try:
        if body["v"] != TOKEN_VERSION:
            raise ValueError(f"version {body['v']!r}, this reprorun reads {TOKEN_VERSION}")
        after = body["after"]
        if not isinstance(after, list) or not all(
            isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in after
        ):
            raise ValueError("bad 'after'")
        return Cursor(str(body["plan"]), int(body["seg"]), tuple(after), str(body["q"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise SearchError(f"Invalid page token {token!r}: {exc}") from None
