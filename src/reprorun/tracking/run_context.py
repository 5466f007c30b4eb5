"""The run context: the variables ``reprorun run`` gives a run's command, read in one place.

They are not settings (``reprorun.config.SETTINGS`` holds those, read by the user): reprorun
sets them for the child, and the in-run clients read them to log into that very run.
``REPRORUN_TRACKING_URI`` is both: the user's setting, and the store reprorun hands the child;
it is read through ``config.setting``. The stdlib-only client files in ``reprorun/clients``
(copied into a run's environment, where reprorun may not be importable) read the same names
themselves.
"""

from __future__ import annotations

import os

from reprorun.config import setting

RUN_ID = "REPRORUN_RUN_ID"
EXPERIMENT_ID = "REPRORUN_EXPERIMENT_ID"
TRACKING_URI = "REPRORUN_TRACKING_URI"
COMMAND = "REPRORUN_COMMAND"  # the `reprorun` that runs the parent (mlflow.run() steps)


def run_id() -> str | None:
    """The run this process is part of (None: not inside ``reprorun run``)."""
    return os.environ.get(RUN_ID) or None


def experiment_id() -> str | None:
    """The experiment of the run this process is part of."""
    return os.environ.get(EXPERIMENT_ID) or None


def tracking_uri() -> str | None:
    """The store the run logs into (or the user's ``REPRORUN_TRACKING_URI`` outside a run)."""
    return setting("tracking_uri") or None
