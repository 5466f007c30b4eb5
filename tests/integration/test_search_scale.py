"""Search plans read index ranges, not every run: EXPLAIN of the statements a search sends.

An experiment of 20,000 runs (each with a metric, two params and a tag) is written straight
into the schema by one INSERT ... SELECT a table; a few runs of another experiment sit beside
it. Each search the UI and users send (the first page, filters, order_by a metric or a param
either way, a page deep into the result, the keys of /ui-api/keys) is sent through the store
while its statements are recorded, and each statement's plan is asked of the database: no
sort of the experiment's runs, no full scan, the indexes of schema version 5. PostgreSQL
plans after ANALYZE (what autovacuum does); SQLite without statistics (as every store).
How long they take at 10k to 1M runs is bench/tracking.py --scale's business, not a test's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from reprorun.tracking.store import database
from reprorun.tracking.store.database import Connection, SqlAlchemyDatabase, SqliteDatabase
from reprorun.tracking.store.sql import SqlStore

N = 20_000
BACKENDS = ("sqlite", "postgresql")


def numbers(dialect: str) -> str:
    if dialect == "sqlite":
        return f"(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {N}) SELECT i FROM s)"
    return f"(SELECT generate_series(1, {N}) AS i)"


def seed(store: SqlStore, exp: int) -> None:
    dialect = store.db.dialect
    run_id = "printf('%032d', i)" if dialect == "sqlite" else "lpad(i::text, 32, '0')"
    value = "((i * 7919) % 10007) * 1.0 / 10007"
    statements = [
        "INSERT INTO runs (run_uuid, name, experiment_id, user_id, status, start_time, "
        f"artifact_uri, lifecycle_stage) SELECT {run_id}, 'r', {exp}, '', 'RUNNING', "
        f"1000 + i / 3, 'x', CASE WHEN i % 50 = 0 THEN 'deleted' ELSE 'active' END "
        f"FROM {numbers(dialect)} s",
        'INSERT INTO params (run_uuid, "key", value, experiment_id, start_time) '
        f"SELECT {run_id}, 'p', 'v' || (i % 13), {exp}, 1000 + i / 3 FROM {numbers(dialect)} s",
        'INSERT INTO params (run_uuid, "key", value, experiment_id, start_time) '
        f"SELECT {run_id}, 'model', CASE WHEN i % 4 = 0 THEN 'tree' ELSE 'knn' END, {exp}, "
        f"1000 + i / 3 FROM {numbers(dialect)} s",
        'INSERT INTO tags (run_uuid, "key", value, experiment_id) '
        f"SELECT {run_id}, 'team', CASE WHEN i % 3 = 0 THEN 'x' ELSE 'y' END, {exp} "
        f"FROM {numbers(dialect)} s",
        'INSERT INTO latest_metrics (run_uuid, "key", value, is_nan, step, "timestamp", '
        f"experiment_id, start_time) SELECT {run_id}, 'acc', {value}, "
        f"{'0' if dialect == 'sqlite' else 'false'}, 0, 1, {exp}, 1000 + i / 3 "
        f"FROM {numbers(dialect)} s WHERE i % 10 <> 0",
    ]

    def write(conn: Connection) -> None:
        for statement in statements:
            conn.execute(statement)

    store.db.write(write)
    if dialect == "postgresql":
        store.db.write(lambda c: c.execute("ANALYZE"))


@pytest.fixture(params=BACKENDS, scope="module")
def seeded(request: pytest.FixtureRequest) -> Iterator[tuple[SqlStore, str]]:
    from tests import pg

    if request.param == "postgresql":
        with pg.fresh_schema() as url:
            store = SqlStore(SqlAlchemyDatabase(url), "file:///tmp/scale")
            yield from _seeded(store)
    else:
        store = SqlStore(SqliteDatabase(":memory:"), "file:///tmp/scale")
        yield from _seeded(store)


def _seeded(store: SqlStore) -> Iterator[tuple[SqlStore, str]]:
    try:
        other = store.create_experiment("beside")
        for t in range(5):
            store.create_run(other, start_time=t, params={"p": "v1", "q": "w"})
        exp = store.create_experiment("twenty-thousand")
        seed(store, int(exp))
        yield store, exp
    finally:
        store.close()


class Recorder:
    """The statements the store sends while recording, with their parameters."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, dict[str, Any]]] = []

    def searches(self) -> list[tuple[str, dict[str, Any]]]:
        """The statements that read runs in order (not the params/tags/metrics of a page)."""
        return [(s, p) for s, p in self.statements if "ORDER BY" in s or "RECURSIVE" in s]


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recording = Recorder()
    for cls in (database._SqliteConnection, database._SqlAlchemyConnection):
        original = cls.fetch

        def fetch(self: Any, sql: str, params: Any = None, _original: Any = original) -> list[Any]:
            recording.statements.append((sql, dict(params or {})))
            return list(_original(self, sql, params))

        monkeypatch.setattr(cls, "fetch", fetch)
    return recording


def plan(store: SqlStore, sql: str, params: dict[str, Any]) -> list[str]:
    """The plan's lines: SQLite's EXPLAIN QUERY PLAN details; PostgreSQL's nodes as
    'Node Type [index name] on relation'."""
    if store.db.dialect == "sqlite":
        rows = store.db.read(lambda c: c.fetch("EXPLAIN QUERY PLAN " + sql, params))
        return [str(r[3]) for r in rows]
    rows = store.db.read(lambda c: c.fetch("EXPLAIN (FORMAT JSON) " + sql, params))
    document = rows[0][0]
    tree = json.loads(document) if isinstance(document, str) else document
    lines: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        lines.append(
            f"{node['Node Type']} [{node.get('Index Name', '')}] on {node.get('Relation Name', '')}"
        )
        for child in node.get("Plans", []):
            walk(child)

    walk(tree[0]["Plan"])
    return lines


def assert_index_plan(store: SqlStore, sql: str, params: dict[str, Any], index: str) -> None:
    lines = plan(store, sql, params)
    text = "\n".join(lines)
    # Oldest first reads the newest-first index backwards: runs of one millisecond are put in
    # run id order as they come (a sort of the "right part", incremental), never all runs.
    if store.db.dialect == "sqlite":
        assert "TEMP B-TREE FOR ORDER BY" not in text, text
        assert not any(line.startswith("SCAN") for line in lines), text
        assert f"USING INDEX {index}" in text or f"USING COVERING INDEX {index}" in text, text
    else:
        assert not any(line.startswith("Sort") for line in lines), text
        assert not any(line.startswith("Seq Scan") for line in lines), text
        assert f"[{index}]" in text, text


@pytest.mark.parametrize(
    ("filter_string", "order_by", "index"),
    [
        (None, None, "ix_runs_experiment_order"),
        (None, ["attributes.start_time DESC"], "ix_runs_experiment_order"),
        (None, ["metrics.acc DESC"], "ix_latest_metrics_order_desc"),
        (None, ["metrics.acc ASC"], "ix_latest_metrics_order_asc"),
        (None, ["params.p DESC"], "ix_params_order_desc"),
        (None, ["params.p ASC"], "ix_params_order_asc"),
        ("params.model = 'tree'", ["metrics.acc DESC"], "ix_latest_metrics_order_desc"),
        ("metrics.acc > 0.5 and params.model = 'tree'", None, "ix_latest_metrics_time"),
        ("metrics.acc <= 0.5", ["attributes.start_time ASC"], "ix_latest_metrics_time"),
        ("params.model = 'tree'", None, "ix_runs_experiment_order"),
        ("tags.team = 'x'", None, "ix_runs_experiment_order"),
    ],
)
def test_the_first_and_a_deep_page_read_an_index_range(
    seeded: tuple[SqlStore, str],
    recorder: Recorder,
    filter_string: str | None,
    order_by: list[str] | None,
    index: str,
) -> None:
    store, exp = seeded
    first = store.search_runs([exp], filter_string, order_by=order_by, max_results=100)
    assert len(first) == 100 and first.token
    # Deep: the page after 1,100 runs, from the token a client holds there.
    token: str | None = first.token
    for _ in range(2):
        deeper = store.search_runs(
            [exp], filter_string, order_by=order_by, max_results=500, page_token=token
        )
        token = deeper.token
    assert token is not None
    recorder.statements.clear()
    deep = store.search_runs(
        [exp], filter_string, order_by=order_by, max_results=100, page_token=token
    )
    assert deep
    (statement, params), *_ = recorder.searches()
    assert_index_plan(store, statement, params, index)
    recorder.statements.clear()
    store.search_runs([exp], filter_string, order_by=order_by, max_results=100)
    (statement, params), *_ = recorder.searches()
    assert_index_plan(store, statement, params, index)


def test_a_param_probe_seeks_the_length_index(
    seeded: tuple[SqlStore, str], recorder: Recorder
) -> None:
    store, exp = seeded
    store.search_runs([exp], order_by=["params.p"], max_results=10)
    probe = [(s, p) for s, p in recorder.statements if "length(" in s]
    assert len(probe) == 1
    lines = "\n".join(plan(store, *probe[0]))
    assert "ix_params_length" in lines, lines


def test_keys_seek_each_key_in_the_index(seeded: tuple[SqlStore, str], recorder: Recorder) -> None:
    store, exp = seeded
    assert store.run_keys([exp]) == {
        "params": ["model", "p"],
        "metrics": ["acc"],
        "tags": ["team"],
    }
    statements = recorder.searches()
    assert len(statements) == 3
    for statement, params in statements:
        lines = plan(store, statement, params)
        text = "\n".join(lines)
        if store.db.dialect == "sqlite":
            assert "TEMP B-TREE" not in text, text
            assert not any(line.startswith("SCAN x") for line in lines), text
        else:
            # The walk seeks the index; the check of each key for an active run stops at the
            # first (PostgreSQL may read it from the table's start when most rows have it).
            assert not any(line.startswith(("Hash", "Sort", "Aggregate")) for line in lines), text
            assert "Index Only Scan [ix_" in text, text


@pytest.mark.parametrize(
    ("order_by", "index"),
    [
        (None, "ix_runs_experiment_order"),
        (["attributes.start_time ASC"], "ix_runs_experiment_order"),
        (["metrics.acc DESC"], "ix_latest_metrics_order_desc"),
        (["params.p ASC"], "ix_params_order_asc"),
    ],
)
def test_several_experiments_read_one_range_each_and_merge_a_page(
    seeded: tuple[SqlStore, str], recorder: Recorder, order_by: list[str] | None, index: str
) -> None:
    store, exp = seeded
    other = store.get_experiment_by_name("beside")
    assert other is not None
    page = store.search_runs([other.experiment_id, exp], order_by=order_by, max_results=100)
    assert len(page) == 100
    (statement, params), *_ = recorder.searches()
    lines = plan(store, statement, params)
    text = "\n".join(lines)
    if store.db.dialect == "sqlite":
        # Each arm a co-routine reading its range; only the arms' rows are sorted and merged.
        assert not any(line.startswith(("SCAN r", "SCAN o", "SCAN x")) for line in lines), text
        assert text.count(index) == 2, text  # one range an experiment
    else:
        # The arms are merged (Merge Append of ordered ranges, or an Append whose few rows
        # are sorted above it): nothing below the merge is sorted.
        assert not any(line.startswith("Seq Scan") for line in lines), text
        assert text.count(f"[{index}]") == 2, text
        merge = next(x for x in lines if x.startswith(("Append", "Merge Append")))
        assert not any(line.startswith("Sort") for line in lines[lines.index(merge) :]), text
