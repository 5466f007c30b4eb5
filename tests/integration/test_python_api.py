"""`reprorun.projects.run` (the workshop's mlflow_run) and the in-run API used by hand."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import reprorun.projects
from reprorun.errors import ParameterError, UnknownNameError, UserInputError
from reprorun.tracking.entities import RunStatus
from reprorun.tracking.store import open_store
from tests.conftest import make_project


def test_synchronous_run_returns_a_finished_submitted_run(home: Path, tmp_path: Path) -> None:
    project = make_project(
        tmp_path / "p",
        "entry_points:\n  main:\n    parameters:\n      n: {type: int, default: 2}\n    command: 'echo n={n}'\n",
    )
    chunks: list[bytes] = []
    submitted = reprorun.projects.run(
        str(project), parameters={"n": 5}, experiment_name="api", echo=chunks.append
    )
    assert submitted.get_status() is RunStatus.FINISHED
    assert submitted.wait() is True
    assert b"n=5" in b"".join(chunks)
    run = open_store().get_run(submitted.run_id)
    assert run.data.params == {"n": "5"}
    assert open_store().get_experiment(run.info.experiment_id).name == "api"


def test_asynchronous_run_can_be_cancelled(home: Path, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", "entry_points:\n  main:\n    command: 'sleep 300'\n")
    submitted = reprorun.projects.run(
        str(project), synchronous=False, echo=False, backend_config={"stop_grace_seconds": 2}
    )
    assert submitted.get_status() is RunStatus.RUNNING
    started = time.monotonic()
    submitted.cancel()
    assert time.monotonic() - started < 10
    assert submitted.get_status() is RunStatus.KILLED
    assert submitted.wait() is False
    assert open_store().get_run(submitted.run_id).info.status is RunStatus.KILLED


def test_cancel_after_finish_keeps_finished(home: Path, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", "entry_points:\n  main:\n    command: 'true'\n")
    submitted = reprorun.projects.run(str(project), synchronous=False, echo=False)
    assert submitted.wait() is True
    submitted.cancel()
    assert submitted.get_status() is RunStatus.FINISHED


def test_bad_input_raises_before_any_run_exists(home: Path, tmp_path: Path) -> None:
    project = make_project(
        tmp_path / "p",
        "entry_points:\n  main:\n    parameters:\n      n: int\n    command: 'true'\n",
    )
    with pytest.raises(ParameterError) as excinfo:
        reprorun.projects.run(str(project), parameters={"n": "x"})
    assert excinfo.value.problems[0].name == "n"
    with pytest.raises(
        UnknownNameError, match="Valid choices: databricks, kubernetes, local, ray, slurm"
    ):
        reprorun.projects.run(str(project), parameters={"n": 1}, backend="nowhere")
    with pytest.raises(UnknownNameError, match="env manager"):
        reprorun.projects.run(str(project), parameters={"n": 1}, env_manager="nope")
    with pytest.raises(UserInputError, match="not both"):
        reprorun.projects.run(
            str(project), parameters={"n": 1}, experiment_id="0", experiment_name="x"
        )
    with pytest.raises(UserInputError, match="stop_grace_seconds"):
        reprorun.projects.run(str(project), parameters={"n": 1}, backend_config={"nope": 1})
    assert open_store().search_runs(["0"]) == []


def test_backend_config_file(home: Path, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", "entry_points:\n  main:\n    command: 'true'\n")
    config = tmp_path / "local.json"
    config.write_text(json.dumps({"stop_grace_seconds": 1}))
    assert reprorun.projects.run(str(project), backend_config=str(config), echo=False).wait()
    config.write_text("[1, 2]")
    with pytest.raises(UserInputError, match="mapping"):
        reprorun.projects.run(str(project), backend_config=str(config), echo=False)


SCRIPT_BY_HAND = """
import sys
import reprorun
with reprorun.start_run(run_name="by-hand") as run:
    cp = reprorun.param("cp", 0.05)
    depth = reprorun.param("maxdepth", 3)
    reprorun.log_metrics({"a": 1.0, "b": 2.0}, step=3)
    reprorun.log_model({"weights": [cp, depth]}, "model")
    open("notes.txt", "w").write("hello")
    reprorun.log_artifact("notes.txt", "docs")
    reprorun.log_artifacts(".", "all")
    print(run.run_id)
    if "--fail" in sys.argv:
        raise SystemExit("boom")
"""


def test_user_code_run_by_hand_creates_and_ends_its_own_run(home: Path, tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT_BY_HAND)
    done = subprocess.run(
        [sys.executable, str(script), "-P", "cp=0.02", "--maxdepth", "5"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    run_id = done.stdout.strip()
    run = open_store().get_run(run_id)
    assert run.info.status is RunStatus.FINISHED
    assert run.info.run_name == "by-hand"
    assert run.data.params == {"cp": "0.02", "maxdepth": "5"}
    assert run.data.metrics == {"a": 1.0, "b": 2.0}
    assert run.data.tags["mlflow.source.type"] == "LOCAL"
    import reprorun

    assert reprorun.load_model(f"runs:/{run_id}/model") == {"weights": [0.02, 5]}
    artifacts = Path(run.info.artifact_uri[len("file://") :])
    assert (artifacts / "docs" / "notes.txt").read_text() == "hello"
    assert (artifacts / "all" / "train.py").read_text() == SCRIPT_BY_HAND
    assert "python_version" in (artifacts / "model" / "MLmodel").read_text()

    failed = subprocess.run(
        [sys.executable, str(script), "--fail"], capture_output=True, text=True, cwd=tmp_path
    )
    assert failed.returncode == 1
    assert open_store().get_run(failed.stdout.strip()).info.status is RunStatus.FAILED


def test_param_with_a_value_that_does_not_cast_is_a_clear_error(home: Path, tmp_path: Path) -> None:
    script = tmp_path / "t.py"
    script.write_text("import reprorun\nreprorun.param('depth', 3)\n")
    result = subprocess.run(
        [sys.executable, str(script), "--depth", "deep"], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "Parameter 'depth': expected an integer, got 'deep'" in result.stderr


def test_synchronous_failure_raises_like_mlflow(home: Path, tmp_path: Path) -> None:
    from reprorun.errors import RunFailed

    project = make_project(tmp_path / "p", "entry_points:\n  main:\n    command: 'exit 4'\n")
    with pytest.raises(RunFailed) as excinfo:
        reprorun.projects.run(str(project), echo=False)
    assert open_store().get_run(excinfo.value.run_id).info.status is RunStatus.FAILED


def test_nul_characters_in_parameters_are_refused(home: Path, tmp_path: Path) -> None:
    project = make_project(
        tmp_path / "p",
        "entry_points:\n  main:\n    parameters:\n      s: string\n    command: 'true'\n",
    )
    with pytest.raises(ParameterError, match="without NUL"):
        reprorun.projects.run(str(project), parameters={"s": "a\x00b", "t": "c\x00"}, echo=False)
    assert open_store().search_runs(["0"]) == []


def test_keyboard_interrupt_by_hand_records_killed(home: Path, tmp_path: Path) -> None:
    script = tmp_path / "t.py"
    script.write_text(
        "import reprorun\nprint(reprorun.start_run().run_id, flush=True)\nraise KeyboardInterrupt\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode != 0
    assert open_store().get_run(result.stdout.strip()).info.status is RunStatus.KILLED


def test_subpackages_are_reachable_after_a_bare_import(tmp_path: Path) -> None:
    # As `import mlflow; mlflow.projects.run(...)`: no `import reprorun.projects` needed, and
    # nothing heavy is imported until the attribute is used (issue 16, part 5).
    script = (
        "import sys, reprorun\n"
        "assert 'reprorun.projects' not in sys.modules and 'reprorun.tracking' not in sys.modules\n"
        "assert callable(reprorun.projects.run) and reprorun.tracking.Run\n"
        "assert callable(reprorun.search_runs) and callable(reprorun.get_run)\n"
        "assert {'projects', 'tracking', 'search_runs', 'get_run'} <= set(dir(reprorun))\n"
        "try:\n"
        "    reprorun.nope\n"
        "except AttributeError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "has no attribute 'nope'" in done.stdout


def test_float_parameter_reaches_the_command_as_given(home: Path, tmp_path: Path) -> None:
    # MLflow passes "5", not repr(5.0): code doing int(sys.argv[1]) must work (issue 16, 1b).
    project = make_project(
        tmp_path / "p",
        "entry_points:\n  main:\n    parameters:\n      cv_folds: {type: float, default: 3}\n"
        "      lr: {type: float, default: 0.10}\n"
        '    command: \'python -c "import sys; print(int(sys.argv[1]) * 2, sys.argv[2])" '
        "{cv_folds} {lr}'\n",
    )
    chunks: list[bytes] = []
    submitted = reprorun.projects.run(
        str(project), parameters={"cv_folds": "5"}, echo=chunks.append
    )
    assert b"10 0.1" in b"".join(chunks)
    assert open_store().get_run(submitted.run_id).data.params == {"cv_folds": "5", "lr": "0.1"}
