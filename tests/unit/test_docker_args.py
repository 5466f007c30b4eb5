"""MLflow's --docker-args: items to `docker run` options, as MLflow builds them."""

from __future__ import annotations

from pathlib import Path

import pytest

from reprorun.envs.declared import DockerEnv
from reprorun.envs.docker import docker_argv, run_options
from reprorun.errors import UserInputError
from reprorun.projects.launch import docker_arg_items
from reprorun.projects.request import RunRequest


def test_items_become_options_as_mlflow_builds_them() -> None:
    assert run_options(["memory=2g", "gpus=all", "t", "e=A=B", "shm-size=1g"]) == [
        *("--memory", "2g", "--gpus", "all", "-t", "-e", "A=B", "--shm-size", "1g")
    ]


@pytest.mark.parametrize("bad", ["--privileged", "", "=1", "a b=1", "-v=/:/host", "x;y"])
def test_a_name_that_is_no_option_is_refused(bad: str) -> None:
    with pytest.raises(UserInputError, match="expected NAME=VALUE or NAME"):
        run_options([bad])
    with pytest.raises(UserInputError, match="expected NAME=VALUE or NAME"):
        RunRequest(".", docker_args=(bad,)).check()


def test_mlflows_mapping_and_items_are_both_taken() -> None:
    assert docker_arg_items({"memory": "2g", "t": True, "i": False}) == ("memory=2g", "t")
    assert docker_arg_items(["memory=2g"]) == ("memory=2g",)
    assert docker_arg_items("memory=2g") == ("memory=2g",)
    assert docker_arg_items(None) == ()


def test_the_options_go_before_the_image(tmp_path: Path) -> None:
    argv = docker_argv(
        DockerEnv(image="img"),
        run_id="r1",
        command="true",
        cwd=tmp_path,
        env={},
        mounts=[],
        client_dir=tmp_path,
        docker_args=("memory=64m",),
    )
    assert argv[argv.index("--memory") + 1] == "64m"
    assert argv.index("--memory") < argv.index("img")
    assert RunRequest.from_json(RunRequest(".", docker_args=["t"]).to_json()).docker_args == ("t",)
