"""conda environments as PyPI requirements: names, versions, what is skipped or refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.requirements import Requirement

from reprorun.envs.conda_translate import (
    CondaSpecError,
    describe,
    pypi_name,
    to_pypi,
    translate_entry,
)
from reprorun.envs.spec import read_conda_env
from reprorun.errors import SpecError

PROPERTY = settings(max_examples=300, deadline=None)


@pytest.mark.parametrize(
    ("conda", "pypi"),
    [
        ("pytorch", "torch"),
        ("pytorch-cpu", "torch"),
        ("py-xgboost", "xgboost"),
        ("tensorflow-gpu", "tensorflow"),
        ("pytables", "tables"),
        ("matplotlib-base", "matplotlib"),
        ("msgpack-python", "msgpack"),
        ("opencv", "opencv-python"),
        ("libopencv", "opencv-python"),
        ("scikit-learn", "scikit-learn"),
        ("pillow", "pillow"),
        ("pyyaml", "pyyaml"),
        ("protobuf", "protobuf"),
        ("librosa", "librosa"),  # lib* is not a rule: librosa is a Python package
        ("cudatoolkit", None),
        ("cudnn", None),
        ("cuda-nvcc", None),
        ("r-base", None),
        ("r-ggplot2", None),
        ("gcc", None),
        ("gxx_linux-64", None),
        ("compilers", None),
        ("mkl", None),
        ("libgcc-ng", None),
        ("libstdcxx-ng", None),
        ("openblas", None),
        ("blas", None),
        ("nccl", None),
        ("_libgcc_mutex", None),
    ],
)
def test_names(conda: str, pypi: str | None) -> None:
    assert pypi_name(conda) == pypi


@pytest.mark.parametrize(
    ("entry", "requirement"),
    [
        ("numpy>=1.14.3", "numpy>=1.14.3"),
        ("scikit-learn>0.19.1", "scikit-learn>0.19.1"),
        ("numpy=1.14.3", "numpy==1.14.3.*"),  # conda's "=" is a prefix match
        ("numpy==1.14.3", "numpy==1.14.3"),
        ("numpy=1.2.*", "numpy==1.2.*"),
        ("numpy 1.2.*", "numpy==1.2.*"),
        ("numpy 1.2", "numpy==1.2"),
        ("numpy=1.2=py38_0", "numpy==1.2"),  # the build string is dropped
        ("numpy 1.2 py38_0", "numpy==1.2"),
        ("numpy>=1.0,<2", "numpy>=1.0,<2"),
        ("numpy >= 1.0", "numpy>=1.0"),
        ("numpy!=1.2*", "numpy!=1.2.*"),
        ("numpy>=1.2.*", "numpy>=1.2"),
        ("numpy=*", "numpy"),
        ("conda-forge::py-xgboost=1.7", "xgboost==1.7.*"),
        ("pytorch=1.5.0", "torch==1.5.0.*"),
        ("cudatoolkit=11.8", None),
    ],
)
def test_versions(entry: str, requirement: str | None) -> None:
    assert translate_entry(entry).requirement == requirement


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ("numpy=1.2|1.3", "either version"),
        ("numpy=1.1.1_k", "no PEP 440 form"),
        ("numpy[version='>=1']", "cannot be read"),
    ],
)
def test_refused_with_the_entry_named(entry: str, fragment: str) -> None:
    with pytest.raises(CondaSpecError, match="pip:") as excinfo:
        translate_entry(entry)
    assert repr(entry) in str(excinfo.value) and fragment in str(excinfo.value)


_NAMES = st.sampled_from(["numpy", "pytorch", "py-xgboost", "r-base", "cudatoolkit", "a.b_c-d"])
_VERSIONS = st.from_regex(
    r"[0-9]{1,3}(\.[0-9]{1,3}){0,3}(\.\*|\*|[a-z_+]{1,3}[0-9]?)?", fullmatch=True
)
_OPERATORS = st.sampled_from(["", "=", "==", ">=", "<=", ">", "<", "!=", "~=", " ", " >= "])
_BUILDS = st.sampled_from(["", "=py38_0", " py38h1234_0", "=*"])


@PROPERTY
@given(
    name=_NAMES,
    constraints=st.lists(st.tuples(_OPERATORS, _VERSIONS), max_size=3),
    separator=st.sampled_from([",", "|"]),
    build=_BUILDS,
    channel=st.sampled_from(["", "conda-forge::"]),
)
def test_any_spec_translates_to_pep440_or_is_refused_by_name(
    name: str, constraints: list[tuple[str, str]], separator: str, build: str, channel: str
) -> None:
    entry = channel + name + separator.join(op + version for op, version in constraints) + build
    _check(entry)


@PROPERTY
@given(st.text(max_size=30))
def test_any_text_translates_or_is_refused_by_name(entry: str) -> None:
    _check(entry)


def _check(entry: str) -> None:
    try:
        result = translate_entry(entry)
    except CondaSpecError as exc:
        assert repr(entry) in str(exc)
        return
    if result.requirement is not None:
        Requirement(result.requirement)  # valid PEP 508 / 440, or this raises


def test_mlflow_example_conda_yaml(tmp_path: Path) -> None:
    """MLflow's mlflow-example, as it is."""
    conda = tmp_path / "conda.yaml"
    conda.write_text(
        "name: tutorial\nchannels: [defaults]\n"
        "dependencies: [numpy>=1.14.3, pandas>=1.0.0, scikit-learn>0.19.1, pip, {pip: [mlflow]}]\n"
    )
    spec = to_pypi(read_conda_env(conda))
    assert spec.python is None  # the runner's own Python version
    assert [r.text for r in spec.dependencies] == [
        "numpy>=1.14.3",
        "pandas>=1.0.0",
        "scikit-learn>0.19.1",
        "mlflow",
    ]
    assert spec.conda_packages == () and spec.warnings == ()
    assert describe(spec.translated) == (
        "numpy>=1.14.3 -> numpy>=1.14.3; pandas>=1.0.0 -> pandas>=1.0.0; "
        "scikit-learn>0.19.1 -> scikit-learn>0.19.1"
    )


def test_python_pin_renames_and_skipped_packages(tmp_path: Path) -> None:
    """The shape of MLflow's examples/pytorch/MNIST/conda.yaml, plus CUDA."""
    conda = tmp_path / "conda.yaml"
    conda.write_text(
        "channels:\n- defaults\n- pytorch\ndependencies:\n- python=3.7.4\n- pytorch=1.5.0\n"
        "- pytorch-lightning==0.8.5\n- cudatoolkit=10.2\n- pip\n- pip:\n  - mlflow\n"
        "  - cloudpickle==1.2.2\nname: mlflow-env\n"
    )
    spec = to_pypi(read_conda_env(conda))
    assert spec.python == "3.7.4"
    assert [(r.text, r.line) for r in spec.dependencies] == [
        ("torch==1.5.0.*", 6),
        ("pytorch-lightning==0.8.5", 7),
        ("mlflow", 11),
        ("cloudpickle==1.2.2", 12),
    ]
    assert spec.warnings == (
        "conda.yaml: skipped conda packages PyPI does not have: cudatoolkit=10.2 (installed "
        "from PyPI, not conda; use --env-manager conda if the project needs them)",
    )
    assert "skipped (not on PyPI): cudatoolkit=10.2" in describe(spec.translated)


def test_pip_only_conda_yaml_translates_nothing(tmp_path: Path) -> None:
    """The shape of MLflow's examples/sklearn_elasticnet_diabetes/linux/conda.yaml."""
    conda = tmp_path / "conda.yaml"
    conda.write_text(
        "name: tutorial\nchannels:\n  - conda-forge\ndependencies:\n  - python=3.6\n  - pip\n"
        "  - pip:\n    - mlflow\n    - numpy==1.14.3\n"
    )
    spec = to_pypi(read_conda_env(conda))
    assert (spec.python, spec.translated) == ("3.6", ())
    assert [r.text for r in spec.dependencies] == ["mlflow", "numpy==1.14.3"]


def test_python_versions(tmp_path: Path) -> None:
    conda = tmp_path / "conda.yaml"
    for entry, version in [("python=3.11", "3.11"), ("python>=3.8", "3.8"), ("python", None)]:
        conda.write_text(f"dependencies:\n  - {entry}\n  - six\n")
        assert read_conda_env(conda).python == version


def test_a_refused_entry_points_at_its_line(tmp_path: Path) -> None:
    conda = tmp_path / "conda.yaml"
    conda.write_text("dependencies:\n  - six\n  - numpy=1.2|1.3\n")
    with pytest.raises(SpecError) as excinfo:
        to_pypi(read_conda_env(conda))
    assert (excinfo.value.path, excinfo.value.line) == (conda, 3)
    assert "'numpy=1.2|1.3'" in excinfo.value.message


def test_the_translation_is_part_of_the_cache_key(tmp_path: Path) -> None:
    conda = tmp_path / "conda.yaml"
    conda.write_text("dependencies:\n  - numpy=1.2\n")
    first = to_pypi(read_conda_env(conda)).hash("uv")
    conda.write_text("dependencies:\n  - numpy=1.3\n")
    assert to_pypi(read_conda_env(conda)).hash("uv") != first
