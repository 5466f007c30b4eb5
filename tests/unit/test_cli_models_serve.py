"""`reprorun models predict|serve` through click's runner, on the embedded store (in-process
scoring with --env-manager local; the real servers are in tests/integration/test_serving.py)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

import reprorun
from reprorun.cli import cli
from reprorun.serving import environment


def _logged_model(home: Path) -> tuple[str, LogisticRegression]:
    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=300).fit(x, y)
    with reprorun.start_run() as run:
        reprorun.log_model(model, "clf")
    return f"runs:/{run.run_id}/clf", model


def test_predict_a_csv_by_runs_uri(home: Path, tmp_path: Path) -> None:
    uri, model = _logged_model(home)
    rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]] * 50)
    source = tmp_path / "in.csv"
    source.write_text("a,b,c,d\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    result = CliRunner().invoke(
        cli,
        [
            *("models", "predict", "-m", uri, "-i", str(source)),
            *("-o", str(tmp_path / "out.json"), "--env-manager", "local", "--batch-rows", "7"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "100 predictions written" in result.output
    got = json.loads((tmp_path / "out.json").read_text())["predictions"]
    assert got == [int(v) for v in model.predict(rows)]


def test_a_model_records_its_environment(home: Path) -> None:
    uri, _ = _logged_model(home)
    from reprorun.serving import model_folder

    folder = model_folder(uri)
    assert (folder / "requirements.txt").is_file()
    assert environment.default_manager(folder) == "uv"
    files = environment.model_files(folder)
    assert files.directory == folder and files.env.kind is None  # requirements.txt beside it


def test_mlflows_exact_python_is_relaxed_when_missing(home: Path, tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("numpy\n")
    (tmp_path / "python_env.yaml").write_text(
        "python: 3.11.99\nbuild_dependencies:\n  - pip\ndependencies:\n  - -r requirements.txt\n"
    )
    spec = environment.model_files(tmp_path).env
    assert spec.kind == "python_env" and spec.path is not None
    text = spec.path.read_text()
    assert 'python: "3.11"' in text
    assert f"-r {(tmp_path / 'requirements.txt').resolve()}" in text


def test_unknown_models_and_inputs_are_clear(home: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli, ["models", "predict", "-m", str(tmp_path / "none"), "-i", str(tmp_path / "x.csv")]
    )
    assert result.exit_code == 2
    assert "No model at" in result.output
    uri, _ = _logged_model(home)
    result = runner.invoke(
        cli,
        ["models", "predict", "-m", uri, "-i", str(tmp_path / "x.csv"), "--env-manager", "local"],
    )
    assert result.exit_code == 2 and "No input file" in result.output
    result = runner.invoke(cli, ["models", "serve", "--help"])
    assert result.exit_code == 0 and "127.0.0.1" in result.output


def test_serve_on_a_port_in_use_is_a_clear_error(home: Path) -> None:
    uri, _ = _logged_model(home)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = CliRunner().invoke(
            cli, ["models", "serve", "-m", uri, "--port", port, "--env-manager", "local"]
        )
    assert result.exit_code == 2
    assert f"Cannot listen on 127.0.0.1:{port}" in result.output
