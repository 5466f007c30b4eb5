"""The ``reprorun`` command: parse options, call one library function, render the result.

Heavy modules (the store, YAML, rich) are imported inside the commands that need them, so
``reprorun --help`` and ``reprorun run`` start fast. Library errors become messages at the
edge (``_common.handle_errors``): input the user can fix exits with status 2, other errors
with 1. The group and the shared options live in ``_common``; each command module registers
its commands on the group when imported, as this package does below.
"""

from __future__ import annotations

from reprorun.cli import (  # the command modules, for their commands
    diff,
    env,
    experiments,
    log,
    mlflow_cli,
    models,
    models_serve,
    rerun,
    run,
    runs,
    server,
    store,
    sweep,
    work,
)
from reprorun.cli._common import cli


def main() -> None:
    cli(prog_name="reprorun")


__all__ = [
    "cli",
    "diff",
    "env",
    "experiments",
    "log",
    "main",
    "mlflow_cli",
    "models",
    "models_serve",
    "rerun",
    "run",
    "runs",
    "server",
    "store",
    "sweep",
    "work",
]
