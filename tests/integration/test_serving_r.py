"""`reprorun models serve|predict` of an R function saved by the MLflow R package
(carrier::crate): scored by one Rscript process behind reprorun's scoring server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.scoring_servers import ScoringServer, clean_env

pytestmark = pytest.mark.slow

SAVE_CRATE = """
library(mlflow)
fit <- lm(Sepal.Length ~ Sepal.Width + Petal.Length, data = iris)
predictor <- carrier::crate(function(x) stats::predict(fit, x) * 2, fit = fit)
args <- commandArgs(trailingOnly = TRUE)
invisible(mlflow_save_model(predictor, args[1]))
out <- predictor(data.frame(Sepal.Width = c(3.5, 3.0), Petal.Length = c(1.4, 5.2)))
writeLines(jsonlite::toJSON(unname(out), digits = NA), args[2])
"""
RECORDS = [{"Sepal.Width": 3.5, "Petal.Length": 1.4}, {"Sepal.Width": 3.0, "Petal.Length": 5.2}]


@pytest.fixture(scope="module")
def crate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[float]]:
    rscript = shutil.which("Rscript")
    if rscript is None:
        pytest.fail(
            "Rscript with the MLflow R package and carrier is needed (.ci/run installs it)."
        )
    work = tmp_path_factory.mktemp("crate")
    (work / "save.R").write_text(SAVE_CRATE)
    done = subprocess.run(
        [rscript, str(work / "save.R"), str(work / "model"), str(work / "expected.json")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return work / "model", json.loads((work / "expected.json").read_text())


def test_an_r_crate_model_is_served(crate: tuple[Path, list[float]], tmp_path: Path) -> None:
    model, expected = crate
    server = ScoringServer.reprorun(str(model), tmp_path / "home", tmp_path / "serve.log")
    server.start(timeout=120)
    try:
        assert "(this process)" in server.output()  # no Python requirements: R alone
        status, answer = server.post(json.dumps({"dataframe_records": RECORDS}))
        assert status == 200
        assert answer["predictions"] == pytest.approx(expected)
        split = {"columns": ["Sepal.Width", "Petal.Length"], "data": [[3.5, 1.4], [3.0, 5.2]]}
        assert server.post(json.dumps({"dataframe_split": split}))[1] == answer
        csv = "Petal.Length,Sepal.Width\n1.4,3.5\n5.2,3.0\n"
        assert server.post(csv, "text/csv")[1] == answer
        status, error = server.post(json.dumps({"dataframe_records": [{"Petal.Length": 1.0}]}))
        assert status == 400 and error["error_code"] == "BAD_REQUEST"
        assert "Sepal.Width" in error["message"]  # R's own words: object 'Sepal.Width' not found
        assert server.post(json.dumps({"dataframe_records": RECORDS}))[0] == 200
    finally:
        server.stop()


def test_predict_a_file_with_an_r_crate_model(
    crate: tuple[Path, list[float]], tmp_path: Path
) -> None:
    model, expected = crate
    source = tmp_path / "in.csv"
    source.write_text("Sepal.Width,Petal.Length\n" + "3.5,1.4\n3.0,5.2\n" * 500)
    done = subprocess.run(
        [
            *(sys.executable, "-m", "reprorun", "models", "predict", "-m", str(model)),
            *("-i", str(source), "-o", str(tmp_path / "out.json"), "--batch-rows", "300"),
        ],
        env=clean_env(REPRORUN_HOME=str(tmp_path / "home")),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    predictions = json.loads((tmp_path / "out.json").read_text())["predictions"]
    assert predictions == pytest.approx(expected * 500)
