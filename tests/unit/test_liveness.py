"""The one process-liveness check (``_utils.process_alive``), as the supervised runs
(``owner_is_gone``) and the sweep's points (``child_alive``) use it, on real processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from reprorun._utils import owner_is_gone, process_alive, process_identity, process_start
from reprorun.projects.sweep.processes import child_alive

SLEEPER = "import time; time.sleep(60)  # reprorun-liveness-test"


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", SLEEPER])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def wait_for_zombie(pid: int) -> None:
    deadline = time.monotonic() + 10
    while process_start(pid) is not None and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_running_process_is_alive(sleeper: subprocess.Popen[bytes]) -> None:
    start = process_start(sleeper.pid)
    assert process_alive(sleeper.pid) is True
    assert process_alive(sleeper.pid, start=start) is True
    assert process_alive(sleeper.pid, command_has=b"reprorun-liveness-test") is True
    assert owner_is_gone(process_identity(sleeper.pid)) is False


def test_a_reused_pid_is_another_process(sleeper: subprocess.Popen[bytes]) -> None:
    # Another start time, or a command line without the mark: not the process meant.
    assert process_alive(sleeper.pid, start="1") is False
    assert process_alive(sleeper.pid, command_has=b"no-such-mark") is False
    assert owner_is_gone(f"{socket.gethostname()}:{sleeper.pid}:1") is True


def test_an_ended_process_is_gone_reaped_or_not(sleeper: subprocess.Popen[bytes]) -> None:
    identity = process_identity(sleeper.pid)
    sleeper.kill()
    wait_for_zombie(sleeper.pid)  # ended, not yet reaped
    assert process_alive(sleeper.pid) is False
    assert process_alive(sleeper.pid, command_has=b"reprorun") is False
    assert owner_is_gone(identity) is True
    sleeper.wait()  # reaped: no such pid
    assert process_alive(sleeper.pid) is False
    assert owner_is_gone(identity) is True


def test_what_cannot_be_told_from_here() -> None:
    me = os.getpid()
    assert owner_is_gone(f"another-host-{socket.gethostname()}:{me}:1") is None
    assert owner_is_gone(f"{socket.gethostname()}:{me}:?") is None
    assert owner_is_gone("not an identity") is None


def test_a_sweep_point_is_alive_only_on_this_host_as_a_reprorun_process(
    sleeper: subprocess.Popen[bytes],
) -> None:
    host = socket.gethostname()
    assert child_alive(sleeper.pid, host) is True  # "reprorun" is in its command line
    assert child_alive(sleeper.pid, "another-" + host) is False
    assert child_alive(None, host) is False
