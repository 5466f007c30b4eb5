"""The model registry from the real MLflow R package (CRAN 3.10.1, from ../shared/rlibs) by
hand against ``reprorun server``: ``mlflow_create_registered_model``,
``mlflow_create_model_version``, stage transitions, and ``mlflow_load_model`` of ``models:/``
URIs (a version, a stage, an alias set from Python), which the package resolves through
reprorun's `mlflow` command."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reprorun.tracking.store import close_stores, open_store
from tests.integration.server_proc import server_process
from tests.integration.test_any_language import r_env
from tests.integration.test_r_mlflow_package import (
    TRAIN_R,
    expected_predictions,
    mlflow_env,
    no_mlflow_path,
    rscript,  # noqa: F401 - the fixture
)

pytestmark = pytest.mark.slow

REGISTER_R = """
library(mlflow)
run_id <- Sys.getenv("RUN_ID")
run <- mlflow_get_run(run_id)
rm <- mlflow_create_registered_model("crate", description = "lm times alpha")
cat("MODEL", rm$name, "\\n")
mv <- mlflow_create_model_version("crate", source = paste0(run$artifact_uri, "/model"),
                                  run_id = run_id)
cat("VERSION", mv$version, mv$status, "\\n")
st <- mlflow_transition_model_version_stage("crate", mv$version, "Production")
cat("STAGE", st$current_stage, "\\n")
got <- mlflow_get_model_version("crate", mv$version)
cat("RUN", got$run_id, "\\n")
dup <- tryCatch(mlflow_create_registered_model("crate"), error = function(e) conditionMessage(e))
cat("DUP", grepl("RESOURCE_ALREADY_EXISTS", dup), "\\n")
for (uri in c("models:/crate/1", "models:/crate/Production")) {
  model <- mlflow_load_model(uri)
  cat("PRED", sprintf("%.4f", mlflow_predict(model, iris[1:2, ])), "\\n")
}
"""
ALIAS_R = """
library(mlflow)
model <- mlflow_load_model("models:/crate@champion")
cat(sprintf("%.4f", mlflow_predict(model, iris[1:2, ])), sep = " ")
"""


def rscript_run(binary: str, code: str, **env: str) -> str:
    done = subprocess.run(
        [binary, "-e", code],
        env=r_env(**env),
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def lines(out: str, tag: str) -> list[str]:
    return [line.split(None, 1)[1].strip() for line in out.splitlines() if line.startswith(tag)]


def test_the_r_package_registers_and_loads_models_uris(
    rscript: str,  # noqa: F811 - the fixture
    tmp_path: Path,
    home: Path,
) -> None:
    no_mlflow_path()
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.R").write_text(TRAIN_R)
    with server_process(tmp_path / "srv") as server:
        env = {"MLFLOW_TRACKING_URI": server.url, **mlflow_env()}
        code = "mlflow::mlflow_source('train.R')"
        done = subprocess.run(
            [rscript, "-e", code, "--args", "--alpha", "0.5"],
            cwd=project,
            env=r_env(**env),
            capture_output=True,
            text=True,
            check=False,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr
        close_stores()
        store = open_store(server.url)
        [run] = store.search_runs(["0"], max_results=10)
        out = rscript_run(rscript, REGISTER_R, RUN_ID=run.info.run_id, **env)
        expected = expected_predictions(rscript, 0.5).strip()
        assert lines(out, "MODEL") == ["crate"]
        assert lines(out, "VERSION") == ["1 READY"]
        assert lines(out, "STAGE") == ["Production"]
        assert lines(out, "RUN") == [run.info.run_id]
        assert lines(out, "DUP") == ["TRUE"]
        assert lines(out, "PRED") == [expected, expected]
        # An alias set from Python (or `reprorun models alias`) is what R loads next.
        store.set_registered_model_alias("crate", "champion", 1)
        got = rscript_run(rscript, ALIAS_R, **env)
        assert got == expected_predictions(rscript, 0.5)
        version = store.get_model_version("crate", 1)
        assert (version.run_id, version.current_stage) == (run.info.run_id, "Production")
