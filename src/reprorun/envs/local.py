"""The ``local`` environment: the interpreter reprorun itself runs on."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

from reprorun.envs.base import EnvManager, PreparedEnv, Progress
from reprorun.projects.spec import Project


class LocalEnvManager(EnvManager):
    name = "local"

    def _prepare(self, project: Project, progress: Progress, lock: Path | None) -> PreparedEnv:
        # Put this interpreter's folder first on PATH so the command's `python` is the one
        # reprorun (and the project's `import reprorun`) runs on, whatever shims say.
        bin_dir = str(Path(sys.executable).parent)
        return PreparedEnv(
            name=self.name,
            path_prefix=(bin_dir,),
            python=sys.executable,
            python_version=platform.python_version(),
        )
