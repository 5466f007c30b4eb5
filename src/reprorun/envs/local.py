"""The ``local`` environment: the caller's own Python, as in MLflow.

The command's ``python`` is the one the caller's shell would run: the activated virtual
environment (``VIRTUAL_ENV``), else the first ``python`` on PATH, else the conda environment
(``CONDA_PREFIX``), else the first ``python3`` on PATH. Only when there is none is it the
interpreter reprorun runs on (a reprorun installed with pipx or ``uv tool`` has its own, which
holds none of the project's packages). The folder of the interpreter it resolves to (through
a pyenv shim, say) comes first on the command's PATH. What the run records, its Python version
and installed distributions, is that interpreter's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprorun.envs.base import EnvManager, PreparedEnv, Progress
from reprorun.envs.declared import ProjectFiles

# Prints what the run records about the interpreter; the same listing as
# fingerprint.installed_distributions (names of *.dist-info / *.egg-info on sys.path).
_PROBE = """
import importlib.util, json, os, platform, sys
names = []
for entry in sys.path:
    try:
        with os.scandir(entry or ".") as found:
            names += [e.name for e in found if e.name.endswith((".dist-info", ".egg-info"))]
    except OSError:
        pass
print(json.dumps({
    "executable": sys.executable,
    "version": platform.python_version(),
    "distributions": sorted(names),
    "has_reprorun": importlib.util.find_spec("reprorun") is not None,
    "folders": [os.path.abspath(p) for p in sys.path if p],  # not "" (the folder it runs in)
}))
"""
PROBE_TIMEOUT = 60


@dataclass(frozen=True)
class CallerPython:
    """The interpreter a local run's ``python`` is, and the folders that make it so."""

    command: str  # as found (may be a shim, such as pyenv's)
    path_prefix: tuple[str, ...]  # put in front of PATH; empty when PATH already gives it


def _bin_dir(prefix: str) -> Path:
    return Path(prefix) / ("Scripts" if os.name == "nt" else "bin")


def _python_in(bin_dir: Path) -> Path | None:
    for name in ("python", "python3"):
        candidate = bin_dir / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def caller_python(environ: dict[str, str] | None = None) -> CallerPython:
    """The ``python`` of the caller's environment (see the module's docstring)."""
    environ = dict(os.environ) if environ is None else environ
    path = environ.get("PATH", os.defpath)
    venv = environ.get("VIRTUAL_ENV")
    if venv and (found := _python_in(_bin_dir(venv))) is not None:
        return CallerPython(str(found), (str(found.parent),))
    if on_path := shutil.which("python", path=path):
        return CallerPython(on_path, ())
    conda = environ.get("CONDA_PREFIX")
    if conda and (found := _python_in(_bin_dir(conda))) is not None:
        return CallerPython(str(found), (str(found.parent),))
    if on_path := shutil.which("python3", path=path):
        return CallerPython(on_path, ())
    return CallerPython(sys.executable, (str(Path(sys.executable).parent),))


class LocalEnvManager(EnvManager):
    name = "local"

    def _prepare(self, project: ProjectFiles, progress: Progress, lock: Path | None) -> PreparedEnv:
        caller = caller_python()
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([*caller.path_prefix, env.get("PATH", "")])
        info = _probe(caller.command, env)
        if info is None:
            # The command may not use Python at all (Rscript, a shell script): run it anyway.
            return PreparedEnv(
                name=self.name,
                path_prefix=caller.path_prefix,
                python=caller.command,
                warnings=(
                    f"--env-manager local: could not ask {caller.command} for its version and "
                    "packages; the run's fingerprint does not cover its environment",
                ),
            )
        listing = "\n".join(str(d) for d in info.get("distributions") or [])
        env_vars: dict[str, str] = {}
        if not info.get("has_reprorun"):
            # `import reprorun` in the command: the runner's own client, as in every
            # environment reprorun builds (it needs only the standard library).
            from reprorun.envs.client import client_root

            env_vars["PYTHONPATH"] = os.pathsep.join(
                p for p in (os.environ.get("PYTHONPATH"), str(client_root())) if p
            )
        executable = str(info.get("executable") or caller.command)
        return PreparedEnv(
            name=self.name,
            # The interpreter found (not a shim, which could pick another in the command's
            # folder) comes first, as on a cluster node whose PATH is not the caller's.
            path_prefix=(str(Path(executable).parent),),
            env_vars=env_vars,
            python=executable,
            python_version=str(info.get("version") or platform.python_version()),
            env_hash=hashlib.sha256(listing.encode()).hexdigest(),
        )


def _probe(command: str, env: dict[str, str]) -> dict[str, Any] | None:
    """What ``_PROBE`` prints for ``command``, or None if it cannot be asked.

    Asking costs an interpreter start (and a pyenv shim's ~50 ms): the answer is kept under
    ``<home>/cache/local-python`` for the same command, PATH, activated environment and
    folder, and reused while nothing it depends on changed: the modification times of the
    interpreter, of every folder on its ``sys.path`` (installing or removing a package
    changes its folder's) and of the files that decide which Python a pyenv shim runs."""
    from reprorun.config import home

    cwd = str(Path.cwd())
    parts = [command, cwd, *(env.get(k, "") for k in _CHOICE_VARS)]
    key = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]
    cached = home() / "cache" / "local-python" / f"{key}.json"
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        kept = json.loads(cached.read_text(encoding="utf-8"))
        if kept["stamps"] == _stamps(kept["info"], cwd, env):
            return dict(kept["info"])
    try:
        probed = subprocess.run(
            [command, "-c", _PROBE],
            capture_output=True,
            text=True,
            env=env,
            timeout=PROBE_TIMEOUT,
            check=False,
        )
        info = json.loads(probed.stdout) if probed.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    with contextlib.suppress(OSError):  # a cache that cannot be written costs a probe
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f".{cached.name}.{os.getpid()}")
        partial.write_text(json.dumps({"info": info, "stamps": _stamps(info, cwd, env)}))
        partial.replace(cached)
    return info


# The variables that choose which interpreter ``python`` is (with PATH and the folder).
_CHOICE_VARS = ("PATH", "VIRTUAL_ENV", "CONDA_PREFIX", "PYENV_VERSION", "PYTHONPATH", "PYTHONHOME")


def _stamps(info: dict[str, Any], cwd: str, env: dict[str, str]) -> list[list[Any]]:
    """[path, modification time in ns or None] for what the probe's answer depends on."""
    paths = [str(info["executable"]), *info["folders"]]
    folder = Path(cwd)
    for parent in (folder, *folder.parents):  # pyenv's local version files
        paths.append(str(parent / ".python-version"))
    pyenv_root = env.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    paths.append(str(Path(pyenv_root) / "version"))
    stamps: list[list[Any]] = []
    for path in paths:
        try:
            stamps.append([path, Path(path).stat().st_mtime_ns])
        except OSError:
            stamps.append([path, None])
    return stamps
