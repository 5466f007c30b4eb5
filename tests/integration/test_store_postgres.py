"""The SQL store on a real PostgreSQL, and its search API on every backend.

Two parts:

* The store contract of ``tests/unit/test_store.py``: every test there that takes a ``store`` is
  collected again in this module, where ``store`` is a PostgreSQL store (one empty schema per
  test, see ``tests/pg.py``). New contract tests there run here too, with no change here.
* Search, delete/restore and logged models, written once and run on the three backends through
  ``any_store``: stdlib sqlite3, SQLAlchemy over pysqlite, and PostgreSQL. Their results must be
  the same everywhere, so every expectation below is exact (names in order, not just counts).

PostgreSQL comes from REPRORUN_TEST_POSTGRES_URL (``.ci/run`` sets it); without it the
PostgreSQL tests fail and say how to set it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reprorun.errors import (
    ResourceAlreadyExists,
    ResourceNotFound,
    SearchError,
    UserInputError,
)
from reprorun.tracking.entities import LoggedModelStatus, Metric, Page, RunStatus, ViewType
from reprorun.tracking.store import close_stores, open_store
from reprorun.tracking.store.database import SqlAlchemyDatabase, SqliteDatabase
from reprorun.tracking.store.sql import SqlStore
from reprorun.tracking.store.version import SCHEMA_VERSION
from tests.unit import test_store as contract

BACKENDS = ("sqlite3", "sqlite+pysqlite", "postgresql")

# --- the contract of tests/unit/test_store.py, on PostgreSQL ---------------------------------

CONTRACT_TESTS = sorted(
    name
    for name, fn in vars(contract).items()
    if name.startswith("test_")
    and inspect.isfunction(fn)
    and "store" in inspect.signature(fn).parameters
)
globals().update({name: getattr(contract, name) for name in CONTRACT_TESTS})


@pytest.fixture
def store(postgres_url: str, tmp_path: Path) -> Iterator[SqlStore]:
    """What the contract tests get here: a store in an empty PostgreSQL schema."""
    s = SqlStore(SqlAlchemyDatabase(postgres_url), (tmp_path / "artifacts").as_uri())
    yield s
    s.close()


def test_the_contract_runs_here_too() -> None:
    assert {"test_experiments", "test_run_lifecycle", "test_concurrent_writers_from_threads"} <= (
        set(CONTRACT_TESTS)
    )
    for name in CONTRACT_TESTS:
        assert globals()[name] is getattr(contract, name)


def test_the_postgresql_store_is_on_postgresql(store: SqlStore) -> None:
    assert store.db.dialect == "postgresql"
    tables = store.db.read(
        lambda c: c.fetch(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() ORDER BY table_name"
        )
    )
    assert [t[0] for t in tables] == [
        "alembic_version",
        "experiment_tags",
        "experiments",
        "latest_metrics",
        "logged_model_metrics",
        "logged_model_params",
        "logged_model_tags",
        "logged_models",
        "metrics",
        "model_version_tags",
        "model_versions",
        "params",
        "registered_model_aliases",
        "registered_model_tags",
        "registered_models",
        "runs",
        "schema_version",
        "tags",
    ]
    assert store.db.read(lambda c: c.fetch("SELECT version FROM schema_version")) == [
        (SCHEMA_VERSION,)
    ]
    assert store.db.read(lambda c: c.fetch("SELECT version_num FROM alembic_version")) == [
        (f"{SCHEMA_VERSION:04d}",)
    ]


def test_reopening_a_postgresql_store_keeps_its_data(postgres_url: str, tmp_path: Path) -> None:
    root = (tmp_path / "artifacts").as_uri()
    first = SqlStore(SqlAlchemyDatabase(postgres_url), root)
    exp = first.create_experiment("kept")
    run_id = first.create_run(exp, params={"a": "1"}).info.run_id
    first.log_metric(run_id, Metric("loss", 0.5, 10, 3))
    first.close()
    again = SqlStore(SqlAlchemyDatabase(postgres_url), root)
    try:
        run = again.get_run(run_id)
        assert (run.data.params, run.data.metrics) == ({"a": "1"}, {"loss": 0.5})
        assert [e.name for e in again.list_experiments()] == ["Default", "kept"]
        # The seeded experiment 0 does not break the id sequence of later experiments.
        assert again.create_experiment("next") == "2"
    finally:
        again.close()


def test_a_plain_postgresql_tracking_uri_opens(postgres_url: str, home: Path) -> None:
    """``postgresql://...`` is the URL the README documents; with the dev extras installed
    (psycopg2-binary, the driver the store's error message recommends) it must open a store."""
    from sqlalchemy.engine import make_url

    bare = make_url(postgres_url).set(drivername="postgresql").render_as_string(False)
    try:
        store = open_store(bare)
        run_id = store.create_run("0", run_name="via-uri").info.run_id
        assert store.get_run(run_id).info.run_name == "via-uri"
    finally:
        close_stores()


# --- search, delete/restore and logged models, on every backend ------------------------------


def open_backend(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> SqlStore:
    root = (tmp_path / f"artifacts-{backend}").as_uri()
    path = tmp_path / f"{backend}.db"
    if backend == "sqlite3":
        return SqlStore(SqliteDatabase(str(path)), root)
    if backend == "sqlite+pysqlite":
        return SqlStore(SqlAlchemyDatabase(f"sqlite+pysqlite:///{path}"), root)
    assert backend == "postgresql"
    return SqlStore(SqlAlchemyDatabase(request.getfixturevalue("postgres_url")), root)


@pytest.fixture(params=BACKENDS)
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    s = open_backend(request.param, tmp_path, request)
    yield s
    s.close()


def add_run(
    store: SqlStore,
    name: str,
    start: int,
    *,
    experiment_id: str = "0",
    params: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
    metrics: dict[str, float] | None = None,
) -> str:
    run_id = store.create_run(
        experiment_id, run_name=name, start_time=start, params=params, tags=tags
    ).info.run_id
    if metrics:
        store.log_batch(run_id, metrics=[Metric(k, v, start, 0) for k, v in metrics.items()])
    return run_id


def names(runs: list[Any]) -> list[str]:
    return [r.info.run_name for r in runs]


@pytest.fixture
def six_runs(any_store: SqlStore) -> dict[str, str]:
    """Six runs in experiment 0, started a..f in that order (so newest first is f..a)."""
    s = any_store
    return {
        "a": add_run(
            s, "a", 1000, params={"model": "tree"}, tags={"team": "ml"}, metrics={"acc": 0.95}
        ),
        "b": add_run(s, "b", 2000, params={"model": "tree"}, metrics={"acc": 0.85}),
        "c": add_run(
            s, "c", 3000, params={"model": "forest"}, tags={"team": "ops"}, metrics={"acc": 0.97}
        ),
        "d": add_run(s, "d", 4000, params={"model": "Tree"}),
        "e": add_run(s, "e", 5000, params={"model": "treehouse"}, metrics={"acc": math.nan}),
        "f": add_run(s, "f", 6000, metrics={"acc": 0.99}),
    }


@pytest.mark.parametrize(
    ("filter_string", "expected"),
    [
        (None, ["f", "e", "d", "c", "b", "a"]),
        ("metrics.acc > 0.9 and params.model = 'tree'", ["a"]),
        ("metrics.acc > 0.9", ["f", "c", "a"]),  # a NaN compares with nothing
        ("metrics.acc <= 0.9", ["b"]),
        ("metrics.acc = 0.95", ["a"]),
        ("metrics.acc != 0.95", ["f", "c", "b"]),
        ("metrics.missing > 0", []),
        ("params.model = 'tree'", ["b", "a"]),
        ("params.model != 'tree'", ["e", "d", "c"]),  # only runs that have the param
        ("params.model LIKE 'tree%'", ["e", "b", "a"]),  # LIKE is case-sensitive
        ("params.model LIKE 'T%'", ["d"]),
        ("params.model LIKE '%ree'", ["d", "b", "a"]),
        ("params.model LIKE 'tre_'", ["b", "a"]),
        ("params.model LIKE 'TREE'", []),
        ("params.model ILIKE 'TREE%'", ["e", "d", "b", "a"]),  # ILIKE ignores case
        ("params.model ILIKE 'tree'", ["d", "b", "a"]),
        ("params.model IS NULL", ["f"]),
        ("params.model IS NOT NULL", ["e", "d", "c", "b", "a"]),
        ("tags.team = 'ml'", ["a"]),
        ("tags.team != 'ml'", ["c"]),
        ("tags.team IS NULL", ["f", "e", "d", "b"]),
        ("tags.`mlflow.runName` = 'c'", ["c"]),
        ("attributes.run_name = 'b'", ["b"]),
        ("attributes.run_name LIKE '%'", ["f", "e", "d", "c", "b", "a"]),
        ("attributes.status = 'RUNNING'", ["f", "e", "d", "c", "b", "a"]),
        ("attributes.status != 'RUNNING'", []),
        ("attributes.start_time >= 3000 and attributes.start_time < 5000", ["d", "c"]),
        ("attributes.created = 1000", ["a"]),
        ("metrics.acc > 0.9 and params.model = 'tree' and tags.team = 'ml'", ["a"]),
    ],
)
def test_search_runs_filters(
    any_store: SqlStore,
    six_runs: dict[str, str],
    filter_string: str | None,
    expected: list[str],
) -> None:
    found = any_store.search_runs(["0"], filter_string)
    assert isinstance(found, Page) and found.token is None
    assert names(found) == expected


def test_search_runs_by_run_id_sets(any_store: SqlStore, six_runs: dict[str, str]) -> None:
    ids = six_runs
    found = any_store.search_runs(["0"], f"attributes.run_id IN ('{ids['a']}', '{ids['c']}')")
    assert names(found) == ["c", "a"]
    found = any_store.search_runs(["0"], f"attributes.run_id NOT IN ('{ids['a']}', '{ids['c']}')")
    assert names(found) == ["f", "e", "d", "b"]
    found = any_store.search_runs(["0"], f"attributes.run_id = '{ids['d']}'")
    assert names(found) == ["d"]
    assert any_store.search_runs(["0"], "attributes.run_id IN ('0123')") == []


@pytest.mark.parametrize(
    ("order_by", "expected"),
    [
        # Missing values (d) and NaN (e) come last in either direction, newest first among them.
        (["metrics.acc DESC"], ["f", "c", "a", "b", "e", "d"]),
        (["metrics.acc"], ["b", "a", "c", "f", "e", "d"]),
        (["metrics.acc ASC"], ["b", "a", "c", "f", "e", "d"]),
        # Ties (a and b: model 'tree') fall back to newest first. Strings compare by code point.
        (["params.model ASC"], ["d", "c", "b", "a", "e", "f"]),
        (["params.model DESC"], ["e", "b", "a", "c", "d", "f"]),
        (["tags.team ASC"], ["a", "c", "f", "e", "d", "b"]),
        (["attributes.start_time ASC"], ["a", "b", "c", "d", "e", "f"]),
        (["start_time DESC"], ["f", "e", "d", "c", "b", "a"]),
        (["attributes.run_name DESC"], ["f", "e", "d", "c", "b", "a"]),
        (["params.model ASC", "metrics.acc DESC"], ["d", "c", "a", "b", "e", "f"]),
    ],
)
def test_search_runs_order_by(
    any_store: SqlStore, six_runs: dict[str, str], order_by: list[str], expected: list[str]
) -> None:
    assert names(any_store.search_runs(["0"], order_by=order_by)) == expected


def test_order_and_filter_together(any_store: SqlStore, six_runs: dict[str, str]) -> None:
    found = any_store.search_runs(
        ["0"], "params.model LIKE '%e%'", order_by=["metrics.acc DESC"], max_results=3
    )
    assert names(found) == ["c", "a", "b"]
    assert found.token is not None
    rest = any_store.search_runs(
        ["0"], "params.model LIKE '%e%'", order_by=["metrics.acc DESC"], page_token=found.token
    )
    assert names(rest) == ["e", "d"] and rest.token is None


def collect_pages(search: Callable[..., Page[Any]], max_results: int) -> list[list[Any]]:
    pages = [search(max_results=max_results)]
    while pages[-1].token is not None:
        assert len(pages) < 100, "pagination does not end"
        pages.append(search(max_results=max_results, page_token=pages[-1].token))
    return pages


@pytest.mark.parametrize("order_by", [None, ["metrics.acc DESC"], ["params.p ASC"]])
def test_pages_cover_every_run_exactly_once(
    any_store: SqlStore, order_by: list[str] | None
) -> None:
    """Many ties (same start time, same metric, same param): pages must still partition."""
    ids = [
        add_run(
            any_store,
            f"r{i:02d}",
            start=1000 + i % 2,
            params={"p": str(i % 3)},
            metrics={"acc": float(i % 2)} if i % 4 else None,
        )
        for i in range(11)
    ]
    everything = any_store.search_runs(["0"], order_by=order_by)
    assert sorted(r.info.run_id for r in everything) == sorted(ids)
    pages = collect_pages(lambda **kw: any_store.search_runs(["0"], order_by=order_by, **kw), 3)
    assert [len(p) for p in pages] == [3, 3, 3, 2]
    assert [r.info.run_id for p in pages for r in p] == [r.info.run_id for r in everything]
    # A page exactly at the end has no token.
    assert any_store.search_runs(["0"], order_by=order_by, max_results=11).token is None


def test_search_runs_spans_experiments_and_checks_its_arguments(any_store: SqlStore) -> None:
    exp = any_store.create_experiment("other")
    add_run(any_store, "in-0", 1000)
    add_run(any_store, "in-other", 2000, experiment_id=exp)
    assert names(any_store.search_runs(["0", exp])) == ["in-other", "in-0"]
    assert names(any_store.search_runs([exp])) == ["in-other"]
    assert any_store.search_runs([]) == []
    for bad in (0, -1, 50_001):
        with pytest.raises(UserInputError, match="max_results"):
            any_store.search_runs(["0"], max_results=bad)
    with pytest.raises(SearchError, match="page token"):
        any_store.search_runs(["0"], page_token="not-a-token")
    with pytest.raises(SearchError, match="OR is not supported"):
        any_store.search_runs(["0"], "params.a = '1' OR params.a = '2'")
    with pytest.raises(SearchError, match="unknown attribute"):
        any_store.search_runs(["0"], "attributes.colour = 'red'")


def test_delete_and_restore_a_run(any_store: SqlStore, six_runs: dict[str, str]) -> None:
    b = six_runs["b"]
    any_store.delete_run(b)
    assert any_store.get_run(b).info.lifecycle_stage == "deleted"
    assert names(any_store.search_runs(["0"])) == ["f", "e", "d", "c", "a"]
    assert names(any_store.search_runs(["0"], run_view_type=ViewType.DELETED_ONLY)) == ["b"]
    assert len(any_store.search_runs(["0"], run_view_type=ViewType.ALL)) == 6
    assert names(any_store.search_runs(["0"], "attributes.lifecycle_stage = 'deleted'")) == []
    found = any_store.search_runs(
        ["0"], "attributes.lifecycle_stage = 'deleted'", run_view_type=ViewType.ALL
    )
    assert names(found) == ["b"]
    any_store.restore_run(b)
    assert any_store.get_run(b).info.lifecycle_stage == "active"
    assert any_store.search_runs(["0"], run_view_type=ViewType.DELETED_ONLY) == []
    assert len(any_store.search_runs(["0"])) == 6
    with pytest.raises(ResourceNotFound):
        any_store.delete_run("0" * 32)
    with pytest.raises(ResourceNotFound):
        any_store.restore_run("0" * 32)


def exp_names(experiments: list[Any]) -> list[str]:
    return [e.name for e in experiments]


@pytest.fixture
def experiments(any_store: SqlStore) -> dict[str, str]:
    return {
        "iris-a": any_store.create_experiment("iris-a", tags={"team": "ml"}),
        "iris-B": any_store.create_experiment("iris-B", tags={"team": "ml", "size": "big"}),
        "wine": any_store.create_experiment("wine", tags={"team": "ops"}),
    }


@pytest.mark.parametrize(
    ("filter_string", "expected"),
    [
        (None, ["Default", "iris-B", "iris-a", "wine"]),
        ("name = 'wine'", ["wine"]),
        ("attributes.name != 'wine'", ["Default", "iris-B", "iris-a"]),
        ("name LIKE 'iris%'", ["iris-B", "iris-a"]),
        ("name LIKE '%b'", []),
        ("name ILIKE '%b'", ["iris-B"]),
        ("name LIKE 'iris-_'", ["iris-B", "iris-a"]),
        ("tags.team = 'ml'", ["iris-B", "iris-a"]),
        ("tags.team = 'ml' and name LIKE '%a'", ["iris-a"]),
        ("tags.size IS NULL", ["Default", "iris-a", "wine"]),
        ("tags.size IS NOT NULL", ["iris-B"]),
        ("tags.team LIKE 'O%'", []),
        ("tags.team ILIKE 'O%'", ["wine"]),
        ("creation_time > 0", ["Default", "iris-B", "iris-a", "wine"]),
        ("attributes.creation_time < 0", []),
    ],
)
def test_search_experiments_filters(
    any_store: SqlStore,
    experiments: dict[str, str],
    filter_string: str | None,
    expected: list[str],
) -> None:
    found = any_store.search_experiments(filter_string=filter_string, order_by=["name ASC"])
    assert exp_names(found) == expected and found.token is None


def test_search_experiments_order_and_pages(
    any_store: SqlStore, experiments: dict[str, str]
) -> None:
    by_name = exp_names(any_store.search_experiments(order_by=["name DESC"]))
    assert by_name == ["wine", "iris-a", "iris-B", "Default"]
    by_id = any_store.search_experiments(order_by=["experiment_id DESC"])
    assert [e.experiment_id for e in by_id] == ["3", "2", "1", "0"]
    everything = any_store.search_experiments()
    assert sorted(e.experiment_id for e in everything) == ["0", "1", "2", "3"]
    pages = collect_pages(lambda **kw: any_store.search_experiments(**kw), 3)
    assert [len(p) for p in pages] == [3, 1]
    assert [e.experiment_id for p in pages for e in p] == [e.experiment_id for e in everything]
    with pytest.raises(SearchError):
        any_store.search_experiments(order_by=["tags.team"])
    with pytest.raises(SearchError):
        any_store.search_experiments(filter_string="metrics.acc > 1")


def test_delete_and_restore_an_experiment(any_store: SqlStore, experiments: dict[str, str]) -> None:
    wine = experiments["wine"]
    runs = [add_run(any_store, n, t, experiment_id=wine) for n, t in (("w1", 1000), ("w2", 2000))]
    any_store.delete_experiment(wine)
    assert any_store.get_experiment(wine).lifecycle_stage == "deleted"
    assert "wine" not in exp_names(any_store.search_experiments())
    assert "wine" not in exp_names(any_store.list_experiments())
    deleted = any_store.search_experiments(view_type=ViewType.DELETED_ONLY)
    assert exp_names(deleted) == ["wine"]
    assert len(any_store.search_experiments(view_type=ViewType.ALL)) == 4
    # Its runs are deleted with it, and no run can be added to it.
    assert any_store.search_runs([wine]) == []
    assert names(any_store.search_runs([wine], run_view_type=ViewType.DELETED_ONLY)) == [
        "w2",
        "w1",
    ]
    assert {any_store.get_run(r).info.lifecycle_stage for r in runs} == {"deleted"}
    with pytest.raises(UserInputError, match="must be in the 'active' state"):
        any_store.create_run(wine)
    with pytest.raises(ResourceNotFound):  # as MLflow: deleting twice finds nothing
        any_store.delete_experiment(wine)
    with pytest.raises(UserInputError, match="'active' state"):
        any_store.set_experiment_tag(wine, "k", "v")

    any_store.restore_experiment(wine)
    with pytest.raises(ResourceNotFound):  # restoring an active experiment finds nothing
        any_store.restore_experiment(wine)
    assert any_store.get_experiment(wine).lifecycle_stage == "active"
    assert any_store.search_experiments(view_type=ViewType.DELETED_ONLY) == []
    assert names(any_store.search_runs([wine])) == ["w2", "w1"]
    assert any_store.create_run(wine).info.experiment_id == wine

    with pytest.raises(UserInputError, match="default experiment"):
        any_store.delete_experiment("0")
    with pytest.raises(ResourceNotFound):
        any_store.delete_experiment("99")
    with pytest.raises(ResourceNotFound):
        any_store.restore_experiment("99")


def test_experiment_tags_and_rename(any_store: SqlStore, experiments: dict[str, str]) -> None:
    wine = experiments["wine"]
    any_store.set_experiment_tag(wine, "team", "ml")
    any_store.set_experiment_tag(wine, "note", "red")
    assert any_store.get_experiment(wine).tags == {"team": "ml", "note": "red"}
    any_store.delete_experiment_tag(wine, "note")
    assert any_store.get_experiment(wine).tags == {"team": "ml"}
    with pytest.raises(ResourceNotFound):
        any_store.delete_experiment_tag(wine, "note")
    found = any_store.search_experiments(filter_string="tags.team = 'ml'", order_by=["name"])
    assert exp_names(found) == ["iris-B", "iris-a", "wine"]
    any_store.rename_experiment(wine, "red-wine")
    assert any_store.get_experiment(wine).name == "red-wine"
    assert exp_names(any_store.search_experiments(filter_string="name LIKE 'red%'")) == ["red-wine"]
    with pytest.raises(ResourceAlreadyExists):
        any_store.rename_experiment(wine, "iris-a")


def test_logged_models(any_store: SqlStore) -> None:
    exp = any_store.create_experiment("models")
    run = any_store.create_run(exp, run_name="trainer")
    run_id = run.info.run_id
    clf = any_store.create_logged_model(
        exp,
        name="clf",
        source_run_id=run_id,
        tags={"stage": "dev"},
        params={"alpha": "0.1"},
        model_type="sklearn",
    )
    assert clf.model_id.startswith("m-") and clf.status is LoggedModelStatus.PENDING
    assert (clf.experiment_id, clf.source_run_id, clf.model_type) == (exp, run_id, "sklearn")
    # MLflow 3's layout: the experiment's models/<id>/artifacts, linked to the run by id.
    experiment_location = any_store.get_experiment(exp).artifact_location
    assert clf.artifact_location == f"{experiment_location}/models/{clf.model_id}/artifacts"
    assert (clf.tags, clf.params) == ({"stage": "dev"}, {"alpha": "0.1"})
    again = any_store.create_logged_model(exp, name="clf", source_run_id=run_id)
    assert again.artifact_location != clf.artifact_location
    loose = any_store.create_logged_model(exp, name="Loose")
    assert loose.artifact_location == f"{experiment_location}/models/{loose.model_id}/artifacts"
    assert loose.source_run_id is None

    ready = any_store.finalize_logged_model(clf.model_id, LoggedModelStatus.READY)
    assert ready.status is LoggedModelStatus.READY
    assert ready.last_updated_timestamp >= clf.last_updated_timestamp
    assert any_store.get_logged_model(clf.model_id).status is LoggedModelStatus.READY

    def search(filter_string: str | None = None, **kw: Any) -> list[str]:
        return sorted(
            m.model_id
            for m in any_store.search_logged_models([exp], filter_string=filter_string, **kw)
        )

    everything = sorted([clf.model_id, again.model_id, loose.model_id])
    assert search() == everything
    assert search("status = 'READY'") == [clf.model_id]
    assert search("name = 'clf'") == sorted([clf.model_id, again.model_id])
    assert search("attributes.name != 'clf'") == [loose.model_id]
    assert search("name LIKE 'CL%'") == []
    assert search("name ILIKE 'CL%'") == sorted([clf.model_id, again.model_id])
    assert search("name LIKE 'L%'") == [loose.model_id]
    assert search("tags.stage = 'dev'") == [clf.model_id]
    assert search(f"source_run_id = '{run_id}'") == sorted([clf.model_id, again.model_id])
    assert search("model_type = 'sklearn' and status = 'READY'") == [clf.model_id]
    assert any_store.search_logged_models(["0"]) == []
    assert any_store.search_logged_models([]) == []

    ordered = any_store.search_logged_models(
        [exp], order_by=[{"field_name": "name", "ascending": True}, {"field_name": "model_id"}]
    )
    clfs = sorted([clf.model_id, again.model_id])
    assert [m.model_id for m in ordered] == [loose.model_id, *clfs]
    pages = collect_pages(lambda **kw: any_store.search_logged_models([exp], **kw), 2)
    assert [len(p) for p in pages] == [2, 1]
    assert sorted(m.model_id for p in pages for m in p) == everything
    with pytest.raises(SearchError):
        any_store.search_logged_models([exp], filter_string="params.alpha = '0.1'")
    with pytest.raises(SearchError):
        any_store.search_logged_models([exp], order_by=[{"field_name": "colour"}])

    any_store.set_logged_model_tags(clf.model_id, {"stage": "prod", "owner": "ana"})
    any_store.log_logged_model_params(clf.model_id, {"depth": "3"})
    any_store.delete_logged_model_tag(clf.model_id, "owner")
    updated = any_store.get_logged_model(clf.model_id)
    assert (updated.tags, updated.params) == ({"stage": "prod"}, {"alpha": "0.1", "depth": "3"})
    with pytest.raises(ResourceNotFound):
        any_store.delete_logged_model_tag(clf.model_id, "owner")

    any_store.delete_logged_model(again.model_id)
    assert search() == sorted([clf.model_id, loose.model_id])
    with pytest.raises(ResourceNotFound):
        any_store.get_logged_model(again.model_id)
    gone = any_store.get_logged_model(again.model_id, allow_deleted=True)
    assert gone.lifecycle_stage == "deleted"

    with pytest.raises(ResourceNotFound):
        any_store.create_logged_model("99", name="x")
    # A source run the store does not know is taken as given, as MLflow does (issue 16).
    elsewhere = any_store.create_logged_model(exp, name="x", source_run_id="f" * 32)
    assert elsewhere.source_run_id == "f" * 32
    with pytest.raises(ResourceNotFound):
        any_store.finalize_logged_model("m-" + "0" * 32, LoggedModelStatus.READY)


def test_finished_runs_and_end_times_filter_alike(any_store: SqlStore) -> None:
    done = add_run(any_store, "done", 1000)
    add_run(any_store, "running", 2000)
    any_store.update_run(done, status=RunStatus.FINISHED, end_time=1500)
    assert names(any_store.search_runs(["0"], "attributes.status = 'FINISHED'")) == ["done"]
    assert names(any_store.search_runs(["0"], "attributes.end_time = 1500")) == ["done"]
    assert names(any_store.search_runs(["0"], "attributes.end_time > 0")) == ["done"]


# --- the same answers everywhere: patterns whose meaning depends on the database -----------

# Values chosen to tell the dialects' LIKE apart: SQLite's LIKE/GLOB versus PostgreSQL's LIKE.
PATTERN_VALUES = ("50%", "50 percent", "a_b", "axb", r"back\slash", "a*b", "a?b", "[x]", "x")
PATTERNS = (
    r"50\%",
    "50%",
    r"a\_b",
    "a_b",
    r"back\\slash",
    r"back\slash",
    "a*b",
    "a?b",
    "[x]",
    "[x%",
    "%]",
)


def test_like_means_the_same_on_every_backend(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    stores = {b: open_backend(b, tmp_path, request) for b in BACKENDS}
    try:
        answers: dict[str, dict[str, list[str]]] = {}
        for backend, store in stores.items():
            for i, value in enumerate(PATTERN_VALUES):
                add_run(store, value, 1000 + i, params={"v": value})
            answers[backend] = {
                f"{op} '{pattern}'": sorted(
                    names(store.search_runs(["0"], f"params.v {op} '{pattern}'"))
                )
                for pattern in PATTERNS
                for op in ("LIKE", "ILIKE")
            }
        differences = {
            query: {b: answers[b][query] for b in BACKENDS}
            for query in answers["postgresql"]
            if len({tuple(answers[b][query]) for b in BACKENDS}) > 1
        }
        assert not differences, "LIKE/ILIKE answers differ between backends:\n" + "\n".join(
            f"  params.v {q}: {d}" for q, d in differences.items()
        )
        # And the plain cases mean what they say.
        assert answers["postgresql"]["LIKE 'a*b'"] == ["a*b"]
        assert answers["postgresql"]["LIKE '[x]'"] == ["[x]"]
        assert answers["postgresql"]["LIKE 'a_b'"] == ["a*b", "a?b", "a_b", "axb"]
    finally:
        for store in stores.values():
            store.close()


def test_ilike_ignores_case_beyond_ascii(any_store: SqlStore) -> None:
    add_run(any_store, "upper", 1000, params={"fruit": "ÄPFEL"})
    add_run(any_store, "lower", 2000, params={"fruit": "äpfel"})
    assert names(any_store.search_runs(["0"], "params.fruit ILIKE 'äpfel'")) == ["lower", "upper"]
    assert names(any_store.search_runs(["0"], "params.fruit LIKE 'ä%'")) == ["lower"]
    assert names(any_store.search_runs(["0"], "params.fruit = 'ÄPFEL'")) == ["upper"]
