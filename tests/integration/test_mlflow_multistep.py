"""MLflow's multistep workflow pattern (examples/multistep_workflow in mlflow/mlflow) run by
`reprorun run`: the main step calls ``mlflow.run(".", step, parameters=...,
env_manager="local")`` on the real `mlflow` client, and each step is run by reprorun, nested
under the main run, in the same store and environment.

The project has the shape of MLflow's example: a ``main`` entry point whose code looks for an
earlier FINISHED run of each step (``_already_ran``) before launching it, a first step that
writes a folder of artifacts, and a second that reads it through a ``path`` parameter naming
the first step's artifact folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import make_project, reprorun_cli
from tests.integration.test_mlflow_example import CONDA_YAML, git

pytestmark = pytest.mark.slow

MLPROJECT = """\
name: multistep_example

conda_env: conda.yaml

entry_points:
  load_raw_data:
    command: "python load_raw_data.py"

  etl_data:
    parameters:
      ratings_csv: path
      max_row_limit: {type: int, default: 100000}
    command: "python etl_data.py --ratings-csv {ratings_csv} --max-row-limit {max_row_limit}"

  fail:
    command: "python -c 'import sys; sys.exit(3)'"

  main:
    parameters:
      max_row_limit: {type: int, default: 100000}
      also_fail: {type: str, default: "no"}
    command: "python main.py --max-row-limit {max_row_limit} --also-fail {also_fail}"
"""

LOAD_RAW_DATA = """\
import os
import tempfile

import mlflow

with mlflow.start_run():
    folder = os.path.join(tempfile.mkdtemp(), "ratings-csv-dir")
    os.makedirs(folder)
    with open(os.path.join(folder, "ratings.csv"), "w") as fh:
        fh.write("user,movie,rating\\n" + "".join(f"{i},{i % 7},{i % 5}\\n" for i in range(50)))
    mlflow.log_artifacts(folder, "ratings-csv-dir")
    print("Uploaded ratings-csv-dir")
"""

ETL_DATA = """\
import argparse
import os

import mlflow

parser = argparse.ArgumentParser()
parser.add_argument("--ratings-csv")
parser.add_argument("--max-row-limit", type=int)
args = parser.parse_args()
with mlflow.start_run():
    with open(os.path.join(args.ratings_csv, "ratings.csv")) as fh:
        rows = fh.read().splitlines()[1 : args.max_row_limit + 1]
    mlflow.log_metric("rows", len(rows))
    mlflow.log_text("\\n".join(rows), "ratings-parquet-dir/part-0.csv")
"""

# The example's main.py, as MLflow 3 users write it (search_runs instead of list_run_infos).
MAIN = """\
import argparse
import os

import mlflow
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from mlflow.tracking.fluent import _get_experiment_id
from mlflow.utils import mlflow_tags


def _already_ran(entry_point_name, parameters, git_commit):
    client = MlflowClient()
    for run in client.search_runs([_get_experiment_id()]):
        tags = run.data.tags
        if tags.get(mlflow_tags.MLFLOW_PROJECT_ENTRY_POINT) != entry_point_name:
            continue
        if any(run.data.params.get(k) != str(v) for k, v in parameters.items()):
            continue
        if run.info.status != RunStatus.to_string(RunStatus.FINISHED):
            continue
        if tags.get(mlflow_tags.MLFLOW_GIT_COMMIT) != git_commit:
            continue
        return run
    return None


def _get_or_run(entrypoint, parameters, git_commit):
    existing = _already_ran(entrypoint, parameters, git_commit)
    if existing:
        print(f"Found existing run for entrypoint={entrypoint}")
        return existing
    print(f"Launching new run for entrypoint={entrypoint} and parameters={parameters}")
    submitted = mlflow.run(".", entrypoint, parameters=parameters, env_manager="local")
    print(f"STEP {entrypoint} {submitted.run_id}")
    return MlflowClient().get_run(submitted.run_id)


parser = argparse.ArgumentParser()
parser.add_argument("--max-row-limit", type=int)
parser.add_argument("--also-fail")
args = parser.parse_args()
with mlflow.start_run() as active_run:
    print(f"MAIN {active_run.info.run_id}")
    git_commit = active_run.data.tags.get(mlflow_tags.MLFLOW_GIT_COMMIT)
    load = _get_or_run("load_raw_data", {}, git_commit)
    ratings_csv = os.path.join(load.info.artifact_uri, "ratings-csv-dir")
    etl = _get_or_run(
        "etl_data", {"ratings_csv": ratings_csv, "max_row_limit": args.max_row_limit}, git_commit
    )
    mlflow.log_metric("etl_rows", MlflowClient().get_run(etl.info.run_id).data.metrics["rows"])
    if args.also_fail == "yes":
        try:
            mlflow.run(".", "fail", env_manager="local")
        except mlflow.exceptions.ExecutionException as error:
            print(f"STEP FAILED: {error}")
"""


@pytest.fixture
def multistep(tmp_path: Path) -> Path:
    repo = make_project(
        tmp_path / "multistep",
        MLPROJECT,
        {
            "conda.yaml": CONDA_YAML,
            "load_raw_data.py": LOAD_RAW_DATA,
            "etl_data.py": ETL_DATA,
            "main.py": MAIN,
        },
    )
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "multistep")
    return repo


def _show(run_id: str) -> dict[str, object]:
    shown: dict[str, object] = json.loads(reprorun_cli("runs", "show", run_id, "--json").stdout)
    return shown


def test_mlflow_run_steps_are_run_by_reprorun_nested_under_the_main_run(
    home: Path, multistep: Path
) -> None:
    result = reprorun_cli("run", str(multistep), "-P", "max_row_limit=20", timeout=900)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    main_id = out.split("MAIN ")[1].split()[0]
    load_id = out.split("STEP load_raw_data ")[1].split()[0]
    etl_id = out.split("STEP etl_data ")[1].split()[0]
    assert "MLflow's own runner" not in out

    main, load, etl = _show(main_id), _show(load_id), _show(etl_id)
    for step, entry_point in ((load, "load_raw_data"), (etl, "etl_data")):
        info, data = step["info"], step["data"]
        assert isinstance(info, dict) and isinstance(data, dict)
        assert info["status"] == "FINISHED"
        assert info["experiment_id"] == main["info"]["experiment_id"]  # type: ignore[index]
        tags = data["tags"]
        assert tags["mlflow.parentRunId"] == main_id
        assert tags["mlflow.project.entryPoint"] == entry_point
        # Run by reprorun (its tags), with the same environment as the main step.
        assert tags["mlflow.project.env"] == "local"
        assert "reprorun.source.tree" in tags or "mlflow.source.git.commit" in tags
    assert etl["data"]["metrics"]["rows"] == 20  # type: ignore[index]
    assert main["data"]["metrics"]["etl_rows"] == 20  # type: ignore[index]
    assert main["info"]["status"] == "FINISHED"  # type: ignore[index]

    # A second run of the workflow finds the steps that already ran (MLflow's _already_ran).
    again = reprorun_cli("run", str(multistep), "-P", "max_row_limit=20", timeout=900)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Found existing run for entrypoint=load_raw_data" in again.stdout
    assert "Found existing run for entrypoint=etl_data" in again.stdout


def test_a_failed_step_raises_mlflows_execution_exception_in_the_main_step(
    home: Path, multistep: Path
) -> None:
    result = reprorun_cli(
        "run", str(multistep), "-P", "max_row_limit=5", "-P", "also_fail=yes", timeout=900
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "STEP FAILED: Run (ID '" in out
    failed_id = out.split("STEP FAILED: Run (ID '")[1].split("'")[0]
    failed = _show(failed_id)
    assert failed["info"]["status"] == "FAILED"  # type: ignore[index]
    assert failed["data"]["tags"]["mlflow.parentRunId"] == out.split("MAIN ")[1].split()[0]  # type: ignore[index]
