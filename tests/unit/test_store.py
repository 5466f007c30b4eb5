"""The SQL store's contract, on both database paths: stdlib sqlite3 and SQLAlchemy Core."""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reprorun.errors import (
    ParamConflict,
    ResourceAlreadyExists,
    ResourceNotFound,
    StoreVersionError,
    UserInputError,
)
from reprorun.tracking.entities import Metric, RunStatus, ViewType
from reprorun.tracking.search import INPUTS_TAG
from reprorun.tracking.store.database import SqlAlchemyDatabase, SqliteDatabase
from reprorun.tracking.store.sql import SqlStore


@pytest.fixture(params=["sqlite3", "sqlalchemy"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    path = tmp_path / "store.db"
    db = (
        SqliteDatabase(str(path))
        if request.param == "sqlite3"
        else SqlAlchemyDatabase(f"sqlite+pysqlite:///{path}")
    )
    s = SqlStore(db, (tmp_path / "artifacts").as_uri())
    yield s
    s.close()


def test_default_experiment_exists(store: SqlStore) -> None:
    [default] = store.list_experiments()
    assert (default.experiment_id, default.name) == ("0", "Default")
    assert default.artifact_location.endswith("/artifacts/0")


def test_experiments(store: SqlStore) -> None:
    exp_id = store.create_experiment("tuning", tags={"team": "ml"})
    assert exp_id == "1"
    assert store.get_experiment(exp_id).tags == {"team": "ml"}
    assert store.get_experiment_by_name("tuning").experiment_id == exp_id
    assert store.get_experiment_by_name("nope") is None
    assert store.get_or_create_experiment("tuning") == exp_id
    assert store.get_or_create_experiment("other") == "2"
    with pytest.raises(ResourceAlreadyExists):
        store.create_experiment("tuning")
    with pytest.raises(ResourceNotFound):
        store.get_experiment("42")
    with pytest.raises(ResourceNotFound):
        store.get_experiment("not-a-number")
    with pytest.raises(UserInputError):
        store.create_experiment("  ")


def test_run_lifecycle(store: SqlStore) -> None:
    run = store.create_run("0", run_name="first", user_id="ana", params={"a": "1"}, tags={"t": "x"})
    info = run.info
    assert info.status is RunStatus.RUNNING and info.end_time is None
    assert info.artifact_uri.endswith(f"/0/{info.run_id}/artifacts")
    assert run.data.params == {"a": "1"}
    assert run.data.tags == {"t": "x", "mlflow.runName": "first", "mlflow.user": "ana"}

    assert store.update_run(info.run_id, status=RunStatus.FINISHED, end_time=info.start_time + 5)
    # A finished run is never turned back by a late guard-protected update.
    assert not store.update_run(
        info.run_id, status=RunStatus.FAILED, only_if_status=RunStatus.RUNNING
    )
    finished = store.get_run(info.run_id).info
    assert finished.status is RunStatus.FINISHED and finished.end_time == info.start_time + 5
    with pytest.raises(ResourceNotFound):
        store.get_run("0" * 32)
    with pytest.raises(ResourceNotFound):
        store.update_run("0" * 32, status=RunStatus.FAILED)


def test_params_are_immutable_but_relogging_the_same_value_is_fine(store: SqlStore) -> None:
    run_id = store.create_run("0", params={"a": "1"}).info.run_id
    store.log_param(run_id, "a", "1")
    with pytest.raises(ParamConflict, match="already '1'; cannot change it to '2'"):
        store.log_batch(run_id, params={"b": "5", "a": "2"})
    # The batch was all or nothing: b was not written either.
    assert store.get_run(run_id).data.params == {"a": "1"}


def test_metric_history_and_latest(store: SqlStore) -> None:
    run_id = store.create_run("0").info.run_id
    store.log_batch(run_id, metrics=[Metric("loss", 3.0, 100, 0), Metric("loss", 1.0, 90, 2)])
    store.log_metric(run_id, Metric("loss", 2.0, 200, 1))  # older step logged later: not latest
    store.log_metric(run_id, Metric("acc", math.nan, 10, 0))
    run = store.get_run(run_id)
    assert run.data.metrics["loss"] == 1.0
    assert math.isnan(run.data.metrics["acc"])
    # In logging-time order, then step (MLflow's order).
    assert [(m.step, m.value) for m in store.get_metric_history(run_id, "loss")] == [
        (2, 1.0),
        (0, 3.0),
        (1, 2.0),
    ]
    with pytest.raises(ResourceNotFound):
        store.log_metric("f" * 32, Metric("x", 1.0, 1, 0))


def test_tags_are_overwritten(store: SqlStore) -> None:
    run_id = store.create_run("0").info.run_id
    store.set_tag(run_id, "k", "v1")
    store.set_tag(run_id, "k", "v2")
    assert store.get_run(run_id).data.tags["k"] == "v2"


def test_limits_are_checked(store: SqlStore) -> None:
    run_id = store.create_run("0").info.run_id
    with pytest.raises(UserInputError, match="limit is 8000"):
        store.log_param(run_id, "long", "x" * 8001)
    with pytest.raises(UserInputError, match="key"):
        store.set_tag(run_id, "", "v")


def test_search_is_newest_first_and_prefixes_resolve(store: SqlStore) -> None:
    ids = [store.create_run("0", start_time=t).info.run_id for t in (1000, 3000, 2000)]
    other = store.create_experiment("other")
    store.create_run(other, start_time=5000)
    found = [r.info.run_id for r in store.search_runs(["0"])]
    assert found == [ids[1], ids[2], ids[0]]
    assert len(store.search_runs(["0", other], max_results=2)) == 2
    assert store.resolve_run_id(ids[0][:10]) == ids[0]
    with pytest.raises(ResourceNotFound):
        store.resolve_run_id("zz")


def test_concurrent_writers_from_threads(store: SqlStore) -> None:
    run_id = store.create_run("0").info.run_id

    def log(worker: int) -> None:
        for i in range(25):
            store.log_metric(run_id, Metric(f"w{worker}", float(i), i, i))

    threads = [threading.Thread(target=log, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get_run(run_id).data.metrics == {f"w{w}": 24.0 for w in range(4)}


def test_schema_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    SqlStore(SqliteDatabase(str(path)), tmp_path.as_uri()).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreVersionError, match="newer reprorun"):
        SqlStore(SqliteDatabase(str(path)), tmp_path.as_uri())


def test_close_is_safe_twice(tmp_path: Path) -> None:
    db = SqliteDatabase(str(tmp_path / "s.db"))
    db.close()
    db.close()
    with pytest.raises(RuntimeError, match="closed"):
        db.read(lambda c: c.fetch("SELECT 1"))


def test_an_identical_metric_point_is_stored_once(store: SqlStore) -> None:
    # MLflow's client re-sends a run's metrics when it links them to a logged model.
    run_id = store.create_run("0").info.run_id
    point = Metric("loss", 0.5, 1000, 3)
    store.log_metric(run_id, point)
    store.log_batch(run_id, metrics=[point, point, Metric("loss", 0.5, 1001, 3)])
    history = store.get_metric_history(run_id, "loss")
    assert [(m.value, m.timestamp, m.step) for m in history] == [(0.5, 1000, 3), (0.5, 1001, 3)]


def test_experiment_summaries_count_active_runs_and_last_activity(store: SqlStore) -> None:
    busy = store.create_experiment("busy")
    store.create_experiment("empty")
    first = store.create_run(busy, start_time=1_000).info.run_id
    store.create_run(busy, start_time=2_000)
    gone = store.create_run(busy, start_time=9_000).info.run_id
    store.update_run(first, status=RunStatus.FINISHED, end_time=5_000)
    store.delete_run(gone)  # deleted runs are not counted
    summaries = {s["name"]: s for s in store.experiment_summaries()}
    assert set(summaries) == {"Default", "busy", "empty"}
    assert summaries["busy"]["run_count"] == 2
    # The latest start or end of its runs, unless the experiment itself changed later.
    busy_update = store.get_experiment(busy).last_update_time
    assert summaries["busy"]["last_activity"] == max(5_000, busy_update)
    assert summaries["empty"]["run_count"] == 0
    store.delete_experiment(busy)
    assert [s["name"] for s in store.experiment_summaries("deleted")] == ["busy"]
    assert {s["name"] for s in store.experiment_summaries("all")} == {"Default", "busy", "empty"}


def test_run_keys_list_the_keys_of_the_experiments_runs(store: SqlStore) -> None:
    a = store.create_experiment("a")
    b = store.create_experiment("b")
    run_a = store.create_run(a, params={"lr": "1"}, tags={"team": "x"}).info.run_id
    store.log_metric(run_a, Metric("acc", 0.5, 1))
    run_b = store.create_run(b, params={"depth": "3"}).info.run_id
    store.log_metric(run_b, Metric("loss", 0.1, 1))
    keys = store.run_keys([a, b])
    assert keys["params"] == ["depth", "lr"]
    assert keys["metrics"] == ["acc", "loss"]
    assert "team" in keys["tags"]
    assert store.run_keys([b])["params"] == ["depth"]
    with pytest.raises(ResourceNotFound):
        store.run_keys(["not-a-number"])


def test_runs_order_by_duration(store: SqlStore) -> None:
    exp = store.create_experiment("durations")
    for name, start, end in (("slow", 0, 9_000), ("fast", 1_000, 2_000), ("mid", 2_000, 6_000)):
        run_id = store.create_run(exp, run_name=name, start_time=start).info.run_id
        store.update_run(run_id, status=RunStatus.FINISHED, end_time=end)
    store.create_run(exp, run_name="running", start_time=3_000)
    names = lambda order: [  # noqa: E731
        r.info.run_name for r in store.search_runs([exp], order_by=[order])
    ]
    assert names("attributes.duration") == ["fast", "mid", "slow", "running"]
    assert names("attributes.duration DESC") == ["slow", "mid", "fast", "running"]


def log_datasets(store: SqlStore, run_id: str, *datasets: tuple[str, str, str]) -> None:
    """Record dataset inputs (name, digest, context) as the server records runs/log-inputs."""
    store.set_tag(
        run_id,
        INPUTS_TAG,
        json.dumps(
            {
                "datasets": [
                    {
                        "dataset": {"name": name, "digest": digest, "source_type": "local"},
                        "tags": [{"key": "mlflow.data.context", "value": context}],
                    }
                    for name, digest, context in datasets
                ]
            }
        ),
    )


def test_search_runs_by_dataset_inputs(store: SqlStore) -> None:
    exp = store.create_experiment("datasets")
    other = store.create_experiment("elsewhere")
    ids = {}
    for name, start, experiment in (
        ("train", 1, exp),
        ("eval", 2, exp),
        ("plain", 3, exp),
        ("broken", 4, exp),
        ("gone", 5, exp),
        ("other", 6, other),
    ):
        ids[name] = store.create_run(experiment, run_name=name, start_time=start).info.run_id
    log_datasets(store, ids["train"], ("iris", "d1", "training"), ("wine", "d2", "validation"))
    log_datasets(store, ids["eval"], ("iris", "d1", "evaluation"))
    log_datasets(store, ids["gone"], ("iris", "d1", "training"))
    log_datasets(store, ids["other"], ("iris", "d1", "training"))
    store.set_tag(ids["broken"], INPUTS_TAG, "{not json")
    store.log_param(ids["eval"], "depth", "3")
    store.delete_run(ids["gone"])

    def names(filter_string: str, **kwargs: Any) -> list[str]:
        return [r.info.run_name for r in store.search_runs([exp], filter_string, **kwargs)]

    assert names("datasets.name = 'iris'") == ["eval", "train"]
    assert names("datasets.digest IN ('d2')") == ["train"]
    assert names("datasets.context = 'training'") == ["train"]
    assert names("dataset.name LIKE 'w%' AND datasets.context != 'evaluation'") == ["train"]
    assert names("datasets.name = 'iris' AND params.depth = '3'") == ["eval"]
    assert names("datasets.name ILIKE 'IRIS'", order_by=["attributes.start_time ASC"]) == [
        "train",
        "eval",
    ]
    assert names("datasets.name = 'nothing'") == []
    assert names("datasets.context = 'training'", run_view_type=ViewType.ALL) == ["gone", "train"]
    first = store.search_runs([exp], "datasets.digest = 'd1'", max_results=1)
    assert [r.info.run_name for r in first] == ["eval"]
    rest = store.search_runs([exp], "datasets.digest = 'd1'", max_results=1, page_token=first.token)
    assert [r.info.run_name for r in rest] == ["train"] and rest.token is None
    with pytest.raises(UserInputError, match="unknown dataset key 'size'"):
        names("datasets.size = '1'")
