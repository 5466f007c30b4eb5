"""`reprorun.search_runs` / `reprorun.get_run` and `reprorun runs list --filter/--order-by`,
on the embedded store and against a real `reprorun server` (issue 16, part 7)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import reprorun
from reprorun.errors import UserInputError
from reprorun.tracking.entities import Metric, RunStatus, now_ms
from reprorun.tracking.store import open_store
from reprorun.tracking.store.base import TrackingStore
from tests.conftest import REPO_ROOT, reprorun_cli
from tests.integration.server_proc import server_process


def seed(store: TrackingStore) -> dict[str, str]:
    """Three runs in experiment "tune" (depth 2, 3, 4; rmse 0.9, 0.4, 0.6) and one in Default."""
    exp = store.get_or_create_experiment("tune")
    ids = {}
    for depth, rmse in ((2, 0.9), (3, 0.4), (4, 0.6)):
        run = store.create_run(exp, run_name=f"d{depth}", params={"max_depth": str(depth)})
        store.log_metric(run.info.run_id, Metric("rmse", rmse, now_ms()))
        store.set_tag(run.info.run_id, "team", "blue" if depth != 4 else "red")
        store.update_run(run.info.run_id, status=RunStatus.FINISHED, end_time=now_ms())
        ids[f"d{depth}"] = run.info.run_id
    ids["default"] = store.create_run("0", run_name="other").info.run_id
    return ids


@pytest.fixture(params=["embedded", "server"])
def tracking(request: pytest.FixtureRequest, tmp_path: Path, home: Path) -> Iterator[str]:
    """A tracking URI: the embedded SQLite store, or a real `reprorun server`."""
    if request.param == "embedded":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    with server_process(tmp_path / "server") as server:
        yield server.url


def test_search_runs_filters_orders_and_limits(tracking: str) -> None:
    ids = seed(open_store(tracking))
    found = reprorun.search_runs(
        experiment_names=["tune"],
        filter_string="metrics.rmse < 0.8 and tags.team = 'blue'",
        order_by=["metrics.rmse ASC"],
        output_format="list",
        tracking_uri=tracking,
    )
    assert [r.info.run_id for r in found] == [ids["d3"]]
    ordered = reprorun.search_runs(
        experiment_names=["tune"],
        order_by=["params.max_depth DESC"],
        max_results=2,
        output_format="list",
        tracking_uri=tracking,
    )
    assert [r.info.run_id for r in ordered] == [ids["d4"], ids["d3"]]
    assert reprorun.get_run(ids["d3"], tracking_uri=tracking).data.metrics == {"rmse": 0.4}


def test_search_runs_defaults_to_the_default_experiment(tracking: str, monkeypatch) -> None:
    ids = seed(open_store(tracking))
    monkeypatch.setenv("REPRORUN_TRACKING_URI", tracking)
    assert [r.info.run_id for r in reprorun.search_runs(output_format="list")] == [ids["default"]]
    monkeypatch.setenv("REPRORUN_EXPERIMENT_NAME", "tune")
    assert len(reprorun.search_runs(output_format="list")) == 3
    assert len(reprorun.search_runs(search_all_experiments=True, output_format="list")) == 4


def test_search_runs_bad_filter_names_the_position(tracking: str) -> None:
    seed(open_store(tracking))
    # SearchError on the embedded store; over REST the server's message, as a UserInputError.
    with pytest.raises(UserInputError, match="position") as caught:
        reprorun.search_runs(
            experiment_names=["tune"], filter_string="metrics.rmse >> 1", tracking_uri=tracking
        )
    assert "metrics.rmse >> 1" in str(caught.value)


def test_search_runs_without_pandas_returns_runs(tmp_path: Path, monkeypatch) -> None:
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    ids = seed(open_store(uri))
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas raises ImportError
    found = reprorun.search_runs(experiment_names=["tune"], tracking_uri=uri)
    assert sorted(r.info.run_id for r in found) == sorted(ids[k] for k in ("d2", "d3", "d4"))


def test_search_runs_refuses_ids_and_names_together(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    with pytest.raises(UserInputError, match="not both"):
        reprorun.search_runs(experiment_ids=["0"], experiment_names=["x"], tracking_uri=uri)


# With pandas (the MLflow client's virtualenv has it): reprorun's DataFrame against MLflow's own
# `mlflow.search_runs`, both reading the same `reprorun server`.
FRAME_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import mlflow, reprorun
    url = sys.argv[1]
    mlflow.set_tracking_uri(url)
    def shape(df):
        return {
            "columns": sorted(df.columns),
            "first": list(df.columns[:6]),
            "dtypes": {c: str(t) for c, t in df.dtypes.items()},
            "run_ids": list(df["run_id"]),
            "max_depth": list(df["params.max_depth"]),
            "status": list(df["status"]),
        }
    kwargs = dict(experiment_names=["tune"], order_by=["metrics.rmse DESC"])
    print(json.dumps({
        "ours": shape(reprorun.search_runs(tracking_uri=url, **kwargs)),
        "mlflow": shape(mlflow.search_runs(**kwargs)),
    }))
    """
)


@pytest.mark.slow
def test_search_runs_dataframe_matches_mlflow(tmp_path: Path, home: Path) -> None:
    from tests.integration.mlflow_env import client_python

    python = client_python()
    with server_process(tmp_path / "server") as server:
        ids = seed(open_store(server.url))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REPRORUN_", "MLFLOW_"))}
        env["PYTHONPATH"] = str(REPO_ROOT / "src")
        done = subprocess.run(
            [str(python), "-c", FRAME_SCRIPT, server.url],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
    assert done.returncode == 0, done.stderr
    frames = json.loads(done.stdout.strip().splitlines()[-1])
    ours, theirs = frames["ours"], frames["mlflow"]
    assert ours["run_ids"] == [ids["d2"], ids["d4"], ids["d3"]]
    assert ours["first"] == [
        "run_id",
        "experiment_id",
        "status",
        "artifact_uri",
        "start_time",
        "end_time",
    ]
    assert "metrics.rmse" in ours["columns"] and "tags.team" in ours["columns"]
    assert ours["dtypes"]["start_time"].startswith("datetime64[")  # [ns, UTC] or [us, UTC]
    assert ours == theirs


def cli_ids(*args: str) -> list[str]:
    done = reprorun_cli("runs", "list", "--json", *args)
    assert done.returncode == 0, done.stderr
    return [r["info"]["run_id"] for r in json.loads(done.stdout)]


def test_runs_list_filter_order_and_max_results(tracking: str) -> None:
    ids = seed(open_store(tracking))
    where = ("--tracking-uri", tracking, "--experiment-name", "tune")
    assert cli_ids(*where, "--filter", "params.max_depth != '2'", "--order-by", "metrics.rmse") == [
        ids["d3"],
        ids["d4"],
    ]
    assert cli_ids(*where, "--order-by", "metrics.rmse DESC", "--max-results", "1") == [ids["d2"]]
    every = cli_ids("--tracking-uri", tracking, "--filter", "attributes.status = 'RUNNING'")
    assert every == [ids["default"]]


def test_runs_list_bad_filter_is_a_usage_error(tracking: str) -> None:
    seed(open_store(tracking))
    done = reprorun_cli("runs", "list", "--tracking-uri", tracking, "--filter", "metrics.rmse >> 1")
    assert done.returncode == 2
    assert "position" in done.stderr and "Traceback" not in done.stderr
    done = reprorun_cli("runs", "list", "--tracking-uri", tracking, "--order-by", "rmse upward")
    assert done.returncode == 2
    assert "order_by" in done.stderr and "Traceback" not in done.stderr


def test_search_runs_by_dataset_inputs_through_a_server(tmp_path: Path, home: Path) -> None:
    """Datasets a run logged through runs/log-inputs filter the search of the REST store."""
    with server_process(tmp_path / "server") as server:
        store = open_store(server.url)
        exp = store.get_or_create_experiment("datasets")
        ids = {name: store.create_run(exp, run_name=name).info.run_id for name in "abc"}
        for name, dataset, context in (("a", "iris", "training"), ("b", "wine", "evaluation")):
            body = {
                "run_id": ids[name],
                "datasets": [
                    {
                        "dataset": {
                            "name": dataset,
                            "digest": f"{dataset}-1",
                            "source_type": "local",
                            "source": "{}",
                        },
                        "tags": [{"key": "mlflow.data.context", "value": context}],
                    }
                ],
            }
            conn = server.connection()
            conn.request(
                "POST",
                "/api/2.0/mlflow/runs/log-inputs",
                json.dumps(body),
                {"Content-Type": "application/json"},
            )
            assert conn.getresponse().status == 200
            conn.close()

        def names(filter_string: str) -> list[str]:
            found = store.search_runs([exp], filter_string, order_by=["attributes.run_name"])
            return [r.info.run_name for r in found]

        assert names("datasets.name = 'iris'") == ["a"]
        assert names("datasets.digest IN ('iris-1', 'wine-1')") == ["a", "b"]
        assert names("datasets.context = 'evaluation'") == ["b"]
        found = reprorun.search_runs(
            experiment_names=["datasets"],
            filter_string="datasets.name LIKE '%i%' AND datasets.context != 'training'",
            output_format="list",
            tracking_uri=server.url,
        )
        assert [r.info.run_name for r in found] == ["b"]
        with pytest.raises(UserInputError, match="unknown dataset key 'size'"):
            names("datasets.size = '1'")
