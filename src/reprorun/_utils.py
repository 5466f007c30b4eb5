"""Small helpers shared across layers (no imports beyond the standard library)."""

from __future__ import annotations

import contextlib
import getpass
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def current_user() -> str:
    """The user name recorded on runs (``mlflow.user``)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@contextlib.contextmanager
def handling_signals(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """``handler`` for Ctrl-C, SIGTERM and SIGHUP while the block runs, the previous handlers
    after. Only the main thread can have handlers: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
