"""The points' processes: each a ``python -m reprorun.projects.trial`` in a session of its
own, started by a driver or adopted from a dead one; whether one still runs, how to signal it,
and what its exit status says."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess

from reprorun._utils import process_alive

STOP_GRACE_SECONDS = 20.0  # the child gives its command 10 s after SIGTERM, then kills it


def child_alive(pid: int | None, host: str | None) -> bool:
    """Whether ``pid`` on ``host`` (as the state records a point's process) is a live
    reprorun process: one on another host counts as gone; when /proc cannot tell, the pid is
    trusted."""
    if not pid or host != socket.gethostname():
        return False
    return process_alive(pid, command_has=b"reprorun") is not False


class Child:
    """A point's process (``projects.trial``): started here, or adopted from a dead driver."""

    def __init__(self, index: int, pid: int, proc: subprocess.Popen[bytes] | None):
        self.index, self.pid, self.proc = index, pid, proc
        self.run_id: str | None = None
        self.terminated_at: float | None = None

    def poll(self) -> tuple[bool, int | None]:
        """(exited, exit code if known)."""
        if self.proc is not None:
            code = self.proc.poll()
            return code is not None, code
        return not child_alive(self.pid, socket.gethostname()), None

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if signum == signal.SIGKILL:
                os.killpg(self.pid, signum)  # the child leads its own session
            else:
                os.kill(self.pid, signum)


def status_of_exit(code: int) -> str:
    if code == 0:
        return "finished"
    if code < 0 or code > 128:
        return "killed"
    return "failed"
