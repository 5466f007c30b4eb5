"""Python environments built with uv (the default) or with the standard venv + pip.

Both read the same spec (``envs/spec.py``), share the cache (``envs/cache.py``) and record
the exact package set they installed as ``requirements.lock``, with a header naming the
Python version, so a run can be re-created from its lock alone.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

from reprorun.envs.base import EnvManager, PreparedEnv, Progress
from reprorun.envs.cache import get_or_build, python_of, read_marker
from reprorun.envs.client import inject
from reprorun.envs.conda_translate import CONDA_TRANSLATED_TAG, describe, to_pypi
from reprorun.envs.declared import ProjectFiles
from reprorun.envs.spec import PythonEnvSpec, Requirement, read_env_spec, read_lock
from reprorun.envs.tools import find_python, uv_binary
from reprorun.errors import EnvBuildError, ExecutionError, SpecError, UserInputError

LOCK_FILE = "requirements.lock"
_LOCK_HEADER = re.compile(r"^# reprorun lock: python ([0-9.]+)", re.MULTILINE)
# Resolver messages that mean "the spec asks for something that does not exist".
_BAD_SPEC_HINTS = (
    "not found in the package registry",
    "no solution found",
    "no matching distribution",
    "could not find a version",
    "failed to parse",
    "invalid requirement",
    "expected package name",
    "no versions of",
    "unsatisfiable",
    "couldn't parse requirement",
    "invalid requirement",
    "no such comparison operator",
)


# ...unless the index could not be reached: then the spec may be fine.
_NETWORK_HINTS = (
    "network was disabled",
    "failed to fetch",
    "error sending request",
    "dns error",
    "connection refused",
    "connection reset",
    "timed out",
    "could not connect",
    "temporary failure in name resolution",
    "network is unreachable",
)


def lock_python(lock: Path) -> str | None:
    """The Python version recorded in a lock's header."""
    match = _LOCK_HEADER.search(lock.read_text(encoding="utf-8"))
    return match.group(1) if match else None


class _VenvManager(EnvManager):
    relocatable = False
    seed: tuple[str, ...] = ()  # installed first in every environment (part of the cache key)

    def _prepare(self, project: ProjectFiles, progress: Progress, lock: Path | None) -> PreparedEnv:
        if project.env.kind == "docker_env":
            raise UserInputError(
                f"The project declares docker_env: its command runs in the image "
                f"{project.env.docker.image if project.env.docker else ''}, not in a {self.name} "
                "environment. Use --env-manager docker (the default for it) or local."
            )
        if lock is not None:
            spec = read_lock(lock, lock_python(lock))
        else:
            spec = read_env_spec(project) or PythonEnvSpec(source=None, kind="none")
        spec = to_pypi(spec)  # conda packages by their PyPI names
        key = spec.hash(self.name, self.seed)
        env_dir, release = get_or_build(
            self.name, key, lambda d: self._build(d, spec, progress), relocatable=self.relocatable
        )
        client = inject(env_dir)
        meta = read_marker(env_dir) or {}
        return PreparedEnv(
            name=self.name,
            path_prefix=(str(env_dir / "bin"),),
            # Bytecode is cached in the environment on first import (not compiled up front,
            # which would cost ~20 s for a scientific stack): so the command may write it.
            env_vars={"VIRTUAL_ENV": str(env_dir), "PYTHONDONTWRITEBYTECODE": ""},
            python=str(python_of(env_dir)),
            python_version=str(meta.get("python")),
            env_hash=key,
            lock_text=(env_dir / LOCK_FILE).read_text(encoding="utf-8"),
            env_dir=env_dir,
            client_dir=client,
            release=release,
            tags={CONDA_TRANSLATED_TAG: describe(spec.translated)[:5000]}
            if spec.translated
            else {},
            warnings=spec.warnings,
        )

    def _build(self, dest: Path, spec: PythonEnvSpec, progress: Progress) -> dict[str, Any]:
        try:
            interp = find_python(spec.python_version)
        except UserInputError as exc:
            if spec.source is None or spec.python is None:
                raise
            raise SpecError(str(exc), spec.source, spec.python_line) from None
        progress(f"Creating a Python {interp.version} environment ({self.name})")
        self._create(dest, interp.path)
        python = str(python_of(dest))
        if self.seed:
            self._install(dest, python, tuple(Requirement(s, dest, 0) for s in self.seed), spec)
        if spec.build_dependencies:
            progress(f"Installing {len(spec.build_dependencies)} build dependencies")
            self._install(dest, python, spec.build_dependencies, spec)
        if spec.dependencies:
            progress(f"Installing {len(spec.dependencies)} requirements from {spec.source}")
            self._install(dest, python, spec.dependencies, spec)
        frozen = self._freeze(python)
        header = f"# reprorun lock: python {interp.version}, {self.name}, from {spec.source}\n"
        if spec.translated:
            header += (
                f"# not a conda environment: {self.name} installed the conda packages of "
                f"{spec.source} from PyPI\n# translated: {describe(spec.translated)}\n"
            )
        (dest / LOCK_FILE).write_text(header + frozen, encoding="utf-8")
        return {
            "python": interp.version,
            "source": str(spec.source or ""),
            "spec": spec.normalised(),
        }

    def _create(self, dest: Path, interpreter: str) -> None:
        raise NotImplementedError

    def _install_argv(self, python: str, requirements_file: Path, refresh: bool) -> list[str]:
        raise NotImplementedError

    def _freeze(self, python: str) -> str:
        raise NotImplementedError

    def _install(
        self, dest: Path, python: str, reqs: tuple[Requirement, ...], spec: PythonEnvSpec
    ) -> None:
        listing = dest / "reprorun-requirements.txt"
        listing.write_text("".join(r.resolved() + "\n" for r in reqs), encoding="utf-8")
        local = any(r.local_path is not None for r in reqs)
        done = _run(self._install_argv(python, listing, local))
        if done.returncode != 0:
            raise _install_error(self.name, done.stderr or done.stdout, spec)


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    try:
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=3600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ExecutionError(f"{argv[0]} failed: {exc}") from exc


def _install_error(manager: str, output: str, spec: PythonEnvSpec) -> ReprorunErrorType:
    message = output.strip()
    if spec.source is not None:  # name the user's file, not reprorun's temporary listing
        message = re.sub(r"\S*reprorun-requirements\.txt", str(spec.source), message)
    tail = "\n".join(message.splitlines()[-15:])
    culprit: Requirement | None = None
    for req in (*spec.dependencies, *spec.build_dependencies):
        if re.search(rf"(?<![\w.-]){re.escape(req.name)}(?![\w.-])", message, re.IGNORECASE):
            culprit = req
            break
    lowered = message.lower()
    network = any(hint in lowered for hint in _NETWORK_HINTS)
    if not network and any(hint in lowered for hint in _BAD_SPEC_HINTS):
        where = culprit or (spec.dependencies[0] if spec.dependencies else None)
        text = f"{manager} cannot install the environment: {tail}"
        if where is not None:
            return SpecError(
                f"requirement {where.text!r}: {text}", where.source, where.line or None
            )
        return EnvBuildError(text)
    return ExecutionError(
        f"{manager} failed while installing the environment (network or system problem; "
        f"nothing was cached, the next run retries):\n{tail}"
    )


ReprorunErrorType = ExecutionError | SpecError | EnvBuildError


class UvEnvManager(_VenvManager):
    """uv: fast resolution and installs; environments are relocatable, built aside."""

    name = "uv"
    relocatable = True
    # As virtualenv and conda environments have them: code may call pip, and older packages
    # import pkg_resources, which setuptools 81 removed (python -m venv's bundled setuptools
    # has it). A project's own setuptools requirement is installed after, and wins.
    seed = ("pip", "setuptools<81", "wheel")

    def _create(self, dest: Path, interpreter: str) -> None:
        done = _run(
            [uv_binary(), "venv", "--quiet", "--relocatable", "--python", interpreter, str(dest)]
        )
        if done.returncode != 0:
            raise ExecutionError(f"uv venv failed: {done.stderr.strip()}")

    def _install_argv(self, python: str, requirements_file: Path, refresh: bool) -> list[str]:
        # --refresh: uv's cache keys a local package on its pyproject's mtime; a changed source
        # file (which changed our env hash) must be rebuilt, not taken from the cache.
        return [
            uv_binary(),
            "pip",
            "install",
            "--quiet",
            *(["--refresh"] if refresh else []),
            "--python",
            python,
            "-r",
            str(requirements_file),
        ]

    def _freeze(self, python: str) -> str:
        done = _run([uv_binary(), "pip", "freeze", "--quiet", "--python", python])
        if done.returncode != 0:
            raise ExecutionError(f"uv pip freeze failed: {done.stderr.strip()}")
        return done.stdout


class VirtualenvEnvManager(_VenvManager):
    """The standard library's venv and pip: no extra tool, slower (MLflow's approach)."""

    name = "virtualenv"

    def _create(self, dest: Path, interpreter: str) -> None:
        done = _run([interpreter, "-m", "venv", str(dest)])
        if done.returncode != 0:
            raise ExecutionError(f"python -m venv failed: {done.stderr.strip()}")

    def _install_argv(self, python: str, requirements_file: Path, refresh: bool) -> list[str]:
        return [python, "-m", "pip", "install", "--quiet", "-r", str(requirements_file)]

    def _freeze(self, python: str) -> str:
        done = _run([python, "-m", "pip", "freeze"])
        if done.returncode != 0:
            raise ExecutionError(f"pip freeze failed: {done.stderr.strip()}")
        return done.stdout
