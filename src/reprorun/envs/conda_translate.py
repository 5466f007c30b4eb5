"""A conda environment as PyPI requirements, for the uv and virtualenv managers.

Most conda.yaml files in MLproject repositories list plain Python packages (``numpy>=1.14``,
``scikit-learn=0.19``) that PyPI has under the same name. Each conda entry becomes a PEP 440
requirement: the name through a small table of well-known renames, the version through
conda's match-spec rules (``=1.2`` means ``1.2.*``, a build string is dropped). Packages
PyPI does not have (CUDA, compilers, BLAS, R, system libraries) are skipped and named in a
warning. What was translated is recorded on the run, so nobody mistakes the environment for
a conda one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatch

from packaging.requirements import InvalidRequirement
from packaging.requirements import Requirement as Pep508

from reprorun.envs.spec import PythonEnvSpec, Requirement, find_line
from reprorun.errors import SpecError

# The run's tag naming what was translated (conda entry -> PyPI requirement, and skipped).
CONDA_TRANSLATED_TAG = "reprorun.env.condaTranslated"

# conda name -> PyPI name, where they differ.
RENAMES: dict[str, str] = {
    "pytorch": "torch",
    "pytorch-cpu": "torch",
    "pytorch-gpu": "torch",
    "py-xgboost": "xgboost",
    "py-xgboost-cpu": "xgboost",
    "py-xgboost-gpu": "xgboost",
    "tensorflow-gpu": "tensorflow",
    "tensorflow-cpu": "tensorflow",
    "pytables": "tables",
    "matplotlib-base": "matplotlib",
    "msgpack-python": "msgpack",
    "opencv": "opencv-python",
    "py-opencv": "opencv-python",
    "libopencv": "opencv-python",
    "python-graphviz": "graphviz",
}

# conda packages with no PyPI counterpart: system libraries, toolchains, CUDA, R.
NOT_ON_PYPI: tuple[str, ...] = (
    "_*",  # _libgcc_mutex, _openmp_mutex
    "blas",
    "bzip2",
    "c-compiler",
    "ca-certificates",
    "compilers",
    "cudatoolkit",
    "cudatoolkit-dev",
    "cuda",
    "cuda-*",
    "cudnn",
    "cxx-compiler",
    "fortran-compiler",
    "gcc",
    "gcc_*",
    "gfortran",
    "gfortran_*",
    "gxx",
    "gxx_*",
    "intel-openmp",
    "ld_impl_*",
    "libblas",
    "libcblas",
    "libcxx",
    "libffi",
    "libgcc",
    "libgcc-*",
    "libgcc_*",
    "libgfortran*",
    "libgomp",
    "liblapack",
    "libopenblas",
    "libstdcxx*",
    "libuuid",
    "libzlib",
    "llvm-openmp",
    "mkl",
    "mkl-devel",
    "mkl-include",
    "nccl",
    "ncurses",
    "openblas",
    "openjdk",
    "openssl",
    "r",
    "r-*",
    "readline",
    "sqlite",
    "tk",
    "xz",
    "zlib",
)

# name, then (optionally, after spaces or an operator) the version part, then a build string.
_NAME = re.compile(r"^\s*([A-Za-z0-9_][A-Za-z0-9._-]*)\s*(.*?)\s*$")
_VERSION = r"[0-9A-Za-z][0-9A-Za-z.+!_-]*"  # what a conda version is made of
_PLAIN_VERSION = re.compile(rf"^{_VERSION}(\.\*|\*)?$")
_CONSTRAINT = re.compile(rf"^(==|!=|>=|<=|~=|>|<|=)?\s*({_VERSION})(\.\*|\*)?$")


class CondaSpecError(ValueError):
    """A conda entry that has no PEP 440 equivalent; the message names the entry."""


@dataclass(frozen=True)
class Translated:
    """One conda entry and what became of it."""

    conda: str  # the entry as written
    name: str  # its conda name
    requirement: str | None  # the PEP 440 requirement, None when skipped

    @property
    def pypi_name(self) -> str | None:
        return Pep508(self.requirement).name if self.requirement else None


def to_pypi(spec: PythonEnvSpec) -> PythonEnvSpec:
    """``spec`` with its conda packages as PyPI requirements (before the ``pip:`` section),
    what became of each in ``translated``, and a warning naming the ones skipped."""
    if not spec.conda_packages:
        return spec
    assert spec.source is not None
    source = spec.source
    results: list[Translated] = []
    for entry in spec.conda_packages:
        try:
            results.append(translate_entry(entry))
        except CondaSpecError as exc:
            raise SpecError(str(exc), source, find_line(source, entry, 1)) from None
    requirements = [
        Requirement(t.requirement, source, find_line(source, t.conda, 1))
        for t in results
        if t.requirement is not None
    ]
    warnings = list(spec.warnings)
    skipped = [t.conda for t in results if t.requirement is None]
    if skipped:
        warnings.append(
            f"{source.name}: skipped conda packages PyPI does not have: {', '.join(skipped)} "
            "(installed from PyPI, not conda; use --env-manager conda if the project needs them)"
        )
    return PythonEnvSpec(
        source=source,
        kind=spec.kind,
        python=spec.python,
        python_line=spec.python_line,
        build_dependencies=spec.build_dependencies,
        dependencies=(*requirements, *spec.dependencies),
        translated=tuple((t.conda, t.requirement) for t in results),
        warnings=tuple(warnings),
    )


def describe(translated: tuple[tuple[str, str | None], ...]) -> str:
    """``numpy>=1.14 -> numpy>=1.14; pytorch=1.5 -> torch==1.5.*; skipped: cudatoolkit``."""
    kept = [f"{conda} -> {req}" for conda, req in translated if req is not None]
    skipped = [conda for conda, req in translated if req is None]
    parts = ["; ".join(kept)] if kept else []
    if skipped:
        parts.append(f"skipped (not on PyPI): {', '.join(skipped)}")
    return "; ".join(parts)


def pypi_name(conda_name: str) -> str | None:
    """The PyPI name of a conda package; None when PyPI does not have it."""
    name = conda_name.lower()
    if any(fnmatch(name, pattern) for pattern in NOT_ON_PYPI):
        return None
    return RENAMES.get(name, name)


def split_channel(entry: str) -> str:
    """``conda-forge::numpy=1.2`` -> ``numpy=1.2``."""
    return entry.split("::", 1)[1] if "::" in entry else entry


def translate_entry(entry: str) -> Translated:
    """One conda dependency as a PEP 440 requirement (``requirement`` None: not on PyPI).

    Raises CondaSpecError naming the entry when its version cannot be written in PEP 440.
    """
    text = split_channel(entry.strip())
    match = _NAME.match(text)
    if not match or "[" in text:
        raise CondaSpecError(
            f"conda dependency {entry!r}: cannot be read as 'name', 'name=version' or "
            "'name>=version'; write it as a PyPI requirement under 'pip:'"
        )
    name, rest = match.group(1), match.group(2)
    target = pypi_name(name)
    if target is None:
        return Translated(entry, name.lower(), None)
    try:
        specifier = version_specifier(rest)
    except CondaSpecError as exc:
        raise CondaSpecError(f"conda dependency {entry!r}: {exc}") from None
    requirement = f"{target}{specifier}"
    try:
        Pep508(requirement)
    except InvalidRequirement:
        raise CondaSpecError(
            f"conda dependency {entry!r}: its version has no PEP 440 form "
            f"(tried {requirement!r}); write it as a PyPI requirement under 'pip:'"
        ) from None
    return Translated(entry, name.lower(), requirement)


def version_specifier(spec: str) -> str:
    """conda's version part (``=1.2``, ``1.2.*``, ``>=1,<2``, ``=1.2=py38_0``) as PEP 440."""
    spec = re.sub(r"([=<>!~])\s+", r"\1", spec.strip())  # ">= 1.0" is ">=1.0"
    if not spec:
        return ""
    # A version after a space ("numpy 1.2") means that version, as does one followed by a
    # build string ("=1.2=py38_0", "1.2 py38_0", which is dropped); "=1.2" means 1.2.*.
    exact = not spec.startswith(("=", "<", ">", "!", "~"))
    if re.match(r"^=[^=]", spec) and spec.count("=") >= 2:
        spec, exact = spec[1:].split("=", 1)[0].strip(), True
    elif " " in spec and not re.search(r"[,|]", spec):
        spec, exact = spec.split(None, 1)[0], True
    if "|" in spec:
        raise CondaSpecError(
            f"'{spec}' (either version) has no PEP 440 form; write one version range under 'pip:'"
        )
    if spec in ("*", "=*"):
        return ""
    parts = [part.strip() for part in spec.split(",")]
    return ",".join(_one_constraint(part, exact) for part in parts if part)


def _one_constraint(part: str, exact: bool) -> str:
    match = _CONSTRAINT.match(part)
    if not match:
        raise CondaSpecError(f"version '{part}' is not a conda version constraint")
    operator, version, star = match.group(1) or "", match.group(2).rstrip("."), match.group(3)
    if operator in ("", "="):
        # conda's fuzzy match: "=1.2" and "1.2*" mean 1.2, 1.2.1, 1.2.post1...
        operator, star = "==", star or ("" if exact else "*")
    if operator in ("==", "!=") and star:
        return f"{operator}{version}.*"
    return f"{operator}{version}"  # ">=1.2.*" means ">=1.2"
