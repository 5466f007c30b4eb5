"""MLflow's mlflow-example, the first project most MLflow users run, as it is: its conda.yaml
on a machine without conda, its train.py on the real `mlflow` client, the default command.

uv installs the conda packages from PyPI (numpy, pandas, scikit-learn) and the `pip:` section
(mlflow, unpinned as in the example: uv's cache usually holds it from the MLflow client tests).
"""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest

from tests.conftest import make_project, reprorun_cli

pytestmark = pytest.mark.slow

# Exactly https://github.com/mlflow/mlflow-example's MLproject and conda.yaml.
MLPROJECT = """\
name: tutorial

conda_env: conda.yaml

entry_points:
  main:
    parameters:
      alpha: float
      l1_ratio: {type: float, default: 0.1}
    command: "python train.py {alpha} {l1_ratio}"
"""
CONDA_YAML = """\
name: tutorial
channels:
  - defaults
dependencies:
  - numpy>=1.14.3
  - pandas>=1.0.0
  - scikit-learn>0.19.1
  - pip
  - pip:
    - mlflow
"""
# The example's train.py, on a generated stand-in for its wine-quality.csv.
TRAIN = """\
import os
import sys
import warnings

import numpy as np
import pandas as pd
from sklearn.linear_model import ElasticNet
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import train_test_split

import mlflow
import mlflow.sklearn


def eval_metrics(actual, pred):
    rmse = np.sqrt(mean_squared_error(actual, pred))
    mae = mean_absolute_error(actual, pred)
    r2 = r2_score(actual, pred)
    return rmse, mae, r2


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    np.random.seed(40)
    wine_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wine-quality.csv")
    data = pd.read_csv(wine_path)
    train, test = train_test_split(data)
    train_x = train.drop(["quality"], axis=1)
    test_x = test.drop(["quality"], axis=1)
    train_y = train[["quality"]]
    test_y = test[["quality"]]

    alpha = float(sys.argv[1]) if len(sys.argv) > 1 else 0.5
    l1_ratio = float(sys.argv[2]) if len(sys.argv) > 2 else 0.5

    with mlflow.start_run():
        lr = ElasticNet(alpha=alpha, l1_ratio=l1_ratio, random_state=42)
        lr.fit(train_x, train_y)
        predicted_qualities = lr.predict(test_x)
        (rmse, mae, r2) = eval_metrics(test_y, predicted_qualities)
        print("Elasticnet model (alpha=%f, l1_ratio=%f):" % (alpha, l1_ratio))
        print("  RMSE: %s" % rmse)
        print("  MAE: %s" % mae)
        print("  R2: %s" % r2)
        mlflow.log_param("alpha", alpha)
        mlflow.log_param("l1_ratio", l1_ratio)
        mlflow.log_metric("rmse", rmse)
        mlflow.log_metric("r2", r2)
        mlflow.log_metric("mae", mae)
        mlflow.sklearn.log_model(lr, "model")
"""


def wine_csv(rows: int = 200) -> str:
    rng = random.Random(7)
    lines = ["fixed acidity,volatile acidity,alcohol,quality"]
    for _ in range(rows):
        acidity, volatile, alcohol = rng.uniform(4, 15), rng.uniform(0.1, 1.5), rng.uniform(8, 14)
        quality = round(0.5 * alcohol - 2 * volatile + rng.gauss(0, 0.5))
        lines.append(f"{acidity:.2f},{volatile:.3f},{alcohol:.1f},{quality}")
    return "\n".join(lines) + "\n"


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def mlflow_example(tmp_path: Path) -> Path:
    repo = make_project(
        tmp_path / "mlflow-example",
        MLPROJECT,
        {"conda.yaml": CONDA_YAML, "train.py": TRAIN, "wine-quality.csv": wine_csv()},
    )
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "mlflow-example")
    return repo


def test_mlflow_example_runs_with_the_default_command(home: Path, mlflow_example: Path) -> None:
    result = reprorun_cli("run", str(mlflow_example), "-P", "alpha=0.42", timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Elasticnet model (alpha=0.420000, l1_ratio=0.100000)" in result.stdout

    runs = json.loads(reprorun_cli("runs", "list", "--json").stdout)
    assert len(runs) == 1, runs
    run_id = runs[0]["info"]["run_id"]
    shown = json.loads(reprorun_cli("runs", "show", run_id, "--json").stdout)
    assert shown["info"]["status"] == "FINISHED"
    data = shown["data"]
    assert data["params"] == {"alpha": "0.42", "l1_ratio": "0.1"}
    logged = {key for key in data["metrics"] if not key.startswith("system/")}  # the code's
    assert logged == {"rmse", "r2", "mae"}
    tags = data["tags"]
    assert tags["mlflow.project.env"] == "uv"
    assert tags["reprorun.env.condaTranslated"] == (
        "numpy>=1.14.3 -> numpy>=1.14.3; pandas>=1.0.0 -> pandas>=1.0.0; "
        "scikit-learn>0.19.1 -> scikit-learn>0.19.1"
    )
    # The sklearn model mlflow.sklearn.log_model wrote, as a logged model of the run.
    text = reprorun_cli("runs", "show", run_id).stdout
    assert "Logged models" in text and f"runs:/{run_id}/model" in text and "READY" in text
    from reprorun.tracking.models import model_dir

    files = {p.name for p in model_dir(f"runs:/{run_id}/model").iterdir()}
    assert {"MLmodel", "requirements.txt"} <= files
    mlmodel = (model_dir(f"runs:/{run_id}/model") / "MLmodel").read_text()
    assert "sklearn:" in mlmodel
    lock = Path(shown["info"]["artifact_uri"][len("file://") :]) / "environment"
    lock_text = (lock / "requirements.lock").read_text()
    assert lock_text.startswith("# reprorun lock: python ")
    assert "# not a conda environment: uv installed the conda packages" in lock_text
    assert "mlflow==" in lock_text and "scikit-learn==" in lock_text
