"""The index plans of search (reprorun.tracking.search.plans) return exactly what the single
sorted statement returns: the same runs, in the same order, page after page.

Differential and property-based: hypothesis makes an experiment of runs with tied start times,
metrics that are real, NaN, infinite or missing, params short and long (past the index's
prefix), tags, deleted runs; then a search (no order, a metric or a param either way, filters,
view types, page sizes). The runs found by walking every page through the plans are compared
with those of the general statement (the plans switched off), read in one page. On SQLite and
on PostgreSQL (REPRORUN_TEST_POSTGRES_URL, tests/pg.py). Then the page tokens: old offset
tokens, tokens of another search, damaged tokens.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reprorun.errors import SearchError
from reprorun.tracking.entities import Metric, ViewType
from reprorun.tracking.search import encode_page_token, plans
from reprorun.tracking.store.database import SqlAlchemyDatabase, SqliteDatabase
from reprorun.tracking.store.sql import SqlStore

BACKENDS = ("sqlite", "postgresql")
LONG = "z" * plans.PARAM_PREFIX
PARAM_VALUES = ["a", "b", "B", "ab", "a b", "é", "10", "9", LONG + "b", LONG + "a"]
METRIC_VALUES = [0.0, -1.0, 1.5, 2.0, 1e300, -math.inf, math.inf, math.nan]
TAG_VALUES = ["x", "y"]
FILTERS = [
    None,
    "metrics.m > 0",
    "metrics.m <= 1.5",
    "params.p = 'a'",
    "params.p != 'b'",
    "tags.t = 'x'",
    "params.q LIKE 'a%'",
    "attributes.status = 'RUNNING'",
]
ORDERS = [
    None,
    ["metrics.m DESC"],
    ["metrics.m ASC"],
    ["metrics.m"],
    ["params.p DESC"],
    ["params.p ASC"],
    ["params.q"],
    ["params.q DESC"],
    ["attributes.start_time DESC"],
    ["attributes.start_time ASC"],
    ["metrics.absent DESC"],
    ["tags.t DESC"],
]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest) -> Iterator[SqlStore]:
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        opened = SqlStore(SqlAlchemyDatabase(url), "file:///tmp/plan-artifacts")
    else:
        opened = SqlStore(SqliteDatabase(":memory:"), "file:///tmp/plan-artifacts")
    yield opened
    opened.close()


run_strategy = st.fixed_dictionaries(
    {
        "start": st.integers(0, 4),
        "m": st.one_of(st.none(), st.sampled_from(METRIC_VALUES)),
        "p": st.one_of(st.none(), st.sampled_from(PARAM_VALUES[:8])),
        "q": st.one_of(st.none(), st.sampled_from(PARAM_VALUES)),
        "t": st.one_of(st.none(), st.sampled_from(TAG_VALUES)),
        "deleted": st.booleans(),
        "second": st.booleans(),  # in the second experiment
    }
)
search_strategy = st.fixed_dictionaries(
    {
        "filter": st.sampled_from(FILTERS),
        "order": st.sampled_from(ORDERS),
        "view": st.sampled_from(list(ViewType)),
        "page": st.integers(1, 7),
        "experiments": st.sampled_from([(0,), (1,), (0, 1), (1, 0, 1)]),
    }
)


def make_experiments(
    store: SqlStore, runs: list[dict[str, Any]], counter: list[int]
) -> tuple[str, str]:
    counter[0] += 1
    exps = (
        store.create_experiment(f"plans-{counter[0]}"),
        store.create_experiment(f"plans-{counter[0]}-b"),
    )
    for spec in runs:
        params = {k: spec[k] for k in ("p", "q") if spec[k] is not None}
        tags = {"t": spec["t"]} if spec["t"] is not None else {}
        exp = exps[spec["second"]]
        run = store.create_run(exp, start_time=spec["start"], params=params, tags=tags)
        if spec["m"] is not None:
            store.log_metric(run.info.run_id, Metric("m", spec["m"], 1, 0))
        if spec["deleted"]:
            store.delete_run(run.info.run_id)
    return exps


def walk(store: SqlStore, exp: list[str], search: dict[str, Any]) -> list[str]:
    """Every run found, page by page."""
    found: list[str] = []
    token = None
    for _ in range(100):
        page = store.search_runs(
            exp,
            search["filter"],
            run_view_type=search["view"],
            order_by=search["order"],
            max_results=search["page"],
            page_token=token,
        )
        found += [r.info.run_id for r in page]
        token = page.token
        if not token:
            return found
    raise AssertionError("more pages than runs")


def full_sort(store: SqlStore, exp: list[str], search: dict[str, Any]) -> list[str]:
    """What the single sorted statement returns, in one page (the plans switched off)."""
    original = plans.plan_kind
    plans.plan_kind = lambda order, experiment_ids: None  # type: ignore[assignment]
    try:
        page = store.search_runs(
            exp,
            search["filter"],
            run_view_type=search["view"],
            order_by=search["order"],
            max_results=1000,
        )
    finally:
        plans.plan_kind = original  # type: ignore[assignment]
    assert page.token is None
    return [r.info.run_id for r in page]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    runs=st.lists(run_strategy, max_size=14),
    searches=st.lists(search_strategy, min_size=1, max_size=4),
)
def test_the_plans_page_through_exactly_what_the_full_sort_returns(
    store: SqlStore, runs: list[dict[str, Any]], searches: list[dict[str, Any]]
) -> None:
    counter = getattr(store, "_plan_counter", [0])
    store._plan_counter = counter  # type: ignore[attr-defined]
    exps = make_experiments(store, runs, counter)
    for search in searches:
        chosen = [exps[i] for i in search["experiments"]]
        assert walk(store, chosen, search) == full_sort(store, chosen, search), search


def test_each_kind_of_search_takes_the_plan_it_should(store: SqlStore) -> None:
    # A param key with a value past the index's prefix falls back to the full sort.
    exp = store.create_experiment("kinds")
    short = store.create_run(exp, start_time=1, params={"p": "a", "q": LONG + "x"}).info.run_id
    store.log_metric(short, Metric("m", 1.0, 1, 0))
    store.create_run(exp, start_time=2, params={"p": "b", "q": "c"})
    assert plans.plan_kind([], [exp]) == "runs"
    assert plans.plan_kind([], [exp, "0", exp]) == "runs"
    assert plans.plan_kind([], [str(i) for i in range(plans.MAX_EXPERIMENTS + 1)]) is None
    for order, kind in ((["params.p"], "param"), (["metrics.m"], "metric")):
        page = store.search_runs([exp], order_by=order, max_results=1)
        body = json.loads(base64.b64decode(str(page.token)))
        assert (body["v"], body["plan"]) == (2, kind)
    long_page = store.search_runs([exp], order_by=["params.q"], max_results=1)
    assert json.loads(base64.b64decode(str(long_page.token))) == {"offset": 1}


def test_old_offset_tokens_still_page_a_full_sort_search(store: SqlStore) -> None:
    exp = store.create_experiment("old-tokens")
    ids = [store.create_run(exp, start_time=t).info.run_id for t in range(5)]
    other = store.create_experiment("old-tokens-2")
    store.create_run(other, start_time=9)
    # Ordered by a tag: the full sort, whose tokens are still {"offset": n}.
    page = store.search_runs(
        [exp, other], max_results=2, order_by=["tags.t"], page_token=encode_page_token(4)
    )
    assert [r.info.run_id for r in page] == [ids[1], ids[0]]
    # An index plan cannot start at an offset: it says so rather than repeat page one.
    with pytest.raises(SearchError, match="offset token"):
        store.search_runs([exp], max_results=2, page_token=encode_page_token(2))
    # Page one as an offset token is page one.
    assert len(store.search_runs([exp], max_results=2, page_token=encode_page_token(0))) == 2


def test_a_token_works_only_for_its_own_search(store: SqlStore) -> None:
    exp = store.create_experiment("own-search")
    for t in range(3):
        store.create_run(exp, start_time=t, params={"p": str(t)})
    token = store.search_runs([exp], order_by=["params.p"], max_results=1).token
    with pytest.raises(SearchError, match="another search"):
        store.search_runs([exp], order_by=["params.p DESC"], max_results=1, page_token=token)
    with pytest.raises(SearchError, match="another search"):
        store.search_runs([exp], "params.p = '1'", order_by=["params.p"], page_token=token)


@pytest.mark.parametrize(
    "body",
    [
        {"v": 3, "plan": "runs", "seg": 0, "after": [1, "x"], "q": "?"},
        {"v": 2, "plan": "runs", "seg": 0, "after": [True], "q": "?"},
        {"v": 2, "plan": "runs", "seg": 0, "after": "x", "q": "?"},
        {"v": 2, "plan": "runs"},
        [1, 2],
    ],
)
def test_a_damaged_token_is_a_search_error(body: Any) -> None:
    token = base64.b64encode(json.dumps(body).encode()).decode()
    with pytest.raises(SearchError, match="Invalid page token"):
        position = plans.decode_token(token)
        assert isinstance(position, plans.Cursor)
        raise AssertionError(f"decoded {position}")


def test_a_token_for_a_segment_the_search_does_not_have_is_refused(store: SqlStore) -> None:
    exp = store.create_experiment("segments")
    for t in range(3):
        store.create_run(exp, start_time=t)
    token = store.search_runs([exp], max_results=1).token
    assert token is not None
    body = json.loads(base64.b64decode(token))
    body["seg"] = 5
    bad = base64.b64encode(json.dumps(body).encode()).decode()
    with pytest.raises(SearchError, match="no such part"):
        store.search_runs([exp], max_results=1, page_token=bad)
    body["seg"], body["after"] = 0, [1]  # one value where the order has two
    bad = base64.b64encode(json.dumps(body).encode()).decode()
    with pytest.raises(SearchError, match="does not fit"):
        store.search_runs([exp], max_results=1, page_token=bad)


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_params_sort_by_the_expression_their_index_holds(dialect: str) -> None:
    # The plans order by the index's expression exactly, or the database would sort instead.
    from sqlalchemy.dialects import postgresql, sqlite

    from reprorun.tracking.store import schema

    assert plans.PARAM_PREFIX == schema.PARAM_PREFIX
    compiler = {"sqlite": sqlite.dialect(), "postgresql": postgresql.dialect()}[dialect]
    expression = schema.param_sort_value(schema.params.c.value)
    compiled = str(expression.compile(dialect=compiler, compile_kwargs={"literal_binds": True}))
    assert compiled == plans.param_sort_value("params.value", dialect)
