"""How a run's child reaches this reprorun: the ``reprorun`` and ``mlflow`` commands it finds.

Next to the in-run client copy (``envs.client``): the client answers ``import reprorun`` in the
environment, these answer ``reprorun log ...`` in a shell command and the MLflow R package's
``$MLFLOW_BIN``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path


def command_shim() -> Path:
    """A ``reprorun`` command for the run's child: this interpreter running this reprorun,
    with the library path this process has. (R prepends its own library path, which can
    load the system's libpython into another Python and hide its packages.)"""
    return _shim("reprorun", ())


def mlflow_shim() -> Path:
    """An ``mlflow`` command (``reprorun mlflow-cli``) for the MLflow R package, which shells
    out to ``$MLFLOW_BIN`` for artifacts and ``mlflow_run()``. Kept in a folder of its own that
    is never put on PATH: it is only ever named by ``MLFLOW_BIN``."""
    return _shim("mlflow", ("mlflow-cli",))


def _shim(name: str, args: tuple[str, ...]) -> Path:
    import hashlib
    import shlex

    from reprorun.config import home

    library_path = os.environ.get("LD_LIBRARY_PATH")
    restore = (
        f"LD_LIBRARY_PATH={shlex.quote(library_path)}; export LD_LIBRARY_PATH"
        if library_path
        else "unset LD_LIBRARY_PATH"
    )
    command = " ".join(shlex.quote(a) for a in (sys.executable, "-m", "reprorun", *args))
    text = (
        "#!/bin/sh\n"
        f"# Written by reprorun: in the commands it runs, `{name}` is the reprorun running them.\n"
        f"{restore}\n"
        f'exec {command} "$@"\n'
    )
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    shim = home() / "bin" / digest / name  # each script in a folder of its own
    if not shim.exists():
        shim.parent.mkdir(parents=True, exist_ok=True)
        partial = shim.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(text)
        partial.chmod(0o755)
        partial.replace(shim)  # atomic: concurrent runs never see half a script
    return shim


def mlflow_bin_env(env: Mapping[str, str]) -> dict[str, str]:
    """``MLFLOW_BIN`` (and ``MLFLOW_PYTHON_BIN``) for the MLflow R package, naming reprorun's
    ``mlflow`` command; nothing when ``env`` already has them or a real ``mlflow`` on its PATH
    (a user's MLflow is never shadowed)."""
    import shutil

    if env.get("MLFLOW_BIN") or shutil.which("mlflow", path=env.get("PATH", "")):
        return {}
    found = {"MLFLOW_BIN": str(mlflow_shim())}
    if not env.get("MLFLOW_PYTHON_BIN"):
        found["MLFLOW_PYTHON_BIN"] = sys.executable
    return found
