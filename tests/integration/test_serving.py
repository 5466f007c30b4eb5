"""`reprorun models serve|predict` with real servers on 127.0.0.1: a model saved and one logged
by the real MLflow client (served in an environment built from its requirements, and
answering as `mlflow models serve` does), and a model logged by reprorun.log_model."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.mlflow_env import client_python, tracking_server
from tests.integration.scoring_servers import (
    COLUMNS,
    ROWS,
    ScoringServer,
    clean_env,
    mlflow_model,
)

pytestmark = pytest.mark.slow

RECORDS = [dict(zip(COLUMNS, r, strict=True)) for r in ROWS]
CSV = ",".join(COLUMNS) + "\n" + "\n".join(",".join(map(str, r)) for r in ROWS) + "\n"
GOOD = [
    json.dumps({"dataframe_split": {"columns": COLUMNS, "data": ROWS}}),
    json.dumps({"dataframe_records": RECORDS}),
    json.dumps({"instances": RECORDS}),
    json.dumps({"inputs": {c: [r[i] for r in ROWS] for i, c in enumerate(COLUMNS)}}),
]
# a reprorun model fitted on a bare array takes its columns in the file's order
ROWS_AS_RECORDS_OF_PLAIN_COLUMNS = [{f"x{i}": v for i, v in enumerate(r)} for r in ROWS]
BAD = {
    "missing column": json.dumps({"dataframe_records": [{"sl": 1.0, "sw": 2.0, "pl": 3.0}]}),
    "wrong type": json.dumps({"dataframe_records": [{**RECORDS[0], "pw": "wide"}]}),
    "malformed JSON": '{"dataframe_split": {"columns": ["sl"',
    "a list": json.dumps(ROWS),
    "no format key": json.dumps({"rows": ROWS}),
}


@pytest.fixture(scope="module")
def mlflow_python() -> Path:
    return client_python()


@pytest.fixture(scope="module")
def serve_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One reprorun home for the module: its environment cache builds each model's
    environment once."""
    return tmp_path_factory.mktemp("serve-home")


@pytest.fixture(scope="module")
def saved(mlflow_python: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("mlflow-model")
    report = mlflow_model(mlflow_python, str(work / "model"), work)
    return {"path": work / "model", **report}


@pytest.fixture(scope="module")
def served(
    saved: dict[str, Any], serve_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ScoringServer]:
    """The MLflow model served by reprorun in its own uv environment (the default)."""
    log = tmp_path_factory.mktemp("logs") / "serve.log"
    server = ScoringServer.reprorun(str(saved["path"]), serve_home, log).start()
    try:
        yield server
    finally:
        server.stop()


def test_an_mlflow_model_is_served_in_its_own_environment(
    served: ScoringServer, saved: dict[str, Any]
) -> None:
    output = served.output()
    assert "Installing" in output and "python_env.yaml" in output  # built from its requirements
    assert f"at http://127.0.0.1:{served.port} (uv environment" in output
    assert served.get("/ping") == (200, "\n")
    assert served.get("/health") == (200, "\n")
    assert served.get("/version") == (200, "3.17.2")  # the mlflow inside the model's env
    for body in GOOD:
        assert served.post(body) == (200, {"predictions": saved["predictions"]}), body
    assert served.post(CSV, "text/csv") == (200, {"predictions": saved["predictions"]})


def test_bad_requests_are_400_with_mlflows_error_shape(served: ScoringServer) -> None:
    for what, body in BAD.items():
        status, answer = served.post(body)
        assert status == 400, (what, answer)
        assert answer["error_code"] in ("BAD_REQUEST", "INVALID_PARAMETER_VALUE"), what
        assert answer["message"], what
    status, answer = served.post(BAD["missing column"])
    assert "missing inputs ['pw']" in answer["message"]
    status, answer = served.post("x", "text/plain")
    assert status == 415 and answer["error_code"] == "BAD_REQUEST"
    big = b'{"inputs": [' + b"[1.0, 2.0, 3.0, 4.0], " * 5_000_000 + b"[1, 2, 3, 4]]}"
    assert len(big) > 100_000_000
    status, answer = served.post(big)
    assert status == 413 and answer["error_code"] == "REQUEST_TOO_LARGE"
    assert served.post(GOOD[0])[0] == 200  # still serving


def test_answers_match_mlflow_models_serve(
    served: ScoringServer, saved: dict[str, Any], mlflow_python: Path, tmp_path: Path
) -> None:
    mlflow = ScoringServer.mlflow(mlflow_python, saved["path"], tmp_path / "mlflow.log")
    mlflow.start()
    try:
        integers = {"dataframe_split": {"columns": COLUMNS, "data": [[5, 3, 4, 1], [6, 3, 5, 2]]}}
        for body in [*GOOD, json.dumps(integers), json.dumps({"inputs": ROWS})]:
            assert served.post(body) == mlflow.post(body), body
        assert served.post(CSV, "text/csv") == mlflow.post(CSV, "text/csv")
        parquet = tmp_path / "rows.parquet"
        subprocess.run(
            [
                str(mlflow_python), "-c",
                "import io, sys, pandas as pd; pd.read_csv(io.StringIO(sys.argv[1]))"
                ".to_parquet(sys.argv[2])",
                CSV, str(parquet),
            ],
            check=True, env=clean_env(),
        )  # fmt: skip
        ctype = "application/vnd.apache.parquet"
        ours = served.post(parquet.read_bytes(), ctype)
        assert ours == mlflow.post(parquet.read_bytes(), ctype)
        assert ours == (200, {"predictions": saved["predictions"]})
        for what, body in BAD.items():
            ours, theirs = served.post(body), mlflow.post(body)
            assert ours[0] == theirs[0], (what, ours, theirs)
            assert ours[1]["error_code"] == theirs[1]["error_code"], what
    finally:
        mlflow.stop()


def test_a_second_start_reuses_the_environment(
    served: ScoringServer, saved: dict[str, Any], serve_home: Path, tmp_path: Path
) -> None:
    again = ScoringServer.reprorun(str(saved["path"]), serve_home, tmp_path / "again.log")
    again.start()
    try:
        output = again.output()
        assert "Creating" not in output and "Installing" not in output, output
        assert again.post(GOOD[0]) == (200, {"predictions": saved["predictions"]})
    finally:
        again.stop()
    key = served.output().split("(uv environment ")[1].split(")")[0]
    assert f"(uv environment {key})" in output


def test_a_model_logged_to_a_server_by_the_mlflow_client(
    mlflow_python: Path, serve_home: Path, tmp_path: Path
) -> None:
    with tracking_server(tmp_path) as tracking:
        report = mlflow_model(
            mlflow_python, "log:iris", tmp_path / "work", MLFLOW_TRACKING_URI=tracking.url
        )
        uri = f"runs:/{report['run_id']}/iris"
        server = ScoringServer.reprorun(
            uri, serve_home, tmp_path / "serve.log", "--tracking-uri", tracking.url
        )
        server.start()
        try:
            assert server.post(GOOD[1]) == (200, {"predictions": report["predictions"]})
        finally:
            server.stop()
        # registered on the server, then served by its alias
        done = _reprorun(
            serve_home, "models", "register", uri, "--name", "iris", "--alias", "champion",
            "--tracking-uri", tracking.url,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        server = ScoringServer.reprorun(
            "models:/iris@champion", serve_home, tmp_path / "alias.log",
            "--tracking-uri", tracking.url,
        )  # fmt: skip
        server.start()
        try:
            assert server.post(CSV, "text/csv") == (200, {"predictions": report["predictions"]})
        finally:
            server.stop()
        (tmp_path / "rows.csv").write_text(CSV)
        done = _predict(
            serve_home, "-m", "models:/iris@champion", "--tracking-uri", tracking.url,
            "-i", str(tmp_path / "rows.csv"), "-o", str(tmp_path / "out.json"),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert json.loads((tmp_path / "out.json").read_text()) == {
            "predictions": report["predictions"]
        }


LOG_REPRORUN_MODEL = """
import reprorun
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
x, y = load_iris(return_X_y=True)
with reprorun.start_run() as run:
    reprorun.log_model(LogisticRegression(max_iter=300).fit(x, y), "clf")
    print(run.run_id)
"""


@pytest.fixture(scope="module")
def reprorun_run(serve_home: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    work = tmp_path_factory.mktemp("reprorun-model")
    (work / "log.py").write_text(LOG_REPRORUN_MODEL)
    done = subprocess.run(
        [sys.executable, str(work / "log.py")],
        env=clean_env(REPRORUN_HOME=str(serve_home)),
        capture_output=True,
        text=True,
        check=True,
        cwd=work,
    )
    return done.stdout.strip()


@pytest.mark.parametrize("manager", ["uv", "virtualenv", "local"])
def test_a_reprorun_model_by_its_runs_uri(
    reprorun_run: str, serve_home: Path, tmp_path: Path, manager: str
) -> None:
    uri = f"runs:/{reprorun_run}/clf"
    server = ScoringServer.reprorun(
        uri, serve_home, tmp_path / "serve.log", "--env-manager", manager
    )
    server.start()
    try:
        where = "(this process)" if manager == "local" else f"({manager} environment"
        assert where in server.output()
        status, answer = server.post(json.dumps({"inputs": ROWS}))
        assert status == 200 and len(answer["predictions"]) == 3
        assert server.post(CSV, "text/csv") == (200, answer)
        status, answer = server.post(json.dumps({"inputs": [["a", "b", "c", "d"]]}))
        assert status == 400 and answer["error_code"] == "BAD_REQUEST"
        if manager != "local":  # the scoring process ends with the command, even killed
            assert server.process is not None
            server.process.kill()
            server.process.wait()
            deadline = time.monotonic() + 20
            while _answers(server) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not _answers(server), "the scoring process outlived its killed parent"
    finally:
        server.stop()


def _answers(server: ScoringServer) -> bool:
    try:
        return server.get("/ping")[0] == 200
    except OSError:
        return False


def _predict(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _reprorun(home, "models", "predict", *args)


def _reprorun(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reprorun", *args],
        env=clean_env(REPRORUN_HOME=str(home)),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_predict_files_in_the_models_environment(
    saved: dict[str, Any],
    served: ScoringServer,
    serve_home: Path,
    mlflow_python: Path,
    tmp_path: Path,
) -> None:
    rows = ROWS * 700
    want = saved["predictions"] * 700
    (tmp_path / "in.csv").write_text(
        ",".join(COLUMNS) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows)
    )
    done = _predict(
        serve_home, "-m", str(saved["path"]), "-i", str(tmp_path / "in.csv"),
        "-o", str(tmp_path / "out.csv"), "--batch-rows", "500",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "2100 predictions written" in done.stderr
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert lines[0] == "prediction" and [int(v) for v in lines[1:]] == want
    # Parquet (pyarrow is in the model's environment, with mlflow), JSON out on stdout
    subprocess.run(
        [
            str(mlflow_python), "-c",
            "import pandas as pd, sys; pd.read_csv(sys.argv[1]).to_parquet(sys.argv[2])",
            str(tmp_path / "in.csv"), str(tmp_path / "in.parquet"),
        ],
        check=True, env=clean_env(),
    )  # fmt: skip
    done = _predict(serve_home, "-m", str(saved["path"]), "-i", str(tmp_path / "in.parquet"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"predictions": want}
    # a column missing from the file: a clear error, no output file
    (tmp_path / "narrow.csv").write_text("sl,sw,pl\n1,2,3\n")
    done = _predict(
        serve_home, "-m", str(saved["path"]), "-i", str(tmp_path / "narrow.csv"),
        "-o", str(tmp_path / "narrow.out.csv"),
    )  # fmt: skip
    assert done.returncode != 0
    assert "missing inputs ['pw']" in done.stderr
    assert not (tmp_path / "narrow.out.csv").exists()


def test_unknown_models_are_clear_errors(serve_home: Path, tmp_path: Path) -> None:
    done = _predict(serve_home, "-m", str(tmp_path / "nothing"), "-i", str(tmp_path / "x.csv"))
    assert done.returncode == 2
    assert "No model at" in done.stderr and "Traceback" not in done.stderr


def test_register_alias_serve_and_predict(
    reprorun_run: str, serve_home: Path, tmp_path: Path
) -> None:
    """The README's path on the embedded store: register, alias, serve, predict."""
    done = _reprorun(serve_home, "models", "register", f"{reprorun_run}/clf", "--name", "flowers")
    assert done.returncode == 0, done.stderr
    done = _reprorun(serve_home, "models", "alias", "flowers", "champion", "1")
    assert done.returncode == 0, done.stderr
    server = ScoringServer.reprorun(
        "models:/flowers@champion", serve_home, tmp_path / "serve.log", "--env-manager", "local"
    )
    server.start()
    try:
        status, answer = server.post(json.dumps({"inputs": ROWS}))
        assert status == 200 and len(answer["predictions"]) == 3
    finally:
        server.stop()
    (tmp_path / "in.json").write_text(json.dumps(ROWS_AS_RECORDS_OF_PLAIN_COLUMNS))
    done = _predict(
        serve_home, "-m", "models:/flowers/1", "-i", str(tmp_path / "in.json"),
        "-o", str(tmp_path / "out.json"), "--env-manager", "local",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "out.json").read_text()) == answer
