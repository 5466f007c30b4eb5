"""Reading environment specs: python_env.yaml, conda.yaml, requirements, pyproject."""

from __future__ import annotations

from pathlib import Path

import pytest

from reprorun.envs.spec import read_conda_env, read_env_spec, read_python_env, read_requirements
from reprorun.errors import SpecError
from reprorun.projects.spec import load_project


def test_python_env_with_nested_requirement_files(tmp_path: Path) -> None:
    (tmp_path / "base.txt").write_text("numpy>=1.20  # arrays\n\n# comment\n")
    (tmp_path / "requirements.txt").write_text("-r base.txt\npandas==2.*\n")
    spec_file = tmp_path / "python_env.yaml"
    spec_file.write_text(
        'python: "3.11"\nbuild_dependencies:\n  - pip\ndependencies:\n  - scikit-learn\n  - -r requirements.txt\n'
    )
    spec = read_python_env(spec_file)
    assert spec.python == "3.11"
    assert [r.text for r in spec.build_dependencies] == ["pip"]
    assert [(r.text, r.source.name, r.line) for r in spec.dependencies] == [
        ("scikit-learn", "python_env.yaml", 5),
        ("numpy>=1.20", "base.txt", 1),
        ("pandas==2.*", "requirements.txt", 2),
    ]
    assert spec.locate("Scikit_Learn").line == 5


def test_the_hash_follows_the_normalised_spec(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text('python: "3.11"\ndependencies: [six, numpy]\n')
    b.write_text('python: "3.11"\ndependencies:\n  - numpy\n  - six\n')
    assert read_python_env(a).hash("uv") == read_python_env(b).hash("uv")  # order does not matter
    assert read_python_env(a).hash("uv") != read_python_env(a).hash("virtualenv")
    b.write_text('python: "3.10"\ndependencies: [six, numpy]\n')
    assert read_python_env(a).hash("uv") != read_python_env(b).hash("uv")


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("python: [3]\n", 1, "'python' must be a version"),
        ("dependencies: numpy\n", 1, "must be a list"),
        ("python: 3.11\nextras: [x]\n", 2, "unknown key 'extras'"),
        ("dependencies:\n  - -r missing.txt\n", 2, "no such file"),
        ("dependencies: [a\n", 2, "YAML syntax error"),
        ("dependencies: [a]\ndependencies: [b]\n", 2, "duplicate key 'dependencies'"),
    ],
)
def test_malformed_python_env_names_file_and_line(
    tmp_path: Path, text: str, line: int, fragment: str
) -> None:
    spec_file = tmp_path / "python_env.yaml"
    spec_file.write_text(text)
    with pytest.raises(SpecError) as excinfo:
        read_python_env(spec_file)
    assert excinfo.value.path == spec_file
    assert excinfo.value.line == line
    assert fragment in excinfo.value.message


def test_conda_yaml_python_pip_and_conda_only_packages(tmp_path: Path) -> None:
    conda = tmp_path / "conda.yaml"
    conda.write_text(
        "name: x\nchannels: [conda-forge]\ndependencies:\n  - python=3.10\n  - pip\n  - cudatoolkit=11.8\n"
        "  - pip:\n    - mlflow\n    - scikit-learn==1.3.0\n"
    )
    spec = read_conda_env(conda)
    assert spec.python == "3.10"
    assert [r.text for r in spec.dependencies] == ["mlflow", "scikit-learn==1.3.0"]
    assert spec.conda_packages == ("cudatoolkit=11.8",)


def test_which_spec_a_project_uses(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("")
    assert read_env_spec(load_project(tmp_path)) is None
    (tmp_path / "requirements.txt").write_text("six\n")
    assert read_env_spec(load_project(tmp_path)).kind == "requirements"
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "p"\nrequires-python = ">=3.10"\ndependencies = ["six>=1.16"]\n'
    )
    spec = read_env_spec(load_project(tmp_path))
    assert (spec.kind, spec.python, [r.text for r in spec.dependencies]) == (
        "pyproject",
        "3.10",
        ["six>=1.16"],
    )
    (tmp_path / "python_env.yaml").write_text("dependencies: [numpy]\n")
    assert read_env_spec(load_project(tmp_path)).kind == "python_env"


def test_requirements_loops_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("-r b.txt\n")
    (tmp_path / "b.txt").write_text("-r a.txt\n")
    with pytest.raises(SpecError, match="loop"):
        read_requirements(tmp_path / "a.txt")


def test_a_conda_env_shaped_as_python_env_is_read_as_one(tmp_path: Path) -> None:
    """Seen in the wild: ``conda_env: conda.yaml`` naming a python_env-shaped file."""
    conda = tmp_path / "conda.yaml"
    conda.write_text('python: "3.8"\nbuild_dependencies:\n  - pip\ndependencies:\n  - pandas\n')
    spec = read_conda_env(conda)
    assert (spec.kind, spec.python) == ("python_env", "3.8")
    assert [r.text for r in spec.dependencies] == ["pandas"]
    assert [r.text for r in spec.build_dependencies] == ["pip"]
    assert spec.conda_packages == ()
    assert "shaped as a python_env file" in spec.warnings[0]
    # A conda file with only dependencies stays a conda file.
    conda.write_text("dependencies:\n  - python=3.8\n  - pandas\n")
    assert read_conda_env(conda).kind == "conda_env"


def test_seed_packages_are_part_of_the_key(tmp_path: Path) -> None:
    spec_file = tmp_path / "python_env.yaml"
    spec_file.write_text('python: "3.11"\ndependencies: [six]\n')
    spec = read_python_env(spec_file)
    assert spec.hash("uv", ("pip", "setuptools", "wheel")) != spec.hash("uv")


def test_the_conda_tool_named_by_mlflow_conda_home_or_conda_exe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reprorun.envs.conda import conda_tool
    from reprorun.errors import UserInputError

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("CONDA_EXE", raising=False)
    monkeypatch.setenv("MLFLOW_CONDA_HOME", str(tmp_path / "nowhere"))
    with pytest.raises(UserInputError) as excinfo:
        conda_tool()
    message = str(excinfo.value)
    assert "nowhere/bin/conda: not an executable" in message
    assert "--env-manager uv (the default)" in message
    tool = tmp_path / "miniconda" / "bin" / "conda"
    tool.parent.mkdir(parents=True)
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("CONDA_EXE", str(tool))
    assert conda_tool() == str(tool)
    monkeypatch.delenv("CONDA_EXE")
    monkeypatch.setenv("MLFLOW_CONDA_HOME", str(tmp_path / "miniconda"))
    assert conda_tool() == str(tool)
