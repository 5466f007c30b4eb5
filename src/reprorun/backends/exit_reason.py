"""Why a run ended (issue 18): one ``ExitReason`` per ended run, with its evidence.

Every backend ends a run through the same small vocabulary. ``classify`` turns what a
backend knows about an ended command into an ``Exit``; ``Exit.tags()`` gives the system tags
written with the run's end (``reprorun.exitReason``, ``reprorun.exitCode``,
``reprorun.exitSignal``, ``reprorun.exitDetail``). A remote backend that already knows the
class from its engine's words (Slurm ``OUT_OF_MEMORY``, Kubernetes ``OOMKilled``) builds
``Exit(ExitReason.OUT_OF_MEMORY, code, None, "OUT_OF_MEMORY")`` itself; one that only has an
exit code calls ``classify``.

    >>> classify(0).reason.value
    'succeeded'
    >>> classify(-9, oom="the kernel's OOM killer killed process 12").tags()["reprorun.exitSignal"]
    'SIGKILL'

Out-of-memory evidence on this machine (``OomWatch``): the ``oom_kill`` counter of the memory
cgroup the command started in (cgroup v2 ``memory.events``, v1 ``memory.oom_control``),
read when it starts and when it ends, and the kernel log (``/dev/kmsg``, where readable)
naming the command's process, or its cgroup, as the OOM killer's victim.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal as signals
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from reprorun.tracking.entities import ExitReason, RunStatus, SystemTags

__all__ = [
    "Exit",
    "OomWatch",
    "classify",
    "describe",
    "exit_fields",
    "kernel_clock",
    "kernel_log_oom",
    "label",
    "launch_error",
    "reason_of",
    "settle",
    "signal_name",
    "status_of",
]

_DETAIL_LIMIT = 2000  # characters of the engine's words kept on the run


@dataclass(frozen=True)
class Exit:
    """How a run ended: its class, and the evidence kept beside it."""

    reason: ExitReason
    code: int | None = None  # the command's exit code (a signal: its negative number)
    signal: str | None = None  # the signal's name ("SIGKILL") when a signal ended it
    detail: str | None = None  # the engine's own words, or what reprorun saw

    @property
    def status(self) -> RunStatus:
        return status_of(self.reason)

    def tags(self) -> dict[str, str]:
        """The system tags recorded with the run's end."""
        tags = {SystemTags.EXIT_REASON: self.reason.value}
        if self.code is not None:
            tags[SystemTags.EXIT_CODE] = str(self.code)
        if self.signal:
            tags[SystemTags.EXIT_SIGNAL] = self.signal
        if self.detail:
            tags[SystemTags.EXIT_DETAIL] = self.detail[:_DETAIL_LIMIT]
        return tags


def signal_name(returncode: int | None) -> str | None:
    """The name of the signal a ``subprocess`` return code says ended the process
    (``-9`` -> ``SIGKILL``); None for an exit code."""
    if returncode is None or returncode >= 0:
        return None
    try:
        return signals.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def classify(
    returncode: int | None,
    *,
    cancelled: bool = False,
    timed_out: bool = False,
    oom: str | None = None,
    detail: str | None = None,
) -> Exit:
    """The class of a command that ended with ``returncode`` (a ``subprocess`` return code:
    negative for a signal; None if unknown), first match wins:

    - ``timed_out``: reprorun's ``--timeout`` stopped it -> ``timeout``;
    - ``cancelled``: runs kill, Ctrl-C, SIGTERM/SIGHUP to reprorun -> ``cancelled``;
    - ``oom``: evidence that the OOM killer or a memory limit ended it (what was seen, kept as
      the detail) -> ``out-of-memory``;
    - exit code 0 -> ``succeeded``; anything else -> ``code-error``.

    ``detail`` (the engine's words) is kept when no evidence replaces it."""
    sig = signal_name(returncode)
    if timed_out:
        reason = ExitReason.TIMEOUT
    elif cancelled:
        reason = ExitReason.CANCELLED
    elif oom:
        reason, detail = ExitReason.OUT_OF_MEMORY, oom
    elif returncode == 0:
        reason = ExitReason.SUCCEEDED
    else:
        reason = ExitReason.CODE_ERROR
    return Exit(reason, returncode, sig, detail)


def launch_error(exc: BaseException) -> Exit:
    """A run whose command never started: ``cancelled`` if a stop signal interrupted the
    launch, else ``launch-error`` with what failed."""
    from reprorun.errors import RunInterrupted

    if isinstance(exc, (KeyboardInterrupt, RunInterrupted)):
        return Exit(ExitReason.CANCELLED, detail="stopped before the command started")
    return Exit(ExitReason.LAUNCH_ERROR, detail=f"{type(exc).__name__}: {exc}")


def settle(ended: Exit, stored: RunStatus) -> Exit:
    """``ended`` made to agree with the status that stands on the run (``ends_over``: the
    code's own ``end_run("FAILED")``, runs kill, runs end): a run that stays FAILED is a
    ``code-error`` unless the end says a more precise failure, one that stays KILLED was
    ``cancelled``. The exit code and signal are kept."""
    if not stored.is_terminal or status_of(ended.reason) is stored:
        return ended
    if stored is RunStatus.KILLED:
        reason, detail = ExitReason.CANCELLED, "the run was ended KILLED before its command ended"
    elif stored is RunStatus.FAILED and ended.status is not RunStatus.FAILED:
        reason, detail = ExitReason.CODE_ERROR, "the run's code ended it FAILED"
    else:
        return ended
    return Exit(reason, ended.code, ended.signal, detail)


def status_of(reason: ExitReason) -> RunStatus:
    """The run status a class ends in: FINISHED, KILLED (cancelled) or FAILED."""
    if reason is ExitReason.SUCCEEDED:
        return RunStatus.FINISHED
    if reason is ExitReason.CANCELLED:
        return RunStatus.KILLED
    return RunStatus.FAILED


def reason_of(tags: Mapping[str, str]) -> ExitReason | None:
    """The recorded class of a run (None for runs ended before issue 18, or still running)."""
    try:
        return ExitReason(tags.get(SystemTags.EXIT_REASON, ""))
    except ValueError:
        return None


def label(status: RunStatus | str, tags: Mapping[str, str]) -> str:
    """A run's status as shown to users: ``FAILED (out-of-memory)``; the class is left out
    where it says nothing more (FINISHED that succeeded, KILLED that was cancelled)."""
    text = status.value if isinstance(status, RunStatus) else str(status)
    reason = reason_of(tags)
    if reason is None or (text, reason) in _OBVIOUS:
        return text
    return f"{text} ({reason.value})"


_OBVIOUS = {("FINISHED", ExitReason.SUCCEEDED), ("KILLED", ExitReason.CANCELLED)}


def exit_fields(tags: Mapping[str, str]) -> dict[str, str | None]:
    """A run's end for JSON output (``runs list|show|status --json``, the UI): ``exit_code``
    (as recorded, a string as ``runs status`` has always given it), ``exit_reason``,
    ``exit_signal``, ``exit_detail`` (None when not recorded)."""
    return {
        "exit_code": tags.get(SystemTags.EXIT_CODE) or None,
        "exit_reason": (reason.value if (reason := reason_of(tags)) else None),
        "exit_signal": tags.get(SystemTags.EXIT_SIGNAL) or None,
        "exit_detail": tags.get(SystemTags.EXIT_DETAIL) or None,
    }


def describe(tags: Mapping[str, str]) -> str | None:
    """A run's end in words for ``runs show``: ``out-of-memory: exit code -9 (SIGKILL); the
    kernel's OOM killer killed ...``; None when no reason is recorded."""
    fields = exit_fields(tags)
    if fields["exit_reason"] is None:
        return None
    parts = []
    if fields["exit_code"] is not None:
        parts.append(f"exit code {fields['exit_code']}")
    if fields["exit_signal"]:
        parts.append(f"({fields['exit_signal']})")
    text = f"{fields['exit_reason']}" + (f": {' '.join(parts)}" if parts else "")
    return text + (f"; {fields['exit_detail']}" if fields["exit_detail"] else "")


class OomWatch:
    """Evidence that the kernel's OOM killer ended a command: started with the command's
    first process, asked once it has ended (``evidence``) when a signal killed it.

    Costs one read of ``/proc/<pid>/cgroup`` and of its counters at start; the kernel log is
    read only for a command that died of SIGKILL."""

    def __init__(self, pid: int):
        self.pid = pid
        self.started = kernel_clock()
        self.cgroups = _memory_cgroups(pid)
        self.counts = {path: _oom_kills(path) for path in self.cgroups}

    def evidence(self, returncode: int | None) -> str | None:
        """What shows the OOM killer ended the command, or None. Only a SIGKILL (or a
        shell's 137, its child's SIGKILL) can be the OOM killer's."""
        if returncode not in (-signals.SIGKILL, 128 + signals.SIGKILL):
            return None
        for path, before in self.counts.items():
            after = _oom_kills(path)
            if before is not None and after is not None and after > before:
                return (
                    f"the kernel's OOM killer killed {after - before} process(es) of the "
                    f"run's memory cgroup ({path.name} oom_kill {before} -> {after})"
                )
        return kernel_log_oom(self.pid, self.started, [_relative(p) for p in self.cgroups])


def kernel_log_oom(pid: int, since: float, cgroups: list[str]) -> str | None:
    """The kernel log's OOM kill of process ``pid``, or of a process in one of ``cgroups``
    (paths under the hierarchy's root, "/" excluded: everything is in it), after ``since``
    (seconds on the kernel log's clock); None if there is none or the log cannot be read."""
    under = [c.rstrip("/") for c in cgroups if c.strip("/")]
    found: str | None = None
    for stamp, text in _kernel_log():
        if stamp < since - 1.0:
            continue
        victim = re.search(r"Killed process (\d+) \(([^)]*)\)", text)
        if victim and int(victim.group(1)) == pid:
            return f"the kernel's OOM killer killed process {pid} ({victim.group(2)})"
        memcg = re.search(r"oom-kill:.*task_memcg=([^,]*),task=([^,]*),pid=(\d+)", text)
        if memcg and any(memcg.group(1) == c or memcg.group(1).startswith(c + "/") for c in under):
            found = (
                f"the kernel's OOM killer killed process {memcg.group(3)} ({memcg.group(2)}) "
                f"in the run's memory cgroup {memcg.group(1)}"
            )
    return found


def kernel_clock() -> float:
    """Seconds on the clock the kernel log's time stamps use (monotonic since boot)."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def _kernel_log() -> list[tuple[float, str]]:
    """The kernel log's records as (seconds since boot, text), or none if unreadable."""
    records: list[tuple[float, str]] = []
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return records
    try:
        while True:
            try:
                raw = os.read(fd, 8192)
            except BlockingIOError:
                break  # the end of the log
            except BrokenPipeError:
                continue  # records overwritten while reading: go on with the next
            except OSError:
                break
            if not raw:
                break
            head, _, text = raw.decode("utf-8", "replace").partition(";")
            fields = head.split(",")
            with contextlib.suppress(IndexError, ValueError):
                records.append((int(fields[2]) / 1e6, text.split("\n", 1)[0]))
    finally:
        os.close(fd)
    return records


_ROOTS = (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))
_V1_MEMORY = Path("/sys/fs/cgroup/memory")


def _memory_cgroups(pid: int) -> list[Path]:
    """The folders of process ``pid``'s memory cgroups that count OOM kills (v2, v1)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return []
    found: list[Path] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            candidates = [root / path.lstrip("/") / "memory.events" for root in _ROOTS]
        elif "memory" in controllers.split(","):
            candidates = [_V1_MEMORY / path.lstrip("/") / "memory.oom_control"]
        else:
            continue
        found.extend(c for c in candidates if c.is_file())
    return found


def _relative(counter: Path) -> str:
    """A counter file's cgroup as the kernel log names it (its path under the root)."""
    folder = counter.parent
    for root in (_V1_MEMORY, *reversed(_ROOTS)):
        if folder == root or root in folder.parents:
            rel = folder.relative_to(root).as_posix()
            return "/" if rel == "." else "/" + rel
    return "/"


def _oom_kills(counter: Path) -> int | None:
    """The ``oom_kill`` count in a ``memory.events`` or ``memory.oom_control`` file."""
    try:
        for line in counter.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        return None
    return None
