"""A local run owned by another process: a detached supervisor, or `reprorun run` in another
terminal. Its status is the store's, unless that process is gone while the run is not ended.
Then whatever is left of its command is stopped first: the command ran in a process group of
its own (its pid, recorded with the process's start time in ``PROCESS_TAG``), and every
process still in that group is killed, unless the pid now names another process. The run is
then closed with the end its owner kept in the journal when the store refused it
(``backends.journal``: the true status and exit code), else FAILED (the supervisor died
without a word: SIGKILL, OOM killer, a reboot) with its log kept. This check runs whenever
anything reads the run through ``reprorun.backends.refresh`` (`runs list|show|status|kill`,
the server).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path

from reprorun._utils import owner_is_gone
from reprorun.backends.base import FAILURE_TAG, JOB_ID_TAG, SubmittedRun
from reprorun.backends.exit_reason import Exit
from reprorun.errors import UserInputError
from reprorun.tracking.entities import ExitReason, Run, RunStatus, SystemTags, now_ms
from reprorun.tracking.store.base import TrackingStore

# The command's process ("host:pid:start"), so a stale run's leftover command can be stopped.
PROCESS_TAG = "reprorun.local.process"
# "true" when the run's owner (SUPERVISOR) stops the run on SIGTERM; otherwise runs kill
# stops the command's process group itself and leaves the owner alone.
STOPS_ON_SIGTERM_TAG = "reprorun.supervisor.stopsOnSigterm"
POLL_SECONDS = 0.1
_KILLED = Exit(ExitReason.CANCELLED, detail="stopped by reprorun runs kill")


class SupervisedRun(SubmittedRun):
    def __init__(self, run: Run, store: TrackingStore, grace: float = 10.0):
        self._run = run
        self.store = store
        self._grace = grace

    @property
    def run_id(self) -> str:
        return self._run.info.run_id

    @property
    def job_id(self) -> str:
        return self._run.data.tags.get(JOB_ID_TAG, "")

    def _tag(self, key: str) -> str:
        return self._run.data.tags.get(key, "")

    def get_status(self) -> RunStatus:
        """The stored status; but a run its code (or ``runs end``) has ended while its command
        still runs is RUNNING until the command ends (its owner then records the end)."""
        self._run = self.store.get_run(self.run_id)
        status = self._run.info.status
        if status.is_terminal:
            command_runs = owner_is_gone(self._tag(PROCESS_TAG)) is False
            if command_runs and owner_is_gone(self._tag(SystemTags.SUPERVISOR)) is False:
                return RunStatus.RUNNING
            return status
        if owner_is_gone(self._tag(SystemTags.SUPERVISOR)) is not True:
            return status
        pid = self._tag(SystemTags.SUPERVISOR).split(":")[1]
        self._stop_leftovers()
        if self._record_journal():
            self._run = self.store.get_run(self.run_id)
            return self._run.info.status
        reason = (
            f"its supervisor (reprorun process {pid}) ended without ending the run: killed "
            "with SIGKILL, by the out-of-memory killer, or the machine restarted. The log up to "
            "then is kept."
        )
        self._close(RunStatus.FAILED, reason, self._owner_lost(int(pid), reason), tell=True)
        self._run = self.store.get_run(self.run_id)
        return self._run.info.status

    def _owner_lost(self, pid: int, reason: str) -> Exit:
        """Why a run whose owner vanished ended: ``out-of-memory`` if the kernel log shows the
        OOM killer took its owner or its command, else ``node-lost`` (the process that kept
        the run alive is gone, as a node whose heartbeat stopped)."""
        import time

        from reprorun.backends.exit_reason import kernel_clock, kernel_log_oom

        age = max(time.time() - self._run.info.start_time / 1000, 0.0)
        since = kernel_clock() - age
        pids = [pid]
        command = self._tag(PROCESS_TAG).split(":")
        if len(command) == 3 and command[1].isdigit():
            pids.append(int(command[1]))
        for victim in pids:
            with contextlib.suppress(Exception):
                if oom := kernel_log_oom(victim, since, []):
                    return Exit(ExitReason.OUT_OF_MEMORY, detail=oom)
        return Exit(ExitReason.NODE_LOST, detail=reason)

    def _record_journal(self) -> bool:
        """Record the end the run's owner kept in the journal (the store refused it then),
        if it kept one; the journal's record is deleted once written. A store that still
        refuses raises, and the run stays as it is."""
        from reprorun.backends import journal

        found = journal.find(self.run_id)
        if found is None:
            return False
        path, ending = found
        if ending.owner != self._tag(SystemTags.SUPERVISOR):
            return False  # not written by this run's owner
        journal.apply(self.store, ending)
        path.unlink(missing_ok=True)
        return True

    def _stop_leftovers(self) -> None:
        """The command ran in a process group of its own (its pid). Its first process died
        with the supervisor, but what it started may still run: kill the group while it is
        provably the run's. It is if that pid still names the command's first process (same
        start time), or if that process is gone and a process of the group carries the run's
        ``REPRORUN_RUN_ID`` (Linux reuses no pid while its group exists, so such a member
        means the group was never freed). A pid that now names another process, or a group
        with no process of the run, is never signalled."""
        from reprorun._utils import process_start

        if self._tag(SystemTags.ENV_IMAGE):  # a container outlives its docker client
            import subprocess

            from reprorun.envs.docker import stop_argv

            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(stop_argv(self.run_id), capture_output=True, timeout=30)
        identity = self._tag(PROCESS_TAG)
        parts = identity.split(":")
        if owner_is_gone(identity) is None or len(parts) != 3:
            return  # another host, or not recorded
        group = int(parts[1])
        now = process_start(group)
        if now == parts[2] or (now is None and _runs_in_group(group, self.run_id)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)

    def wait(self) -> bool:
        while not (status := self.get_status()).is_terminal:
            time.sleep(POLL_SECONDS)
        return status is RunStatus.FINISHED

    def cancel(self, force: bool = False) -> None:
        """Stop the run and mark it KILLED. A supervisor that stops its run on SIGTERM (a
        detached supervisor, `reprorun run` in a terminal) gets SIGTERM, a second one with
        ``force``; if it has not ended the run after its grace period, it is killed and the
        run closed here. Another owner (a Python program that started the run without
        waiting) is left alone: the command's process group is stopped instead."""
        if self.get_status().is_terminal:
            return
        supervisor = self._tag(SystemTags.SUPERVISOR)
        gone = owner_is_gone(supervisor)
        if gone is None:
            host = supervisor.split(":")[0]
            where = f"on host {host}" if host and host != socket.gethostname() else "unknown"
            raise UserInputError(
                f"Run {self.run_id} is not owned by a reprorun process this host can stop "
                f"(its owner: {where}). Stop it where it runs, or record it as ended with "
                f"reprorun runs end {self.run_id} --status KILLED."
            )
        if gone:
            return  # get_status above has just closed it
        pid = int(supervisor.split(":")[1])
        if self._tag(STOPS_ON_SIGTERM_TAG) != "true":
            # Closed first: the owner, seeing its command end, then leaves the run KILLED.
            self._close(RunStatus.KILLED, "stopped by reprorun runs kill", _KILLED)
            self._stop_group(force)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            if force:
                time.sleep(0.2)
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self._grace + 10.0
        while not self.get_status().is_terminal:
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self._stop_leftovers()
                self._close(
                    RunStatus.KILLED,
                    f"its supervisor (process {pid}) did not stop the run within "
                    f"{self._grace + 10.0:.0f} s of SIGTERM: killed with SIGKILL",
                    _KILLED,
                )
                return
            time.sleep(POLL_SECONDS)

    def _stop_group(self, force: bool) -> None:
        """SIGTERM the command's process group, SIGKILL it after the grace period."""
        identity = self._tag(PROCESS_TAG)
        if owner_is_gone(identity) is not False:
            return
        group = int(identity.split(":")[1])
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL if force else signal.SIGTERM)
        deadline = time.monotonic() + self._grace
        while owner_is_gone(identity) is False and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)

    def _close(self, status: RunStatus, reason: str, ended: Exit, *, tell: bool = False) -> None:
        """End the run ``status`` unless it has ended: the status first (once, whoever is
        first), then why, written only by the closer that won. ``tell``: the run's owner is
        gone, so this closer notifies its targets (the setting's and the experiment's)."""
        current = self.store.get_run(self.run_id).info.status
        if current.is_terminal:
            return
        closed = self.store.update_run(
            self.run_id, status=status, end_time=now_ms(), only_if_status=current
        )
        if not closed:
            return  # another closer won: its reason stands
        self.store.set_tags(self.run_id, {FAILURE_TAG: reason, **ended.tags()})
        if tell:
            from reprorun.backends.notify import Event, notify

            notify(self.store, Event.of(status), self.store.get_run(self.run_id))  # never raises

    def logs(self, start: int = 0) -> bytes:
        """The log as the command writes it (in the artifact folder, or the staging folder
        of a run recorded on a server), else the stored artifact."""
        from reprorun.backends.job import stored_log
        from reprorun.config import home
        from reprorun.tracking.artifacts import is_remote, local_path, safe_relative

        run = self._run
        rel = run.data.tags.get(SystemTags.LOG_ARTIFACT) or "logs/run.log"
        staged = home() / "staging" / run.info.run_id / safe_relative(rel)
        if staged.is_file():
            return read_from(staged, start)
        if not is_remote(run.info.artifact_uri):
            return read_from(local_path(run.info.artifact_uri, rel), start)
        found = stored_log(run.info.artifact_uri, getattr(self.store, "uri", None), rel)
        return (found or b"")[start:]


def _runs_in_group(group: int, run_id: str) -> bool:
    """Whether a live process of process group ``group`` carries ``REPRORUN_RUN_ID=run_id``
    in its environment (every process a run's command starts inherits it)."""
    marker = f"REPRORUN_RUN_ID={run_id}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
            fields = stat[stat.rindex(b")") + 2 :].split()
            if int(fields[2]) != group or fields[0] in (b"Z", b"X"):
                continue
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                return True
        except (OSError, ValueError, IndexError):
            continue  # ended meanwhile, or not ours to read
    return False


def read_from(path: Path, start: int) -> bytes:
    """The bytes of ``path`` from ``start`` (none if it does not exist yet)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            return fh.read()
    except FileNotFoundError:
        return b""
