"""The model's own environment, built from what it recorded beside its MLmodel file
(``python_env.yaml``, else ``conda.yaml``, else ``requirements.txt``) through the environment
cache: the same requirements give the same cache key, so a second start reuses it at once."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from reprorun.envs.base import PreparedEnv, Progress
from reprorun.envs.declared import EnvSpec
from reprorun.errors import UserInputError


@dataclass(frozen=True)
class ModelFiles:
    """A model folder as the environment managers read a project (``ProjectFiles``)."""

    directory: Path
    env: EnvSpec = field(default_factory=EnvSpec)


def model_files(folder: Path) -> ModelFiles:
    """What the model declares: python_env.yaml (its Python pinned to one this machine has),
    conda.yaml, or requirements.txt (found by the managers in the folder)."""
    python_env = folder / "python_env.yaml"
    if python_env.is_file():
        return ModelFiles(folder, EnvSpec("python_env", _available_python(python_env)))
    conda = folder / "conda.yaml"
    if conda.is_file():
        return ModelFiles(folder, EnvSpec("conda_env", conda))
    return ModelFiles(folder)


def _available_python(spec: Path) -> Path:
    """``spec``, or a copy asking for its major.minor when this machine lacks the exact
    patch release MLflow recorded (e.g. 3.11.9 logged, 3.11.7 here), as pyenv is not used."""
    from reprorun.config import home
    from reprorun.envs.tools import find_python

    text = spec.read_text(encoding="utf-8")
    match = re.search(r"^python:\s*['\"]?(\d+)\.(\d+)\.(\d+)['\"]?\s*$", text, re.MULTILINE)
    if match is None:
        return spec
    try:
        find_python(".".join(match.groups()))
        return spec
    except UserInputError:
        pass
    relaxed = text.replace(match.group(0), f'python: "{match.group(1)}.{match.group(2)}"')
    # -r lines name files beside the original spec
    relaxed = re.sub(
        r"^(\s*-\s*)(-r|--requirement)\s*=?\s*(\S+)\s*$",
        lambda m: f"{m.group(1)}-r {(spec.parent / m.group(3)).resolve()}",
        relaxed,
        flags=re.MULTILINE,
    )
    digest = hashlib.sha256(f"{spec.resolve()}\n{relaxed}".encode()).hexdigest()[:16]
    copy = home() / "serving" / "specs" / digest / "python_env.yaml"
    copy.parent.mkdir(parents=True, exist_ok=True)
    if not copy.is_file() or copy.read_text(encoding="utf-8") != relaxed:
        copy.write_text(relaxed, encoding="utf-8")
    return copy


def default_manager(folder: Path) -> str:
    """uv when the model records its requirements, else local (this interpreter)."""
    from reprorun.envs.base import default_env_manager

    return default_env_manager(model_files(folder))


def prepare(folder: Path, manager: str, progress: Progress | None = None) -> PreparedEnv:
    """Build or reuse the model's environment with ``manager`` (uv, virtualenv, ...)."""
    from reprorun.envs.registry import get_env_manager

    if manager == "docker":
        raise UserInputError("Serving a model in docker is not supported; use uv or virtualenv.")
    return get_env_manager(manager).prepare(model_files(folder), progress=progress)
