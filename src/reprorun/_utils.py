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


def _stat(pid: int) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None when it
    cannot be read (no such process, or /proc hides it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count after its last ')'.
    return stat[stat.rindex(b")") + 2 :].split()


def process_start(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks since boot (Linux), or None if there is
    no such process. A pid and its start time name one process: pids are reused."""
    fields = _stat(pid)
    if fields is None or fields[0] in (b"Z", b"X"):
        return None  # none, or ended and not yet reaped by its parent
    return fields[19].decode()  # field 22 of the whole line: starttime


def process_identity(pid: int) -> str:
    """``host:pid:start``: what a run records of the process that owns it."""
    import socket

    return f"{socket.gethostname()}:{pid}:{process_start(pid) or '?'}"


def process_alive(
    pid: int, *, start: str | None = None, command_has: bytes | None = None
) -> bool | None:
    """Whether process ``pid`` on this host still runs: None when that cannot be told (its
    /proc entry is hidden: hidepid, another pid namespace). Pids are reused: ``start`` (from
    ``process_start``) or ``command_has`` (bytes its command line holds) tell the process
    meant from a later one with the same pid. An ended process not yet reaped is gone."""
    fields = _stat(pid)
    if fields is None:
        # Unreadable: gone, unless /proc hides it.
        return None if _signalable(pid) else False
    if fields[0] in (b"Z", b"X"):
        return False  # ended, not yet reaped by its parent
    if start is not None and fields[19].decode() != start:
        return False
    if command_has is not None:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                command = fh.read()
        except OSError:
            return None
        return command_has in command
    return True


def owner_is_gone(identity: str) -> bool | None:
    """Whether the process recorded by ``process_identity`` has ended: None when that
    cannot be told from here (another host, or an identity without a start time)."""
    import socket

    host, _, rest = identity.partition(":")
    pid, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit() or not start or start == "?":
        return None
    alive = process_alive(int(pid), start=start)
    return None if alive is None else not alive


def _signalable(pid: int) -> bool:
    """Whether a process ``pid`` exists, as the kernel answers a signal 0."""
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking the kernel to send the child ``sig`` when the thread that
    started it dies (even by SIGKILL), so no command outlives reprorun unowned. None off
    Linux. Resolved here, in the parent: the child may only make the call, not import."""
    import os
    import sys

    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    prctl, set_handler = libc.prctl, libc.signal
    pr_set_pdeathsig, sig_dfl = 1, 0
    parent = os.getpid()

    def request() -> None:
        set_handler(sig, sig_dfl)  # an ignored signal stays ignored across exec: not this one
        prctl(pr_set_pdeathsig, sig)
        if os.getppid() != parent:  # the parent died before the request: no signal will come
            os.kill(os.getpid(), signal.SIGKILL)

    return request
