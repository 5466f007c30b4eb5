"""The local queue: at most N slots, first come first served, dead waiters skipped."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from reprorun.backends.queue import acquire


def in_line(root: Path, count: int) -> None:
    """Wait until ``count`` waiters hold tickets (bounded)."""
    deadline = time.monotonic() + 10
    while len(os.listdir(root / "waiting")) != count:
        assert time.monotonic() < deadline, "waiters did not get in line"
        time.sleep(0.01)


def test_slots_are_limited_and_freed(tmp_path: Path) -> None:
    first = acquire(tmp_path, 2, "a")
    second = acquire(tmp_path, 2, "b")
    assert {first.index, second.index} == {0, 1}
    got: list[str] = []
    waited = threading.Event()

    def third() -> None:
        slot = acquire(tmp_path, 2, "c", on_wait=waited.set)
        got.append("c")
        slot.release()

    thread = threading.Thread(target=third)
    thread.start()
    assert waited.wait(10)
    assert got == []  # both slots are held: it waits
    first.release()
    thread.join(10)
    assert got == ["c"]
    second.release()


@pytest.mark.parametrize("max_parallel", [1, 2])
def test_waiters_are_served_in_arrival_order(tmp_path: Path, max_parallel: int) -> None:
    held = [acquire(tmp_path, max_parallel, f"holder{i}") for i in range(max_parallel)]
    order: list[str] = []
    slots = []
    lock = threading.Lock()

    def waiter(name: str) -> None:
        slot = acquire(tmp_path, max_parallel, name)
        with lock:
            order.append(name)
            slots.append(slot)

    threads = []
    for i, name in enumerate(["w1", "w2", "w3", "w4"]):
        thread = threading.Thread(target=waiter, args=(name,))
        thread.start()
        threads.append(thread)
        in_line(tmp_path, i + 1)  # each is in line before the next arrives
    for slot in held:
        slot.release()  # all slots free at once: still, the line decides who goes first
    deadline = time.monotonic() + 10
    while len(order) < max_parallel:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    while order != ["w1", "w2", "w3", "w4"]:
        assert time.monotonic() < deadline, order
        with lock:
            if slots:
                slots.pop(0).release()
        time.sleep(0.01)
    for thread in threads:
        thread.join(10)
    for slot in slots:
        slot.release()


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
