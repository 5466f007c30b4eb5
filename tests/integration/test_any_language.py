"""Logging from any program: the `reprorun log` / `reprorun param` commands in a shell
project, and the R client with the workshop's rpart project (examples/iris-r), inside
`reprorun run` and by hand, on the embedded store and through a server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from reprorun.tracking.store import close_stores, open_store
from tests.conftest import REPO_ROOT, make_project, reprorun_cli
from tests.integration.server_proc import server_process

IRIS_R = REPO_ROOT / "examples" / "iris-r"
pytestmark = pytest.mark.slow

SHELL_PROJECT = """
name: shell
entry_points:
  main:
    parameters:
      lr: {type: float, default: 0.1}
      epochs: {type: int, default: 3}
    command: "sh train.sh -P lr={lr} -P epochs={epochs}"
"""
TRAIN_SH = """
set -e
lr=$(reprorun param lr --default 0.5 --type float -- "$@")
epochs=$(reprorun param epochs --default 1 --type int -- "$@")
width=$(reprorun param width --default 64 --type int -- "$@")
reprorun log tag language shell
i=0
while [ "$i" -lt "$epochs" ]; do
  i=$((i + 1))
  echo "loss $(awk "BEGIN { print 1 / $i }") $i"
done | reprorun log metric -
reprorun log metric accuracy 0.875 --step "$epochs"
mkdir -p out && echo "lr=$lr width=$width" > out/report.txt && echo "{}" > out/extra.json
reprorun log artifact out/report.txt --artifact-path reports
reprorun log artifact out
echo "trained lr=$lr epochs=$epochs width=$width"
"""


def last_run(tracking_uri: str | None = None):  # type: ignore[no-untyped-def]
    close_stores()
    store = open_store(tracking_uri)
    [run] = store.search_runs([e.experiment_id for e in store.list_experiments()], max_results=1)
    return run


def artifact_files(run) -> set[str]:  # type: ignore[no-untyped-def]
    from reprorun.tracking.artifacts import list_artifacts

    return {f.path for f in list_artifacts(run.info.artifact_uri, recursive=True) if not f.is_dir}


def test_a_shell_project_logs_params_metrics_tags_and_artifacts(tmp_path: Path, home: Path) -> None:
    project = make_project(tmp_path / "shell", SHELL_PROJECT, {"train.sh": TRAIN_SH})
    result = reprorun_cli("run", str(project), "-P", "lr=0.02", "-P", "epochs=4")
    assert result.returncode == 0, result.stderr
    assert "trained lr=0.02 epochs=4 width=64" in result.stdout
    run = last_run()
    assert run.info.status.value == "FINISHED"
    # Declared parameters as given to the run; an undeclared one from its default, logged.
    assert run.data.params == {"lr": "0.02", "epochs": "4", "width": "64"}
    assert run.data.tags["language"] == "shell"
    assert run.data.metrics["accuracy"] == 0.875
    store = open_store()
    history = store.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in history] == [1, 2, 3, 4]
    assert history[-1].value == pytest.approx(0.25)
    assert artifact_files(run) >= {"reports/report.txt", "out/report.txt", "out/extra.json"}


def test_logging_outside_a_run_says_how_to_start_one(tmp_path: Path, home: Path) -> None:
    for args in (["log", "metric", "loss", "0.1"], ["log", "param", "lr", "1"]):
        result = reprorun_cli(*args)
        assert result.returncode == 2
        assert "Not inside a run" in result.stderr and "reprorun run" in result.stderr
        assert "reprorun runs create" in result.stderr and "Traceback" not in result.stderr
    # `reprorun param` still answers (the program can run by hand), saying it logs nothing.
    result = reprorun_cli("param", "lr", "--default", "0.5", "--type", "float")
    assert (result.returncode, result.stdout) == (0, "0.5\n")
    assert "not inside a run" in result.stderr
    result = reprorun_cli("param", "lr", "--default", "0.5", "--", "-P", "lr=0.02", "other")
    assert result.stdout == "0.02\n"
    # The workshop's style: one -P, then bare key=value pairs.
    result = reprorun_cli("param", "depth", "--", "-P", "lr=0.02", "depth=5")
    assert result.stdout == "5\n"
    result = reprorun_cli("param", "lr", "--type", "float", "--", "-P", "lr=fast")
    assert result.returncode == 2
    assert "Parameter 'lr': expected a float, got 'fast'" in result.stderr
    result = reprorun_cli("param", "lr")
    assert result.returncode == 2 and "-P lr=VALUE" in result.stderr


def test_a_run_made_by_hand_with_runs_create_and_end(tmp_path: Path, home: Path) -> None:
    created = reprorun_cli("runs", "create", "--experiment-name", "by-hand", "--run-name", "h")
    assert created.returncode == 0, created.stderr
    run_id = created.stdout.strip()
    env = dict(os.environ, REPRORUN_RUN_ID=run_id)
    assert reprorun_cli("log", "param", "depth", "3", env=env).returncode == 0
    clash = reprorun_cli("log", "param", "depth", "4", env=env)
    assert clash.returncode != 0 and "cannot change it to '4'" in clash.stderr
    bad = reprorun_cli("log", "metric", "loss", "low", env=env)
    assert bad.returncode == 2 and "must be a number" in bad.stderr
    lines = "".join(f"loss {1 / s} {s}\n" for s in range(1, 2501)) + "\n# done\n"
    piped = subprocess.run(
        [*_reprorun(), "log", "metric", "-", "--run-id", run_id],
        input=lines,
        capture_output=True,
        text=True,
        env=dict(os.environ),
        check=False,
    )
    assert piped.returncode == 0, piped.stderr
    assert "2500 metric values logged" in piped.stderr
    # A key MLflow refuses stops the pipe at its line; the lines before it are kept.
    piped = subprocess.run(
        [*_reprorun(), "log", "metric", "-", "--run-id", run_id],
        input="kept 1 1\n../../etc/x 2 2\nnever 3 3\n",
        capture_output=True,
        text=True,
        env=dict(os.environ),
        check=False,
    )
    assert piped.returncode == 2
    assert "Input line 2: Invalid metric key '../../etc/x'" in piped.stderr
    assert "Traceback" not in piped.stderr
    assert reprorun_cli("runs", "end", run_id).returncode == 0
    again = reprorun_cli("runs", "end", run_id, "--status", "FAILED")
    assert again.returncode == 0 and "already ended (FINISHED)" in again.stderr
    store = open_store()
    run = store.get_run(run_id)
    assert (run.info.status.value, run.info.run_name) == ("FINISHED", "h")
    assert len(store.get_metric_history(run_id, "loss")) == 2500
    assert run.data.metrics["kept"] == 1 and "never" not in run.data.metrics


def _reprorun() -> list[str]:
    import sys

    return [sys.executable, "-m", "reprorun"]


# --- R -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rscript() -> str:
    found = shutil.which("Rscript")
    if found is None:
        pytest.fail(
            "Rscript is needed: apt-get install r-base-core r-cran-rpart "
            "r-cran-jsonlite r-cran-curl (.ci/run does)."
        )
    return found


def r_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, **extra)
    # This machine's Python is a shared-library build (pyenv) and Debian's libpython3.11 is
    # installed too: R's start-up script puts the system's library folder first on
    # LD_LIBRARY_PATH, so a `reprorun` started from R by hand would load Debian's libpython
    # and not find its packages. (Inside `reprorun run` the runner's own `reprorun` command
    # takes care of it.) R_LD_LIBRARY_PATH keeps R's own folder only.
    env["R_LD_LIBRARY_PATH"] = "/usr/lib/R/lib"
    return env


def check_iris_r_run(run, files: set[str]) -> None:  # type: ignore[no-untyped-def]
    assert run.info.status.value == "FINISHED"
    assert run.data.params["cp"] == "0.02"
    assert run.data.params["maxdepth"] == "5"
    assert 0.9 < run.data.metrics["accuracy"] <= 1.0
    assert run.data.tags["model.kind"] == "rpart"
    assert {"model/model.rds", "model/MLmodel", "tree.txt"} <= files
    [model] = json.loads(run.data.tags["mlflow.log-model.history"])
    assert model["artifact_path"] == "model"
    assert model["flavors"]["reprorun_rds"]["class"] == "rpart"


def test_the_workshop_r_project_under_reprorun_run(rscript: str, home: Path) -> None:
    result = reprorun_cli("run", str(IRIS_R), "-P", "cp=0.02", "-P", "maxdepth=5")
    assert result.returncode == 0, result.stderr
    run = last_run()
    check_iris_r_run(run, artifact_files(run))
    assert run.data.tags["reprorun.command"] == "Rscript train.R -P cp=0.02 maxdepth=5"
    # The model loads back in R and predicts.
    from reprorun.tracking.artifacts import local_dir

    rds = local_dir(run.info.artifact_uri) / "model" / "model.rds"
    check = subprocess.run(
        [
            rscript,
            "-e",
            f'library(rpart); m <- readRDS("{rds}"); '
            'cat(as.character(predict(m, iris[1, ], type = "class")))',
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.stdout == "setosa", check.stderr


def test_the_r_project_by_hand_logs_a_run_of_its_own(
    rscript: str, tmp_path: Path, home: Path
) -> None:
    work = tmp_path / "iris-r"
    shutil.copytree(IRIS_R, work)
    result = subprocess.run(
        [rscript, "train.R", "-P", "cp=0.02", "maxdepth=5"],
        cwd=work,
        env=r_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "cp=0.02 maxdepth=5" in result.stdout
    run = last_run()
    check_iris_r_run(run, artifact_files(run))
    assert run.data.tags["mlflow.source.type"] == "LOCAL"


def test_the_r_project_through_a_server(rscript: str, tmp_path: Path, home: Path) -> None:
    with server_process(tmp_path / "srv") as server:
        ran = reprorun_cli(
            "run",
            str(IRIS_R),
            "-P",
            "cp=0.02",
            "-P",
            "maxdepth=5",
            env=dict(os.environ, REPRORUN_TRACKING_URI=server.url),
        )
        assert ran.returncode == 0, ran.stderr
        by_hand = subprocess.run(
            [rscript, "train.R", "-P", "cp=0.02", "maxdepth=5"],
            cwd=IRIS_R,
            env=r_env(MLFLOW_TRACKING_URI=server.url),
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        assert by_hand.returncode == 0, by_hand.stderr
        close_stores()
        store = open_store(server.url)
        runs = store.search_runs(["0"], max_results=10)
        assert len(runs) == 2
        for run in runs:
            folder = server.artifacts / run.info.artifact_uri.removeprefix("mlflow-artifacts:/")
            files = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
            check_iris_r_run(run, files)


def test_an_r_script_that_fails_by_hand_ends_its_run_failed(
    rscript: str, tmp_path: Path, home: Path
) -> None:
    client = reprorun_cli("r-client").stdout.strip()
    script = tmp_path / "fails.R"
    script.write_text(
        f'source("{client}")\nrr_start_run(run_name = "doomed")\n'
        'rr_log_metric("loss", 0.5)\nstop("diverged")\ncat("never\\n")\n'
    )
    result = subprocess.run(
        [rscript, str(script)], env=r_env(), capture_output=True, text=True, check=False
    )
    assert result.returncode == 1 and "never" not in result.stdout
    assert "diverged" in result.stderr
    run = last_run()
    assert (run.info.run_name, run.info.status.value) == ("doomed", "FAILED")
    assert run.data.metrics == {"loss": 0.5}


def test_r_param_errors_name_the_parameter(rscript: str, home: Path) -> None:
    client = reprorun_cli("r-client").stdout.strip()
    assert Path(client).is_file()

    def param(expr: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [rscript, "-e", f'source("{client}"); print({expr})', "--args", *args],
            env=r_env(),
            capture_output=True,
            text=True,
            check=False,
        )

    assert "[1] 0.02" in param('rr_param("cp", 0.05)', "-P", "cp=0.02").stdout
    assert "[1] 0.05" in param('rr_param("cp", 0.05)').stdout
    assert "[1] 5" in param('rr_param("maxdepth", 3L)', "-P", "cp=1", "maxdepth=5").stdout
    assert "[1] TRUE" in param('rr_param("fast", FALSE)', "-Pfast=true").stdout
    bad = param('rr_param("cp", 0.05)', "-P", "cp=abc")
    assert bad.returncode != 0
    assert "parameter 'cp' must be a number (like its default 0.05), got 'abc'" in bad.stderr
    bad = param('rr_param("maxdepth", 3L)', "-P", "maxdepth=2.5")
    assert "parameter 'maxdepth' must be an integer" in bad.stderr
    missing = param('rr_param("cp")')
    assert "parameter 'cp' has no value" in missing.stderr


def test_r_client_with_a_token_server_seeds_and_late_params(
    rscript: str, tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Artifacts keep the token; logging a model leaves the script's random numbers alone;
    a parameter read after the run started is logged; negative values and exact doubles."""
    client = reprorun_cli("r-client").stdout.strip()
    script = tmp_path / "script.R"
    (tmp_path / "notes.txt").write_text("hello")
    script.write_text(
        f'source("{client}")\n'
        "set.seed(7); a <- runif(1)\n"
        "set.seed(7); rr_start_run(run_name = 'r'); rr_log_model(list(x = 1), 'm'); b <- runif(1)\n"
        "stopifnot(a == b)\n"
        'lr <- rr_param("lr", 0.1)\n'
        'rr_log_metric("third", 1/3); rr_log_metric("neg", -0.25)\n'
        'rr_log_artifact("notes.txt")\n'
        "rr_end_run()\n"
    )
    with server_process(tmp_path / "srv", "--auth-token", "sekrit-token-0123456789") as server:
        env = r_env(MLFLOW_TRACKING_URI=server.url, MLFLOW_TRACKING_TOKEN="sekrit-token-0123456789")
        result = subprocess.run(
            [rscript, str(script), "-P", "lr=0.5"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        close_stores()
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "sekrit-token-0123456789")
        [run] = open_store(server.url).search_runs(["0"])
        folder = server.artifacts / run.info.artifact_uri.removeprefix("mlflow-artifacts:/")
    assert run.info.status.value == "FINISHED"
    assert run.data.params == {"lr": "0.5"}
    assert run.data.metrics == {"third": 1 / 3, "neg": -0.25}
    assert (folder / "notes.txt").read_text() == "hello"
    assert (folder / "m" / "model.rds").is_file()
