"""The typed run pipeline's values: a RunRequest is frozen, a LaunchSpec survives JSON."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import reprorun.projects
from reprorun.backends.base import LaunchSpec
from reprorun.errors import UserInputError
from reprorun.projects.planning import plan
from reprorun.projects.request import RunRequest
from reprorun.tracking.store import open_store


def test_a_request_keeps_what_it_was_given(tmp_path: Path) -> None:
    params = {"alpha": 0.5}
    tags = {"team": "a"}
    request = RunRequest(str(tmp_path), parameters=params, tags=tags)
    params["alpha"] = 9
    tags["team"] = "b"
    assert request.parameters == {"alpha": 0.5} and request.tags == {"team": "a"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.uri = "elsewhere"  # type: ignore[misc]
    with pytest.raises(TypeError):
        request.parameters["alpha"] = 1  # type: ignore[index]


def test_a_request_naming_two_experiments_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="either an experiment id or an experiment name"):
        RunRequest(str(tmp_path), experiment_id="1", experiment_name="x").check()


def test_the_python_apis_plan_is_the_pipelines_plan_of_a_request(tmp_path: Path) -> None:
    (tmp_path / "MLproject").write_text(
        "name: p\nentry_points:\n  main:\n    parameters:\n      n: {type: int, default: 1}\n"
        "    command: echo {n}\n"
    )
    by_request = plan(RunRequest(str(tmp_path), "main", {"n": 3}), cwd=tmp_path)
    by_arguments = reprorun.projects.plan(str(tmp_path), "main", {"n": 3}, cwd=tmp_path)
    assert by_request.command == by_arguments.command == "echo 3"
    assert by_request.to_dict() == by_arguments.to_dict()


def test_a_launch_spec_survives_json(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    finished: list[str] = []
    spec = LaunchSpec(
        run_id="r1",
        command="echo 'a b'",
        cwd=tmp_path / "work" / "sub",
        env={"A": "1", "PATH": "/bin"},
        store=store,
        artifact_dir=tmp_path / "artifacts",
        argv=["docker", "run", "x"],
        stop_argv=["docker", "stop", "x"],
        on_finish=lambda: finished.append("done"),
        experiment_id="3",
        artifact_uri="file:///a",
        tracking_uri="sqlite:///r.db",
        job_env={"B": "2"},
        source_root=tmp_path / "work",
        path_prefix=("/env/bin",),
        lock_text="x==1\n",
        python_version="3.11",
        docker_image="img:1",
        project_name="p",
        max_parallel=2,
        tied_to_caller=True,
    )
    again = LaunchSpec.from_json(spec.to_json(), store=store, on_finish=spec.on_finish)
    # What crosses the process boundary is the same; the live objects are the new process's.
    assert again == dataclasses.replace(spec, tied_to_caller=False)
    assert again.subdirectory == "sub"
    assert again.on_finish is not None
    again.on_finish()
    assert finished == ["done"]
    bare = LaunchSpec("r2", "true", tmp_path, {}, store, tmp_path)
    assert LaunchSpec.from_json(bare.to_json(), store=store) == bare


def test_the_public_names_stay_functions_once_the_pipeline_is_loaded() -> None:
    # A submodule named like a public name would replace it on the package once imported.
    import reprorun.projects.launch
    import reprorun.projects.planning

    assert callable(reprorun.projects.plan) and callable(reprorun.projects.run)
    assert reprorun.projects.plan is reprorun.projects.planning.plan_uri
    assert reprorun.projects.run.__module__ == "reprorun.projects.launch"


def test_a_request_survives_json(tmp_path: Path) -> None:
    request = RunRequest(
        "git+https://example.org/r.git",
        "train",
        {"alpha": "0.5", "n": 3},
        version="v1",
        experiment_id="2",
        env_manager="uv",
        backend="slurm",
        backend_config={"partition": "gpu"},
        reuse=True,
        tags={"reprorun.sweep.point": "1"},
        run_name="sw-1",
        tracking_uri="sqlite:///x.db",
        patch=tmp_path / "changes.diff",
        env_lock=tmp_path / "requirements.lock",
        archive_sha256="ab" * 32,
    )
    assert RunRequest.from_json(request.to_json()) == request
    by_file = RunRequest(".", backend_config=tmp_path / "cluster.yaml")
    assert RunRequest.from_json(by_file.to_json()).backend_config == str(tmp_path / "cluster.yaml")
