"""conda environments, when conda, mamba or micromamba is installed (on PATH, or named by
``MLFLOW_CONDA_HOME`` / ``CONDA_EXE`` as MLflow reads them).

Not exercised by the test suite here: no conda channel is reachable from this machine. The
error when no conda tool is installed is tested.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from reprorun.envs.base import EnvManager, PreparedEnv, Progress
from reprorun.envs.cache import get_or_build, python_of, read_marker
from reprorun.envs.client import inject
from reprorun.envs.declared import ProjectFiles
from reprorun.envs.spec import read_conda_env
from reprorun.errors import ExecutionError, UserInputError

TOOLS = ("micromamba", "mamba", "conda")


def conda_tool() -> str:
    """The conda tool: ``$MLFLOW_CONDA_HOME/bin/conda``, ``$CONDA_EXE``, else the first of
    micromamba, mamba, conda on PATH."""
    named = []
    if os.environ.get("MLFLOW_CONDA_HOME"):
        named.append(Path(os.environ["MLFLOW_CONDA_HOME"]) / "bin" / "conda")
    if os.environ.get("CONDA_EXE"):
        named.append(Path(os.environ["CONDA_EXE"]))
    for path in named:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    for name in TOOLS:
        found = shutil.which(name)
        if found:
            return found
    where = f" ({', '.join(str(p) for p in named)}: not an executable)" if named else ""
    raise UserInputError(
        "--env-manager conda needs conda, mamba or micromamba on PATH (or MLFLOW_CONDA_HOME / "
        f"CONDA_EXE pointing at one), and none is installed{where}. Install one, or use "
        "--env-manager uv (the default): it installs the conda packages from PyPI by their "
        "PyPI names, and the pip: section as it is."
    )


class CondaEnvManager(EnvManager):
    name = "conda"

    def _prepare(self, project: ProjectFiles, progress: Progress, lock: Path | None) -> PreparedEnv:
        tool = conda_tool()
        if project.env.kind != "conda_env" or project.env.path is None:
            raise UserInputError(
                "--env-manager conda needs a conda_env (conda.yaml) in the project."
            )
        spec = read_conda_env(project.env.path)
        if spec.kind != "conda_env":
            raise UserInputError(
                f"{project.env.path.name} is shaped as a python_env file (python, "
                "build_dependencies, dependencies), not a conda environment: use --env-manager "
                "uv or virtualenv."
            )
        conda_file = project.env.path

        def build(dest: Path) -> dict[str, Any]:
            progress(f"Creating a conda environment from {conda_file}")
            argv = [tool, "env", "create", "-p", str(dest), "-f", str(conda_file)]
            if Path(tool).name == "micromamba":
                argv = [tool, "create", "-y", "-p", str(dest), "-f", str(conda_file)]
            done = subprocess.run(argv, capture_output=True, text=True)
            if done.returncode != 0:
                raise ExecutionError(f"{Path(tool).name} failed: {done.stderr.strip()[-2000:]}")
            listing = subprocess.run(
                [tool, "list", "-p", str(dest), "--explicit"], capture_output=True, text=True
            ).stdout
            (dest / "requirements.lock").write_text(f"# reprorun lock: conda\n{listing}")
            version = subprocess.run(
                [str(python_of(dest)), "-c", "import platform; print(platform.python_version())"],
                capture_output=True,
                text=True,
            ).stdout.strip()
            return {"python": version, "source": str(conda_file)}

        env_dir, release = get_or_build(self.name, spec.hash(self.name), build, relocatable=False)
        meta = read_marker(env_dir) or {}
        return PreparedEnv(
            name=self.name,
            path_prefix=(str(env_dir / "bin"),),
            env_vars={"CONDA_PREFIX": str(env_dir)},
            python=str(python_of(env_dir)),
            python_version=str(meta.get("python")),
            env_hash=spec.hash(self.name),
            lock_text=(env_dir / "requirements.lock").read_text(),
            env_dir=env_dir,
            client_dir=inject(env_dir),
            release=release,
        )
