"""The tools environments are built with: uv, and the Python interpreters on this machine."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from reprorun.errors import ExecutionError, UserInputError


def uv_binary() -> str:
    """The uv executable: the one the `uv` package installed, else uv on PATH."""
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found:
            return found
    raise ExecutionError("uv is not installed: pip install uv (reprorun depends on it).")


@dataclass(frozen=True)
class Interpreter:
    path: str
    version: str  # "3.11.7"


def _candidates() -> list[Path]:
    """Interpreters on PATH, pyenv's, and the system's (shims excluded: they redirect)."""
    seen: list[Path] = [Path(sys.executable)]
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if "shims" in folder or not folder:
            continue
        base = Path(folder)
        if base.is_dir():
            seen.extend(sorted(base.glob("python3*")))
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    seen.extend(sorted((pyenv_root / "versions").glob("*/bin/python3")))
    seen.extend(sorted(Path("/usr/bin").glob("python3*")))
    unique: list[Path] = []
    for path in seen:
        if re.fullmatch(r"python3(\.\d+)?", path.name) and path.is_file() and path not in unique:
            unique.append(path)
    return unique


def _cache_file() -> Path:
    from reprorun.config import home

    return home() / "envs" / "interpreters.json"


def interpreters() -> list[Interpreter]:
    """Every distinct Python 3 interpreter found, with its version (cached by path + mtime)."""
    cache_path = _cache_file()
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    found: dict[str, Interpreter] = {}
    changed = False
    for path in _candidates():
        real = str(path.resolve())
        key = f"{real}:{path.stat().st_mtime_ns}"
        version = cache.get(key)
        if version is None:
            try:
                done = subprocess.run(
                    [real, "-c", "import platform; print(platform.python_version())"],
                    capture_output=True,
                    text=True,
                    timeout=20,
                )
            except (OSError, subprocess.TimeoutExpired):
                continue
            if done.returncode != 0:
                continue
            version = done.stdout.strip()
            cache[key] = version
            changed = True
        found.setdefault(real, Interpreter(real, version))
    if changed:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_text(json.dumps(cache, indent=1))
    return list(found.values())


def find_python(requested: str) -> Interpreter:
    """An interpreter matching ``requested`` ("3", "3.11" or "3.11.7"); the runner's own first.

    Falls back to uv's managed Pythons (never downloading); fails naming what exists."""
    wanted = requested.strip().lstrip("=").strip()
    if not re.fullmatch(r"\d+(\.\d+){0,2}", wanted):
        raise UserInputError(f"Python version {requested!r}: expected e.g. 3.11 or 3.11.7.")

    def matches(version: str) -> bool:
        return version == wanted or version.startswith(wanted + ".")

    available = interpreters()
    for interp in available:
        if matches(interp.version):
            return interp
    done = subprocess.run(
        [uv_binary(), "python", "find", wanted],
        capture_output=True,
        text=True,
        env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
    )
    if done.returncode == 0 and done.stdout.strip():
        path = done.stdout.strip()
        version = subprocess.run(
            [path, "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        if matches(version):
            return Interpreter(path, version)
    versions = sorted({i.version for i in available}, key=lambda v: [int(p) for p in v.split(".")])
    raise UserInputError(
        f"No Python {wanted} on this machine. Found: {', '.join(versions) or 'none'}. "
        "Install it (e.g. pyenv install, uv python install) or change the python version "
        "the project declares."
    )
