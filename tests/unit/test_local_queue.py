"""The local queue: at most N slots, first come first served, dead waiters skipped."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from reprorun.backends.queue import acquire


def test_slots_are_limited_and_freed(tmp_path: Path) -> None:
    first = acquire(tmp_path, 2, "a")
    second = acquire(tmp_path, 2, "b")
    assert {first.index, second.index} == {0, 1}
    got: list[str] = []
    waited: list[str] = []

    def third() -> None:
        slot = acquire(tmp_path, 2, "c", on_wait=lambda: waited.append("c"))
        got.append("c")
        slot.release()

    thread = threading.Thread(target=third)
    thread.start()
    time.sleep(0.3)
    assert got == [] and waited == ["c"]
    first.release()
    thread.join(10)
    assert got == ["c"]
    second.release()


def test_waiters_are_served_in_arrival_order(tmp_path: Path) -> None:
    held = acquire(tmp_path, 1, "holder")
    order: list[str] = []

    def waiter(name: str) -> None:
        slot = acquire(tmp_path, 1, name)
        order.append(name)
        time.sleep(0.05)
        slot.release()

    threads = []
    for name in ["w1", "w2", "w3"]:
        thread = threading.Thread(target=waiter, args=(name,))
        thread.start()
        threads.append(thread)
        time.sleep(0.15)  # each arrives after the previous one is in line
    held.release()
    for thread in threads:
        thread.join(10)
    assert order == ["w1", "w2", "w3"]


def test_a_dead_waiters_ticket_does_not_block_the_line(tmp_path: Path) -> None:
    (tmp_path / "waiting").mkdir(parents=True)
    # A ticket nobody holds: its waiter died.
    (tmp_path / "waiting" / f"{0:020d}-dead").write_text("")
    slot = acquire(tmp_path, 1, "alive")
    assert not (tmp_path / "waiting" / f"{0:020d}-dead").exists()
    slot.release()


def test_an_interrupted_waiter_leaves_the_line(tmp_path: Path) -> None:
    held = acquire(tmp_path, 1, "holder")

    class Stop(Exception):
        pass

    def interrupted() -> None:
        raise Stop

    with pytest.raises(Stop):
        acquire(tmp_path, 1, "quitter", interrupted=interrupted)
    assert os.listdir(tmp_path / "waiting") == []
    held.release()
