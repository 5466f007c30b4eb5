"""The runner and MLflow, both directions, with the real `mlflow` package:

- a project whose code uses the `mlflow` client logs into the reprorun run (the per-run
  endpoint over the embedded store), and `reprorun runs show` lists what it logged;
- `reprorun run --tracking-uri http://...` records into a real `mlflow server` on 127.0.0.1,
  and so does `import reprorun` inside the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import reprorun_cli, stop_process
from tests.integration.mlflow_env import client_python, free_port

pytestmark = pytest.mark.slow

MLPROJECT = """\
name: uses-mlflow
entry_points:
  main:
    parameters:
      lr: {type: float, default: 0.1}
    command: '"$MLFLOW_CLIENT_PYTHON" train.py {lr}'
  fluent:
    parameters:
      depth: {type: int, default: 3}
    command: '"$REPRORUN_TEST_PYTHON" fluent.py {depth}'
  fails_after_end:
    command: '"$MLFLOW_CLIENT_PYTHON" train.py 0.5 && exit 3'
"""

TRAIN = """\
import os, sys, mlflow
assert os.environ["MLFLOW_RUN_ID"] == os.environ["REPRORUN_RUN_ID"]
with mlflow.start_run() as run:
    assert run.info.run_id == os.environ["REPRORUN_RUN_ID"]
    mlflow.log_param("lr_seen", sys.argv[1])
    for step in range(5):
        mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
    mlflow.log_metrics({"acc": 0.93, "f1": 0.9})
    mlflow.set_tag("stage", "trained")
    with open("notes.txt", "w") as fh:
        fh.write("from mlflow")
    mlflow.log_artifact("notes.txt", "reports")
    if os.environ.get("LOG_SKLEARN_MODEL"):
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression

        X, y = load_iris(return_X_y=True)
        mlflow.sklearn.log_model(LogisticRegression(max_iter=200).fit(X, y), name="model")
print("trained with mlflow")
"""

FLUENT = """\
import sys, reprorun
depth = reprorun.param("depth", 3)
reprorun.log_metric("depth_seen", depth)
reprorun.log_text("hello", "texts/hello.txt")
print("fluent done")
"""


@pytest.fixture(scope="module")
def mlflow_python() -> Path:
    return client_python()


@pytest.fixture
def project(tmp_path: Path, mlflow_python: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "MLproject").write_text(MLPROJECT)
    (folder / "train.py").write_text(TRAIN)
    (folder / "fluent.py").write_text(FLUENT)
    monkeypatch.setenv("MLFLOW_CLIENT_PYTHON", str(mlflow_python))
    monkeypatch.setenv("REPRORUN_TEST_PYTHON", sys.executable)
    return folder


def _run_id(stderr: str) -> str:
    for word in stderr.split():
        if len(word) == 32 and all(c in "0123456789abcdef" for c in word):
            return word
    raise AssertionError(f"no run id in:\n{stderr}")


def test_mlflow_code_logs_into_the_reprorun_run(project: Path) -> None:
    env = {**os.environ, "LOG_SKLEARN_MODEL": "1"}
    result = reprorun_cli("run", str(project), "--env-manager", "local", "-P", "lr=0.5", env=env)
    assert result.returncode == 0, result.stderr
    run_id = _run_id(result.stderr)
    shown = json.loads(reprorun_cli("runs", "show", run_id, "--json").stdout)
    data = shown["data"]
    assert data["params"] == {"lr": "0.5", "lr_seen": "0.5"}
    assert data["metrics"] == {"loss": 0.2, "acc": 0.93, "f1": 0.9}
    assert data["tags"]["stage"] == "trained"
    assert shown["info"]["status"] == "FINISHED"
    text = reprorun_cli("runs", "show", run_id).stdout
    assert "loss" in text and "reports/notes.txt" in text and "trained with mlflow" in text
    # mlflow.sklearn.log_model made an MLflow 3 logged model of the run, READY, with its files.
    assert "Logged models" in text and f"runs:/{run_id}/model" in text and "READY" in text
    from reprorun.tracking.models import model_dir

    files = {p.name for p in model_dir(f"runs:/{run_id}/model").iterdir()}
    assert {"MLmodel", "requirements.txt"} <= files
    # The history is all there, not only the latest value.
    from reprorun.tracking.store import open_store

    history = open_store().get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(s, 1.0 / (s + 1)) for s in range(5)]


def test_a_command_failing_after_mlflow_ended_the_run_fails_it(project: Path) -> None:
    result = reprorun_cli("run", str(project), "-e", "fails_after_end", "--env-manager", "local")
    assert result.returncode == 1
    shown = json.loads(reprorun_cli("runs", "show", _run_id(result.stderr), "--json").stdout)
    assert shown["info"]["status"] == "FAILED"
    assert shown["data"]["tags"]["reprorun.exitCode"] == "3"


@pytest.fixture(scope="module")
def mlflow_server(mlflow_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` (SQLite backend, artifact proxy) on 127.0.0.1."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(root / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            str(mlflow_python.parent / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # MLflow's server takes a few seconds to import
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    "mlflow server did not start:\n" + (root / "server.log").read_text()[-4000:]
                )
            time.sleep(0.5)
        yield url
    finally:
        stop_process(proc, grace=20)
        log.close()


def test_the_runner_records_into_a_real_mlflow_server(
    project: Path, mlflow_server: str, request: pytest.FixtureRequest
) -> None:
    result = reprorun_cli(
        "run", str(project), "--env-manager", "local", "-P", "lr=0.25",
        "--experiment-name", "from-reprorun", "--tracking-uri", mlflow_server,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    run_id = _run_id(result.stderr)

    from reprorun.tracking import artifacts
    from reprorun.tracking.store.rest import RestStore

    store = RestStore(mlflow_server)
    request.addfinalizer(store.close)
    run = store.get_run(run_id)
    assert run.info.status.value == "FINISHED"
    assert (
        run.info.start_time > 0 and run.info.end_time and run.info.end_time >= run.info.start_time
    )
    assert store.get_experiment(run.info.experiment_id).name == "from-reprorun"
    assert run.data.params == {"lr": "0.25", "lr_seen": "0.25"}  # the runner's and the code's
    assert run.data.metrics == {"loss": 0.2, "acc": 0.93, "f1": 0.9}
    assert run.data.tags["mlflow.project.entryPoint"] == "main"
    assert run.data.tags["mlflow.source.name"] == str(project)
    assert run.data.tags["mlflow.user"]
    # The runner's own artifacts went up through MLflow's artifact proxy.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    files = {
        f.path
        for f in artifacts.list_artifacts(
            run.info.artifact_uri, recursive=True, tracking_uri=mlflow_server
        )
    }
    assert {"logs/run.log", "reports/notes.txt"} <= files
    log = artifacts.download(
        run.info.artifact_uri, "logs/run.log", project.parent, tracking_uri=mlflow_server
    )
    assert "trained with mlflow" in log.read_text()
    # Search through MLflow's own grammar implementation.
    found = store.search_runs(
        [run.info.experiment_id],
        "metrics.acc > 0.9 and params.lr = '0.25'",
        order_by=["metrics.loss"],
    )
    assert [r.info.run_id for r in found] == [run_id]
    # reprorun's own CLI reads it back from the MLflow server.
    shown = reprorun_cli("runs", "show", run_id[:8], "--tracking-uri", mlflow_server)
    assert shown.returncode == 0, shown.stderr
    assert "FINISHED" in shown.stdout and "trained with mlflow" in shown.stdout


def test_import_reprorun_inside_a_run_logs_into_a_real_mlflow_server(
    project: Path, mlflow_server: str, request: pytest.FixtureRequest
) -> None:
    result = reprorun_cli(
        "run", str(project), "-e", "fluent", "--env-manager", "local", "-P", "depth=4",
        "--tracking-uri", mlflow_server,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    from reprorun.tracking import artifacts
    from reprorun.tracking.store.rest import RestStore

    store = RestStore(mlflow_server)
    request.addfinalizer(store.close)
    run = store.get_run(_run_id(result.stderr))
    assert run.data.metrics == {"depth_seen": 4.0}
    assert run.data.params == {"depth": "4"}
    files = {
        f.path
        for f in artifacts.list_artifacts(
            run.info.artifact_uri, recursive=True, tracking_uri=mlflow_server
        )
    }
    assert "texts/hello.txt" in files
