"""The local queue: at most N local runs at once (``--max-parallel N``), first come first served.

Slots and tickets are files under ``$REPRORUN_HOME/queue`` held with ``flock``: the kernel
releases a lock when its process dies, however it dies, so a killed run never keeps a slot
and a killed waiter never blocks the line.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path

POLL_SECONDS = 0.05


class Slot:
    """A held slot; ``release`` frees it (closing the file releases the lock)."""

    def __init__(self, fd: int, index: int):
        self._fd: int | None = fd
        self.index = index

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _head(waiting: Path) -> Path | None:
    """The first live ticket in line, removing dead ones from its front (only the front is
    looked at: each waiter's poll costs one directory listing and one lock attempt)."""
    while tickets := sorted(waiting.iterdir()):
        head = tickets[0]
        fd = _try_lock(head)
        if fd is None:  # its owner holds it: it waits, or it is us
            return head
        with contextlib.suppress(FileNotFoundError):
            head.unlink()  # nobody holds it: its waiter died
        os.close(fd)
    return None


def acquire(
    root: Path,
    max_parallel: int,
    run_id: str,
    *,
    on_wait: Callable[[], None] | None = None,
    interrupted: Callable[[], None] | None = None,
) -> Slot:
    """Block until one of ``max_parallel`` slots is free and this run is at the head of the
    line; ``on_wait`` is called once if it has to wait, ``interrupted`` on every poll (it
    raises to give up)."""
    slots = root / "slots"
    waiting = root / "waiting"
    slots.mkdir(parents=True, exist_ok=True)
    waiting.mkdir(parents=True, exist_ok=True)
    ticket = waiting / f"{time.time_ns():020d}-{run_id}"
    # Locked before it is in the line, so no one takes it for a dead waiter's.
    partial = root / f".ticket-{run_id}-{os.getpid()}"
    ticket_fd = os.open(partial, os.O_CREAT | os.O_RDWR, 0o644)
    fcntl.flock(ticket_fd, fcntl.LOCK_EX)
    partial.rename(ticket)
    told = False
    try:
        while True:
            # First come, first served: only the head of the line may take a free slot; it
            # leaves the line when it has one, and the next waiter is the head.
            if _head(waiting) == ticket:
                for index in range(max_parallel):
                    fd = _try_lock(slots / f"slot-{index}")
                    if fd is not None:
                        return Slot(fd, index)
            if not told and on_wait is not None:
                on_wait()
                told = True
            if interrupted is not None:
                interrupted()
            time.sleep(POLL_SECONDS)
    finally:
        with contextlib.suppress(FileNotFoundError):
            ticket.unlink()
        os.close(ticket_fd)
