"""The workshop's R code on the real MLflow R package (CRAN 3.10.1, installed by .ci/run from
../shared/rlibs), with no Python MLflow: the package's artifacts, models and mlflow_run() go
through reprorun's `mlflow` command (`reprorun mlflow-cli`), inside `reprorun run` and by hand
against `reprorun server` (`eval "$(reprorun mlflow-env)"`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from reprorun.tracking.artifacts import local_dir
from reprorun.tracking.store import close_stores, open_store
from tests.conftest import reprorun_cli
from tests.integration.server_proc import server_process
from tests.integration.test_any_language import artifact_files, last_run, r_env

pytestmark = pytest.mark.slow

MLPROJECT = """
name: crate-r
entry_points:
  main:
    parameters:
      alpha: {type: float, default: 0.5}
    command: "Rscript -e \\"mlflow::mlflow_source('train.R')\\" --args --alpha {alpha}"
"""
TRAIN_R = """
library(mlflow)
alpha <- mlflow_param("alpha", 0.5, "numeric")
with(mlflow_start_run(), {
  fit <- lm(Sepal.Length ~ Sepal.Width, data = iris)
  mlflow_log_metric("rmse", sqrt(mean(residuals(fit)^2)))
  mlflow_log_param("formula", "Sepal.Length ~ Sepal.Width")
  predictor <- carrier::crate(function(x) stats::predict(fit, x) * alpha, fit = fit, alpha = alpha)
  mlflow_log_model(predictor, "model")
})
"""
# mlflow_load_model goes through `mlflow artifacts download -u runs:/...`.
PREDICT_R = """
library(mlflow)
model <- mlflow_load_model(paste0("runs:/", Sys.getenv("RUN_ID"), "/model"))
cat(sprintf("%.4f", mlflow_predict(model, iris[1:2, ])), sep = " ")
"""


@pytest.fixture(scope="module")
def rscript() -> str:
    found = shutil.which("Rscript")
    ok = found and subprocess.run(
        [found, "-e", "library(mlflow); library(carrier)"], capture_output=True, check=False
    )
    if not found or not ok or ok.returncode != 0:
        pytest.fail(
            "Rscript with the MLflow R package and carrier is needed: "
            "bash ../shared/rlibs/install.sh (.ci/run does)."
        )
    assert found is not None
    return found


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "crate-r"
    folder.mkdir()
    (folder / "MLproject").write_text(MLPROJECT)
    (folder / "train.R").write_text(TRAIN_R)
    return folder


def no_mlflow_path() -> str:
    """PATH without any `mlflow` command (the test checks there is none)."""
    path = os.environ.get("PATH", "")
    assert shutil.which("mlflow", path=path) is None, "a Python mlflow is on PATH"
    return path


def expected_predictions(rscript: str, alpha: float) -> str:
    code = (
        "fit <- lm(Sepal.Length ~ Sepal.Width, data = iris); "
        f'cat(sprintf("%.4f", stats::predict(fit, iris[1:2, ]) * {alpha}), sep = " ")'
    )
    out = subprocess.run([rscript, "-e", code], capture_output=True, text=True, check=True)
    return out.stdout


def predict(rscript: str, run_id: str, **env: str) -> str:
    result = subprocess.run(
        [rscript, "-e", PREDICT_R],
        env=r_env(RUN_ID=run_id, **env),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def mlflow_env(**extra: str) -> dict[str, str]:
    """The variables `eval "$(reprorun mlflow-env)"` sets, read from its output."""
    result = reprorun_cli("mlflow-env", env=dict(os.environ, **extra))
    assert result.returncode == 0, result.stderr
    found = {}
    for line in result.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        found[name] = value
    return found


def test_a_crate_model_logged_in_reprorun_run_reloads_and_predicts(
    rscript: str, project: Path, home: Path, tmp_path: Path
) -> None:
    no_mlflow_path()
    result = reprorun_cli("run", str(project), "-P", "alpha=0.9")
    assert result.returncode == 0, result.stderr
    run = last_run()
    assert run.info.status.value == "FINISHED"
    assert run.data.params["alpha"] == "0.9"
    assert run.data.params["formula"] == "Sepal.Length ~ Sepal.Width"
    assert 0.7 < run.data.metrics["rmse"] < 0.9
    assert {"model/MLmodel", "model/crate.bin"} <= artifact_files(run)
    mlmodel = local_dir(run.info.artifact_uri) / "model" / "MLmodel"
    assert "crate:" in mlmodel.read_text()
    shown = reprorun_cli("runs", "show", run.info.run_id)
    assert "model/  crate  (R function, carrier)  crate.bin" in shown.stdout
    assert f'mlflow_load_model("runs:/{run.info.run_id}/model")' in shown.stdout
    assert "python ?" not in shown.stdout
    # reprorun.load_model says what it is and how to load it, instead of "no model".
    from reprorun.errors import UserInputError
    from reprorun.tracking.models import load_model

    with pytest.raises(UserInputError, match=r"flavors: crate\): load it with mlflow_load_model"):
        load_model(f"runs:/{run.info.run_id}/model")
    # A second Rscript, by hand, loads the model through a server on the same store.
    close_stores()
    store = f"sqlite:///{home / 'store.db'}"
    with server_process(tmp_path / "srv", "--backend-store-uri", store, store=False) as server:
        env = mlflow_env()
        assert set(env) == {"MLFLOW_BIN", "MLFLOW_PYTHON_BIN"}
        got = predict(rscript, run.info.run_id, MLFLOW_TRACKING_URI=server.url, **env)
    assert got == expected_predictions(rscript, 0.9)


def test_the_r_project_by_hand_against_a_server(
    rscript: str, project: Path, tmp_path: Path, home: Path
) -> None:
    no_mlflow_path()
    with server_process(tmp_path / "srv") as server:
        env = r_env(MLFLOW_TRACKING_URI=server.url, **mlflow_env())
        trained = subprocess.run(
            [rscript, "-e", "mlflow::mlflow_source('train.R')", "--args", "--alpha", "0.25"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert trained.returncode == 0, trained.stderr
        close_stores()
        [run] = open_store(server.url).search_runs(["0"], max_results=10)
        assert run.info.status.value == "FINISHED"
        assert run.data.params["formula"] == "Sepal.Length ~ Sepal.Width"
        folder = server.artifacts / run.info.artifact_uri.removeprefix("mlflow-artifacts:/")
        assert (folder / "model" / "crate.bin").is_file()
        got = predict(rscript, run.info.run_id, MLFLOW_TRACKING_URI=server.url, **mlflow_env())
    assert got == expected_predictions(rscript, 0.25)


def test_mlflow_env_never_shadows_a_real_mlflow(tmp_path: Path, home: Path) -> None:
    fake = tmp_path / "bin" / "mlflow"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho real\n")
    fake.chmod(0o755)
    on_path = reprorun_cli(
        "mlflow-env", env=dict(os.environ, PATH=f"{fake.parent}:{os.environ['PATH']}")
    )
    assert on_path.returncode == 0 and on_path.stdout == ""
    assert "leaving it" in on_path.stderr
    given = reprorun_cli("mlflow-env", env=dict(os.environ, MLFLOW_BIN=str(fake)))
    assert given.returncode == 0 and given.stdout == ""


def test_mlflow_run_from_rscript_runs_the_project_through_reprorun(
    rscript: str, project: Path, tmp_path: Path, home: Path
) -> None:
    no_mlflow_path()
    code = (
        "library(mlflow); "
        f'id <- mlflow_run(uri = "{project}", parameters = list(alpha = 0.3)); '
        'cat("RUN", id, "\\n")'
    )
    with server_process(tmp_path / "srv") as server:
        result = subprocess.run(
            [rscript, "-e", code],
            env=r_env(MLFLOW_TRACKING_URI=server.url, **mlflow_env()),
            capture_output=True,
            text=True,
            check=False,
            timeout=180,
        )
        assert result.returncode == 0, result.stderr
        run_id = result.stdout.split("RUN ")[1].split()[0]
        close_stores()
        run = open_store(server.url).get_run(run_id)
        assert run.info.status.value == "FINISHED"
        assert run.data.params["alpha"] == "0.3"
        got = predict(rscript, run_id, MLFLOW_TRACKING_URI=server.url, **mlflow_env())
    assert got == expected_predictions(rscript, 0.3)


PIPELINE_MLPROJECT = """
name: pipeline-r
entry_points:
  train:
    parameters:
      alpha: {type: float, default: 0.5}
    command: "Rscript -e \\"mlflow::mlflow_source('train.R')\\" --args --alpha {alpha}"
  main:
    command: "Rscript pipeline.R"
"""
# A workshop-style pipeline: the main step starts the training step with mlflow_run().
PIPELINE_R = """
library(mlflow)
id <- mlflow_run(uri = ".", entry_point = "train", parameters = list(alpha = 0.7))
cat("STEP", id, "\\n")
"""


def test_mlflow_run_inside_reprorun_run_runs_the_step_nested_in_the_same_store(
    rscript: str, tmp_path: Path, home: Path
) -> None:
    no_mlflow_path()
    folder = tmp_path / "pipeline-r"
    folder.mkdir()
    (folder / "MLproject").write_text(PIPELINE_MLPROJECT)
    (folder / "train.R").write_text(TRAIN_R)
    (folder / "pipeline.R").write_text(PIPELINE_R)
    result = reprorun_cli("run", str(folder), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    step_id = result.stdout.split("STEP ")[1].split()[0]
    close_stores()
    store = open_store(None)
    step = store.get_run(step_id)
    runs = store.search_runs([step.info.experiment_id])
    main = next(r for r in runs if r.data.tags.get("mlflow.project.entryPoint") == "main")
    assert main.info.status.value == "FINISHED"
    assert step.info.status.value == "FINISHED"
    assert step.data.params["alpha"] == "0.7"
    assert step.data.tags["mlflow.parentRunId"] == main.info.run_id
    assert step.data.tags["mlflow.project.entryPoint"] == "train"
    assert "rmse" in step.data.metrics
