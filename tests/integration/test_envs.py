"""Real environments: uv and venv+pip builds from PyPI, the cache, locks, bad specs, rerun."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from reprorun.envs import cache
from reprorun.envs.registry import get_env_manager
from reprorun.errors import UserInputError
from reprorun.projects.spec import load_project
from tests.conftest import make_project, reprorun_cli

# A tiny pure-Python package keeps the builds fast; the point is the real resolver and index.
TRAIN = """
import sys, six, reprorun
print("python", sys.version.split()[0], "six", six.__version__, "prefix", sys.prefix)
reprorun.log_metric("answer", reprorun.param("n", 1) * 2)
"""
MLPROJECT = (
    "name: envs\npython_env: python_env.yaml\nentry_points:\n  main:\n    parameters:\n"
    "      n: {type: int, default: 1}\n    command: 'python train.py'\n"
)


def project_with(tmp_path: Path, python_env: str) -> Path:
    return make_project(
        tmp_path / "p", MLPROJECT, {"train.py": TRAIN, "python_env.yaml": python_env}
    )


def only_run() -> dict:
    runs = json.loads(reprorun_cli("runs", "list", "--json").stdout)
    assert len(runs) == 1, runs
    return runs[0]


@pytest.mark.parametrize("manager", ["uv", "virtualenv"])
def test_build_run_record_and_reuse(home: Path, tmp_path: Path, manager: str) -> None:
    project = project_with(tmp_path, 'python: "3.11"\ndependencies:\n  - six==1.16.0\n')
    first = reprorun_cli("run", str(project), "--env-manager", manager, "-P", "n=21", timeout=600)
    assert first.returncode == 0, first.stderr
    assert "six 1.16.0" in first.stdout
    assert f"/envs/{manager}/" in first.stdout  # sys.prefix is the cached environment
    assert "Creating a Python 3.11" in first.stderr

    run = only_run()
    tags = run["data"]["tags"]
    assert tags["mlflow.project.env"] == manager
    assert tags["reprorun.env.python"].startswith("3.11")
    assert run["data"]["metrics"] == {"answer": 42}  # the in-env client logged into the run
    lock = Path(run["info"]["artifact_uri"][len("file://") :]) / "environment" / "requirements.lock"
    assert "six==1.16.0" in lock.read_text()

    second = reprorun_cli("run", str(project), "--env-manager", manager, timeout=600)
    assert second.returncode == 0, second.stderr
    assert "Creating" not in second.stderr  # reused, not rebuilt
    runs = json.loads(reprorun_cli("runs", "list", "--json").stdout)
    assert runs[0]["data"]["tags"]["reprorun.env.hash"] == tags["reprorun.env.hash"]


def test_uv_is_the_default_when_the_project_declares_an_environment(
    home: Path, tmp_path: Path
) -> None:
    project = project_with(tmp_path, "dependencies: [six==1.16.0]\n")
    result = reprorun_cli("run", str(project), timeout=600)
    assert result.returncode == 0, result.stderr
    assert only_run()["data"]["tags"]["mlflow.project.env"] == "uv"


def test_reuse_makes_no_resolver_or_network_call(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = load_project(project_with(tmp_path, "dependencies: [six==1.16.0]\n"))
    manager = get_env_manager("uv")
    first = manager.prepare(project)

    def no_tools(argv: list[str]) -> None:
        raise AssertionError(f"a cached environment ran {argv}")

    monkeypatch.setattr("reprorun.envs.venv._run", no_tools)
    again = manager.prepare(project)
    assert again.env_dir == first.env_dir and again.env_hash == first.env_hash


def test_a_broken_environment_is_rebuilt(home: Path, tmp_path: Path) -> None:
    project = load_project(project_with(tmp_path, "dependencies: [six==1.16.0]\n"))
    manager = get_env_manager("uv")
    env_dir = manager.prepare(project).env_dir
    assert env_dir is not None
    (env_dir / "bin" / "python").unlink()  # e.g. its base interpreter was removed
    assert not cache.is_complete(env_dir)
    rebuilt = manager.prepare(project).env_dir
    assert rebuilt == env_dir and cache.is_complete(env_dir)


@pytest.mark.parametrize(
    ("python_env", "line", "fragment"),
    [
        (
            "dependencies:\n  - six==1.16.0\n  - reprorun-no-such-package-xyz==1.0\n",
            3,
            "reprorun-no-such-package-xyz",
        ),
        ("dependencies:\n  - six==999.0.0\n", 2, "six==999.0.0"),
        ("dependencies:\n  - 'six>>=1'\n", 2, "six>>=1"),
    ],
)
def test_bad_specs_exit_2_with_file_and_line_and_leave_nothing(
    home: Path, tmp_path: Path, python_env: str, line: int, fragment: str
) -> None:
    project = project_with(tmp_path, python_env)
    result = reprorun_cli("run", str(project), timeout=600)
    assert result.returncode == 2, result.stderr
    assert f"{project / 'python_env.yaml'}:{line}:" in result.stderr
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads(reprorun_cli("runs", "list", "--json").stdout) == []
    leftovers = [
        p.name for p in (home / "envs" / "uv").iterdir() if p.is_dir()
    ]  # lock files may stay
    assert leftovers == []  # no half-built environment in the cache


def test_a_python_version_that_does_not_exist_lists_what_does(home: Path, tmp_path: Path) -> None:
    project = project_with(tmp_path, 'python: "3.99"\ndependencies: [six]\n')
    result = reprorun_cli("run", str(project), timeout=600)
    assert result.returncode == 2
    assert "No Python 3.99 on this machine. Found: " in result.stderr
    assert "3.11.7" in result.stderr


def test_another_python_version_from_this_machine(home: Path, tmp_path: Path) -> None:
    project = project_with(tmp_path, 'python: "3.12"\ndependencies: [six==1.16.0]\n')
    result = reprorun_cli("run", str(project), timeout=600)
    assert result.returncode == 0, result.stderr
    assert "python 3.12" in result.stdout


def test_conda_without_conda_is_a_clear_error(home: Path, tmp_path: Path) -> None:
    conda = "dependencies:\n  - python=3.11\n  - pip:\n    - six\n"
    project = make_project(
        tmp_path / "p",
        "conda_env: conda.yaml\nentry_points:\n  main:\n    command: 'true'\n",
        {"conda.yaml": conda},
    )
    result = reprorun_cli("run", str(project), "--env-manager", "conda")
    assert result.returncode == 2
    assert "needs conda, mamba or micromamba on PATH" in result.stderr
    assert "--env-manager uv (the default)" in result.stderr
    # uv takes the pip section of the same file.
    assert reprorun_cli("run", str(project), timeout=600).returncode == 0


def test_conda_packages_are_installed_from_pypi_by_uv(home: Path, tmp_path: Path) -> None:
    """No conda here: uv installs the conda packages by their PyPI names, skips (and names)
    what PyPI does not have, and the run and its lock say what was translated."""
    conda = (
        "name: t\nchannels: [defaults]\ndependencies:\n  - six=1.16\n  - cudatoolkit=11.8\n"
        "  - pip\n  - pip:\n    - -r extra.txt\n"
    )
    project = make_project(
        tmp_path / "p",
        "conda_env: conda.yaml\nentry_points:\n  main:\n    command: 'python train.py'\n",
        {
            "conda.yaml": conda,
            "extra.txt": "packaging==24.1\n",
            "train.py": "import six, packaging, pkg_resources, wheel\n"
            "print('six', six.__version__, 'packaging', packaging.__version__)\n",
        },
    )
    result = reprorun_cli("run", str(project), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "six 1.16.0 packaging 24.1" in result.stdout
    assert "skipped conda packages PyPI does not have: cudatoolkit=11.8" in result.stderr
    run = only_run()
    tags = run["data"]["tags"]
    assert tags["mlflow.project.env"] == "uv"
    assert tags["reprorun.env.condaTranslated"] == (
        "six=1.16 -> six==1.16.*; skipped (not on PyPI): cudatoolkit=11.8"
    )
    lock = Path(run["info"]["artifact_uri"][len("file://") :]) / "environment" / "requirements.lock"
    text = lock.read_text()
    assert "# not a conda environment: uv installed the conda packages" in text
    assert "six==1.16.0" in text and "packaging==24.1" in text


def test_uv_environments_have_pip_setuptools_and_wheel(home: Path, tmp_path: Path) -> None:
    """As virtualenv and conda environments do: older packages import pkg_resources."""
    project = make_project(
        tmp_path / "p",
        "python_env: python_env.yaml\nentry_points:\n  main:\n    command: 'python check.py'\n",
        {
            "python_env.yaml": "dependencies: [six==1.16.0]\n",
            "check.py": "import pkg_resources, wheel, subprocess, sys\n"
            "subprocess.run([sys.executable, '-m', 'pip', '--version'], check=True)\n",
        },
    )
    result = reprorun_cli("run", str(project), timeout=600)
    assert result.returncode == 0, result.stderr
    assert "pip " in result.stdout


def test_rerun_recreates_the_environment_from_the_lock(home: Path, tmp_path: Path) -> None:
    project = project_with(tmp_path, "dependencies:\n  - six\n")
    assert reprorun_cli("run", str(project), timeout=600).returncode == 0
    original = only_run()
    # The project's spec moves on; the rerun must use the recorded lock, not the new spec.
    (project / "python_env.yaml").write_text("dependencies:\n  - six==1.15.0\n")
    again = reprorun_cli("rerun", original["info"]["run_id"], timeout=600)
    assert again.returncode == 0, again.stderr
    runs = json.loads(reprorun_cli("runs", "list", "--json").stdout)
    assert runs[0]["data"]["tags"]["reprorun.rerunOf"] == original["info"]["run_id"]
    assert "six 1.15.0" not in again.stdout
    lock_before = Path(original["info"]["artifact_uri"][7:]) / "environment" / "requirements.lock"
    lock_after = Path(runs[0]["info"]["artifact_uri"][7:]) / "environment" / "requirements.lock"
    pins = lambda path: [x for x in path.read_text().splitlines() if not x.startswith("#")]  # noqa: E731
    assert pins(lock_before) == pins(lock_after)


def test_two_runs_building_the_same_environment_at_once(home: Path, tmp_path: Path) -> None:
    project = project_with(tmp_path, "dependencies: [six==1.16.0]\n")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "reprorun", "run", str(project), "-P", f"n={i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert sum("Creating a Python" in err for _, err in outputs) == 1  # built once
    assert len([p for p in (home / "envs" / "uv").iterdir() if p.is_dir()]) == 1


def test_env_list_and_prune(home: Path, tmp_path: Path) -> None:
    project = project_with(tmp_path, "dependencies: [six==1.16.0]\n")
    assert reprorun_cli("run", str(project), timeout=600).returncode == 0
    listed = json.loads(reprorun_cli("env", "list", "--json").stdout)
    assert [e["manager"] for e in listed] == ["uv"]
    assert listed[0]["python"].startswith("3.11")
    assert "0 environment(s) removed" in reprorun_cli("env", "prune", "--older-than", "30").stdout
    assert "1 environment(s) removed" in reprorun_cli("env", "prune").stdout
    assert json.loads(reprorun_cli("env", "list", "--json").stdout) == []


def test_unknown_manager_lists_the_valid_ones(home: Path, tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="conda, docker, local, uv, virtualenv"):
        get_env_manager("pipenv")


def test_a_network_failure_caches_nothing_and_the_next_run_builds(
    home: Path, tmp_path: Path
) -> None:
    import os

    project = project_with(tmp_path, "dependencies: [six==1.10.0]\n")
    offline = {**os.environ, "UV_OFFLINE": "1", "UV_CACHE_DIR": str(tmp_path / "empty-uv-cache")}
    failed = reprorun_cli("run", str(project), env=offline, timeout=600)
    assert failed.returncode == 1, failed.stderr
    assert "network or system problem; nothing was cached" in failed.stderr
    assert [p for p in (home / "envs" / "uv").iterdir() if p.is_dir()] == []
    assert json.loads(reprorun_cli("runs", "list", "--json").stdout) == []
    online = reprorun_cli("run", str(project), timeout=600)
    assert online.returncode == 0, online.stderr
    assert "six 1.10.0" in online.stdout


def test_a_uv_project_runs_from_its_lock_file(home: Path, tmp_path: Path) -> None:
    from reprorun.envs.tools import uv_binary

    project = make_project(
        tmp_path / "p",
        "entry_points:\n  main:\n    command: 'python train.py'\n",
        {
            "train.py": TRAIN,
            "pyproject.toml": '[project]\nname = "p"\nversion = "0"\nrequires-python = ">=3.11"\ndependencies = ["six==1.16.0"]\n',
        },
    )
    subprocess.run([uv_binary(), "lock", "--quiet"], cwd=project, check=True, timeout=300)
    result = reprorun_cli("run", str(project), timeout=600)
    assert result.returncode == 0, result.stderr
    assert "six 1.16.0" in result.stdout
    tags = only_run()["data"]["tags"]
    assert tags["mlflow.project.env"] == "uv"


def test_progress_is_quiet_when_not_a_terminal(home: Path, tmp_path: Path) -> None:
    import os

    project = project_with(tmp_path, "dependencies: [six==1.16.0]\n")
    env = {k: v for k, v in os.environ.items() if k != "REPRORUN_PROGRESS"}
    result = reprorun_cli("run", str(project), env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "Creating" not in result.stderr and "Installing" not in result.stderr


def test_a_damaged_marker_means_rebuild_not_a_traceback(home: Path, tmp_path: Path) -> None:
    project = project_with(tmp_path, "dependencies: [six==1.16.0]\n")
    assert reprorun_cli("run", str(project), timeout=600).returncode == 0
    [env_dir] = [p for p in (home / "envs" / "uv").iterdir() if p.is_dir()]
    (env_dir / "reprorun-env.json").write_text("")  # a crash while writing it
    assert json.loads(reprorun_cli("env", "list", "--json").stdout) == []
    again = reprorun_cli("run", str(project), timeout=600)
    assert again.returncode == 0, again.stderr
    assert "Creating a Python" in again.stderr


def test_the_failing_requirement_is_the_one_named(home: Path, tmp_path: Path) -> None:
    project = project_with(tmp_path, "dependencies:\n  - six==1.16.0\n  - six-nonexistent-zzq==1\n")
    result = reprorun_cli("run", str(project), timeout=600)
    assert result.returncode == 2
    assert f"{project / 'python_env.yaml'}:3: requirement 'six-nonexistent-zzq==1'" in result.stderr
    assert "reprorun-requirements.txt" not in result.stderr


def test_an_unquoted_python_version_is_read_as_written(home: Path, tmp_path: Path) -> None:
    project = project_with(tmp_path, "python: 3.10\ndependencies: [six==1.16.0]\n")
    result = reprorun_cli("run", str(project), timeout=600)
    assert result.returncode == 0, result.stderr
    assert "python 3.10" in result.stdout


def test_local_path_requirements_resolve_from_the_spec_and_follow_edits(
    home: Path, tmp_path: Path
) -> None:
    project = project_with(tmp_path, "dependencies: [six==1.16.0, ./mypkg]\n")
    pkg = project / "mypkg"
    (pkg / "mypkg").mkdir(parents=True)
    (pkg / "pyproject.toml").write_text(
        '[project]\nname = "mypkg"\nversion = "0.1"\n[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
    )
    (pkg / "mypkg" / "__init__.py").write_text("VALUE = 'first'\n")
    (project / "train.py").write_text("import mypkg\nprint('value', mypkg.VALUE)\n")
    first = reprorun_cli("run", str(project), cwd=tmp_path, timeout=600)  # not the project folder
    assert first.returncode == 0, first.stderr
    assert "value first" in first.stdout
    (pkg / "mypkg" / "__init__.py").write_text("VALUE = 'second'\n")
    second = reprorun_cli("run", str(project), timeout=600)
    assert "value second" in second.stdout


def test_prune_leaves_an_environment_in_use(home: Path, tmp_path: Path) -> None:
    project = project_with(tmp_path, "dependencies: [six==1.16.0]\n")
    (project / "train.py").write_text(
        "import time, six\ntime.sleep(4)\nimport six.moves\nprint('six', six.__version__)\n"
    )
    assert reprorun_cli("run", str(project), timeout=600).returncode == 0
    running = subprocess.Popen(
        [sys.executable, "-m", "reprorun", "run", str(project)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    import time

    time.sleep(2)
    pruned = reprorun_cli("env", "prune")
    assert "0 environment(s) removed" in pruned.stdout
    _out, err = running.communicate(timeout=120)
    assert running.returncode == 0, err
    assert "1 environment(s) removed" in reprorun_cli("env", "prune").stdout


def test_venv_managers_refuse_a_docker_env_project(home: Path, tmp_path: Path) -> None:
    project = make_project(
        tmp_path / "p",
        "docker_env:\n  image: some/image\nentry_points:\n  main:\n    command: 'true'\n",
    )
    result = reprorun_cli("run", str(project), "--env-manager", "uv")
    assert result.returncode == 2
    assert "declares docker_env" in result.stderr
