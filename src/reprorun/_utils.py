"""Small helpers shared across layers (no imports beyond the standard library)."""

from __future__ import annotations

import getpass


def current_user() -> str:
    """The user name recorded on runs (``mlflow.user``)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
