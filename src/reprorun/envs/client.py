"""reprorun's own client inside every environment, at the runner's version.

The in-run API (``import reprorun``; ``param``, ``log_metric``, ...) needs only the standard
library, so instead of installing reprorun and its dependencies into each environment, a
copy of the package's Python files (~200 kB) is kept once per version and a ``.pth`` file in
the environment's site-packages points at it. That costs one small file write per run.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from reprorun._version import __version__
from reprorun.envs.cache import envs_root

PTH_NAME = "_reprorun_client.pth"
# Run at the interpreter's start (a .pth line that begins with "import"): inside a reprorun run,
# mlflow.run() goes to reprorun (see reprorun.clients.mlflow_projects).
PTH_HOOK = (
    'import os; os.environ.get("REPRORUN_RUN_ID") and '
    '__import__("reprorun.clients.mlflow_projects").clients.mlflow_projects.install()'
)


def package_dir() -> Path:
    """The ``reprorun`` package's folder (found without importing the package's root)."""
    return Path(__file__).parent.parent


def client_root() -> Path:
    """A folder holding a copy of the ``reprorun`` package, made once per code version."""
    package = package_dir()
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        stat = path.stat()
        digest.update(f"{path.relative_to(package)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    root = envs_root() / "client" / f"{__version__}-{digest.hexdigest()[:12]}"
    if not (root / "reprorun" / "__init__.py").is_file():
        from reprorun.sources.cache import publish

        def copy(tmp: Path) -> None:
            shutil.copytree(
                package,
                tmp / "reprorun",
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            )

        publish(root, copy)
    return root


def site_packages(env_dir: Path) -> Path:
    found = sorted(env_dir.glob("lib/python3*/site-packages"))
    if not found:
        raise FileNotFoundError(f"no site-packages in {env_dir}")
    return found[0]


def inject(env_dir: Path) -> Path:
    """Make ``import reprorun`` work in the environment; returns the client folder."""
    root = client_root()
    pth = site_packages(env_dir) / PTH_NAME
    line = f"{root}\n{PTH_HOOK}\n"
    if not pth.is_file() or pth.read_text() != line:
        pth.write_text(line)
    return root
