"""What a project's environment is made of, read from its files and normalised for hashing.

Sources, in MLflow's order of precedence: the MLproject's ``python_env`` / ``conda_env`` (or
``python_env.yaml`` / ``conda.yaml`` beside it), then ``uv.lock`` / ``pyproject.toml``, then
``requirements.txt``. Every requirement remembers the file and line it came from, so a
resolver error can point at it.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from reprorun._yaml import line_of as _line
from reprorun._yaml import load_yaml
from reprorun.envs.declared import ProjectFiles
from reprorun.errors import SpecError, UserInputError


@dataclass(frozen=True)
class Requirement:
    text: str  # a pip requirement line
    source: Path
    line: int

    @property
    def local_path(self) -> Path | None:
        """The folder or file of a local requirement (``./pkg``, ``-e ../lib``), absolute."""
        text = re.sub(r"^(-e|--editable)\s+", "", self.text.strip())
        if text.startswith(("./", "../", "/", "file:")) or text in (".", ".."):
            path = Path(text.removeprefix("file://").removeprefix("file:"))
            return path if path.is_absolute() else (self.source.parent / path).resolve()
        return None

    def resolved(self) -> str:
        """The line for the installer: local paths made absolute (relative to the spec file,
        not to wherever reprorun was started)."""
        local = self.local_path
        if local is None:
            return self.text
        editable = re.match(r"^(-e|--editable)\s+", self.text.strip())
        return f"{editable.group(1)} {local}" if editable else str(local)

    @property
    def name(self) -> str:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", self.text)
        return match.group(1).lower().replace("_", "-") if match else self.text


@dataclass(frozen=True)
class PythonEnvSpec:
    """A Python environment: an interpreter version and the packages to install."""

    source: Path | None  # the file the spec was read from (None: none declared)
    kind: str  # python_env | conda_env | uv_lock | pyproject | requirements | lock
    python: str | None = None  # requested version, e.g. "3.11"; None: the runner's own
    build_dependencies: tuple[Requirement, ...] = ()
    dependencies: tuple[Requirement, ...] = ()
    conda_packages: tuple[str, ...] = field(default=())  # conda.yaml entries besides pip/python
    python_line: int | None = None
    # conda entries turned into PyPI requirements: (entry, requirement or None when skipped)
    translated: tuple[tuple[str, str | None], ...] = ()
    warnings: tuple[str, ...] = ()  # things accepted but worth telling the user

    @property
    def python_version(self) -> str:
        """The version the environment is built for: the request, or the runner's major.minor."""
        return self.python or f"{sys.version_info.major}.{sys.version_info.minor}"

    def normalised(self) -> dict[str, Any]:
        """What determines the environment: the key of the cache."""
        return {
            "python": self.python_version,
            "build": sorted(r.text.strip() for r in self.build_dependencies),
            "deps": sorted(r.text.strip() for r in self.dependencies),
            # Local packages change without their requirement line changing.
            "local": sorted(
                _fingerprint(r.local_path) for r in self.dependencies if r.local_path is not None
            ),
            "conda": sorted(self.conda_packages),
            "platform": f"{sys.platform}-{platform.machine()}",
        }

    def hash(self, manager: str, seed: tuple[str, ...] = ()) -> str:
        """The cache key; ``seed``: the packages every environment of ``manager`` starts with
        (part of the key only when there are some, so older keys stay valid)."""
        extra = {"seed": list(seed)} if seed else {}
        blob = json.dumps({"manager": manager, **self.normalised(), **extra}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def locate(self, name: str) -> Requirement | None:
        """The requirement that declares package ``name`` (for error messages)."""
        wanted = name.lower().replace("_", "-")
        for req in (*self.dependencies, *self.build_dependencies):
            if req.name == wanted:
                return req
        return None


def _fingerprint(path: Path) -> str:
    """Names, sizes and modification times of a local package's files (not .git)."""
    digest = hashlib.sha256(str(path).encode())
    files = [path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else []
    for file in files:
        if ".git" in file.parts or "__pycache__" in file.parts or not file.is_file():
            continue
        stat = file.stat()
        digest.update(f"{file}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def declared_env_file(project: ProjectFiles) -> tuple[str, Path] | None:
    """(kind, file) of what declares the project's Python environment, in order of precedence,
    without reading the packages (choosing the manager must not run ``uv export``)."""
    env = project.env
    if env.kind in ("python_env", "conda_env") and env.path is not None:
        return env.kind, env.path
    if env.kind == "docker_env":
        return None
    directory = project.directory
    pyproject = directory / "pyproject.toml"
    if (directory / "uv.lock").is_file() and pyproject.is_file():
        return "uv_lock", directory
    if pyproject.is_file() and _has_project_table(pyproject):
        return "pyproject", pyproject
    if (directory / "requirements.txt").is_file():
        return "requirements", directory / "requirements.txt"
    return None


def read_env_spec(project: ProjectFiles) -> PythonEnvSpec | None:
    """The Python environment the project declares, or None when it declares none."""
    declared = declared_env_file(project)
    if declared is None:
        return None
    kind, path = declared
    if kind == "python_env":
        return read_python_env(path)
    if kind == "conda_env":
        return read_conda_env(path)
    if kind == "uv_lock":
        return read_uv_lock(path)
    if kind == "pyproject":
        return read_pyproject(path)
    return PythonEnvSpec(
        source=path, kind="requirements", dependencies=tuple(read_requirements(path))
    )


def _has_project_table(path: Path) -> bool:
    import tomllib

    try:
        return isinstance(tomllib.loads(path.read_text(encoding="utf-8")).get("project"), dict)
    except (tomllib.TOMLDecodeError, OSError):
        return True  # let read_pyproject report the error with the file's name


def _load_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read: {exc}", path) from exc
    return load_yaml(text, path)


def _string_list(doc: Any, key: str, path: Path) -> list[tuple[str, int]]:
    """A list of strings under ``key`` with their lines (a list keeps no per-item lines in
    PyYAML's output, so items are located from the key's line onward)."""
    value = doc.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise SpecError(f"'{key}' must be a list of requirement strings", path, _line(doc, key))
    start = _line(doc, key) or 1
    return [(str(v), find_line(path, str(v), start)) for v in value]


def find_line(path: Path, text: str, start: int) -> int:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return start
    for number in range(start, len(lines) + 1):
        if text in lines[number - 1]:
            return number
    return start


def read_python_env(path: Path) -> PythonEnvSpec:
    """MLflow's python_env.yaml: python, build_dependencies, dependencies (with -r files)."""
    doc = _load_yaml(path)
    if not isinstance(doc, dict):
        raise SpecError("expected a mapping with python, build_dependencies, dependencies", path, 1)
    python = doc.get("python")
    if python is not None and not isinstance(python, (str, int, float)):
        raise SpecError("'python' must be a version such as \"3.11\"", path, _line(doc, "python"))
    unknown = set(doc) - {"python", "build_dependencies", "dependencies"}
    if unknown:
        key = sorted(unknown, key=str)[0]
        raise SpecError(
            f"unknown key {key!r}; expected python, build_dependencies, dependencies",
            path,
            _line(doc, key),
        )
    build = [Requirement(t, path, n) for t, n in _string_list(doc, "build_dependencies", path)]
    deps: list[Requirement] = []
    for text, number in _string_list(doc, "dependencies", path):
        deps.extend(_expand(Requirement(text, path, number), path.parent))
    return PythonEnvSpec(
        source=path,
        kind="python_env",
        python=_raw_version(path, doc, python),
        python_line=_line(doc, "python"),
        build_dependencies=tuple(build),
        dependencies=tuple(deps),
    )


def _raw_version(path: Path, doc: Any, value: Any) -> str | None:
    """The version as written: YAML reads an unquoted ``3.10`` as the float 3.1."""
    line = _line(doc, "python")
    if isinstance(value, float) and line:
        raw = path.read_text(encoding="utf-8").splitlines()[line - 1].split(":", 1)[1]
        return raw.split("#", 1)[0].strip().strip("\"'") or None
    return _version_text(value)


def _version_text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _expand(req: Requirement, base: Path) -> list[Requirement]:
    """``-r other.txt`` lines become the requirements of that file."""
    text = req.text.strip()
    match = re.match(r"^(-r|--requirement)\s*=?\s*(.+)$", text)
    if not match:
        return [req]
    target = (base / match.group(2).strip()).resolve()
    if not target.is_file():
        raise SpecError(f"{text!r}: no such file {target}", req.source, req.line)
    return read_requirements(target)


def read_requirements(path: Path, _seen: frozenset[Path] = frozenset()) -> list[Requirement]:
    """A requirements.txt: comments and blank lines dropped, ``-r`` followed, options kept."""
    if path in _seen:
        raise SpecError("requirements files include each other in a loop", path)
    result: list[Requirement] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = raw.split(" #", 1)[0].strip()
        if not text or text.startswith("#"):
            continue
        match = re.match(r"^(-r|--requirement)\s*=?\s*(.+)$", text)
        if match:
            target = (path.parent / match.group(2).strip()).resolve()
            if not target.is_file():
                raise SpecError(f"{text!r}: no such file {target}", path, number)
            result.extend(read_requirements(target, _seen | {path}))
        else:
            result.append(Requirement(text, path, number))
    return result


PYTHON_ENV_KEYS = frozenset({"python", "build_dependencies", "dependencies"})


def is_python_env_shaped(doc: Any) -> bool:
    """A python_env.yaml's mapping (``python:`` or ``build_dependencies:``, nothing of
    conda's), whatever the file is called."""
    return (
        isinstance(doc, dict)
        and set(doc) <= PYTHON_ENV_KEYS
        and bool({"python", "build_dependencies"} & set(doc))
    )


def read_conda_env(path: Path) -> PythonEnvSpec:
    """conda.yaml: the python version and the pip section; other conda packages are kept
    apart (only the conda manager installs them as they are; uv and virtualenv translate
    them, see ``conda_translate``). A file shaped as a python_env.yaml is read as one."""
    doc = _load_yaml(path)
    if is_python_env_shaped(doc):
        spec = read_python_env(path)
        warning = (
            f"conda_env {path.name} is shaped as a python_env file (python, "
            "build_dependencies, dependencies): read as one; declare it as python_env"
        )
        return replace(spec, warnings=(*spec.warnings, warning))
    if not isinstance(doc, dict):
        raise SpecError("expected a mapping with dependencies", path, 1)
    deps = doc.get("dependencies") or []
    if not isinstance(deps, list):
        raise SpecError("'dependencies' must be a list", path, _line(doc, "dependencies"))
    start = _line(doc, "dependencies") or 1
    python: str | None = None
    conda: list[str] = []
    pip: list[Requirement] = []
    for item in deps:
        if isinstance(item, dict) and "pip" in item:
            entries = item["pip"] or []
            if not isinstance(entries, list):
                raise SpecError("the pip section must be a list", path, _line(item, "pip"))
            for entry in entries:
                req = Requirement(str(entry), path, find_line(path, str(entry), start))
                pip.extend(_expand(req, path.parent))
        elif isinstance(item, str):
            base = re.split(r"[=<>!~ ]", item.strip(), maxsplit=1)[0].lower()
            if base == "python":
                found = re.search(r"(\d+(?:\.\d+){0,2})", item)
                python = found.group(1) if found else None
            elif base != "pip":
                conda.append(item.strip())
        else:
            raise SpecError(f"unexpected dependency {item!r}", path, start)
    return PythonEnvSpec(
        source=path,
        kind="conda_env",
        python=python,
        dependencies=tuple(pip),
        conda_packages=tuple(conda),
    )


def read_uv_lock(directory: Path) -> PythonEnvSpec:
    """A uv project: the exact pins of uv.lock, exported by uv (no resolution, no network)."""
    import subprocess

    from reprorun.envs.tools import uv_binary

    done = subprocess.run(
        [
            uv_binary(),
            "export",
            "--frozen",
            "--no-hashes",
            "--no-emit-project",
            "--format",
            "requirements-txt",
            "--quiet",
        ],
        cwd=directory,
        capture_output=True,
        text=True,
    )
    lock = directory / "uv.lock"
    if done.returncode != 0:
        raise SpecError(f"uv could not read the lock file: {done.stderr.strip()}", lock)
    reqs = [
        Requirement(line.strip(), lock, 0)
        for line in done.stdout.splitlines()
        if line.strip() and not line.lstrip().startswith(("#", "-e"))
    ]
    python = _requires_python(directory / "pyproject.toml")
    return PythonEnvSpec(source=lock, kind="uv_lock", python=python, dependencies=tuple(reqs))


def read_pyproject(path: Path) -> PythonEnvSpec | None:
    """``[project].dependencies`` of a pyproject.toml (None when it declares no project)."""
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise SpecError(f"cannot read: {exc}", path) from exc
    project = data.get("project")
    if not isinstance(project, dict):
        return None
    deps = project.get("dependencies") or []
    if not isinstance(deps, list):
        raise SpecError("[project].dependencies must be a list", path)
    start = 1
    reqs = [Requirement(str(d), path, find_line(path, str(d), start)) for d in deps]
    return PythonEnvSpec(
        source=path, kind="pyproject", python=_requires_python(path), dependencies=tuple(reqs)
    )


def _requires_python(path: Path) -> str | None:
    """The lowest version ``requires-python`` allows (``>=3.10`` -> ``3.10``)."""
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, OSError):
        return None
    spec = str(data.get("project", {}).get("requires-python", ""))
    found = re.search(r"(?:>=|==|~=)\s*(\d+\.\d+)", spec)
    return found.group(1) if found else None


def read_lock(path: Path, python: str | None) -> PythonEnvSpec:
    """An environment re-created from a run's lock alone (exact pins)."""
    if not path.is_file():
        raise UserInputError(f"Lock file {path}: no such file.")
    return PythonEnvSpec(
        source=path, kind="lock", python=python, dependencies=tuple(read_requirements(path))
    )
