"""A local run owned by another process: a detached supervisor, or `reprorun run` in another
terminal. Its status is the store's, unless that process is gone while the run is not ended:
then the run is closed FAILED (the supervisor died without a word: SIGKILL, OOM killer, a
reboot) with its log kept, and whatever is left of its command is stopped. This check runs
whenever anything reads the run through ``reprorun.backends.refresh``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

from reprorun._utils import owner_is_gone
from reprorun.backends.base import FAILURE_TAG, SubmittedRun
from reprorun.errors import UserInputError
from reprorun.tracking.entities import Run, RunStatus, SystemTags, now_ms
from reprorun.tracking.store.base import TrackingStore

# The command's process ("host:pid:start"), so a stale run's leftover command can be stopped.
PROCESS_TAG = "reprorun.local.process"
POLL_SECONDS = 0.1


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
        from reprorun.backends.base import JOB_ID_TAG

        return self._run.data.tags.get(JOB_ID_TAG, "")

    def _tag(self, key: str) -> str:
        return self._run.data.tags.get(key, "")

    def get_status(self) -> RunStatus:
        self._run = self.store.get_run(self.run_id)
        status = self._run.info.status
        if status.is_terminal or owner_is_gone(self._tag(SystemTags.SUPERVISOR)) is not True:
            return status
        pid = self._tag(SystemTags.SUPERVISOR).split(":")[1]
        self._stop_leftovers()
        self.store.set_tag(
            self.run_id,
            FAILURE_TAG,
            f"its supervisor (reprorun process {pid}) ended without ending the run: killed "
            "with SIGKILL, by the out-of-memory killer, or the machine restarted. The log up to "
            "then is kept.",
        )
        self.store.update_run(
            self.run_id, status=RunStatus.FAILED, end_time=now_ms(), only_if_status=status
        )
        self._run = self.store.get_run(self.run_id)
        return self._run.info.status

    def _stop_leftovers(self) -> None:
        """The command ran in a process group of its own (its pid). Its first process died
        with the supervisor, but what it started may still run: kill the group, unless that
        pid now names another process (Linux reuses no pid while its group exists)."""
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
        now = process_start(int(parts[1]))
        if now is None or now == parts[2]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(parts[1]), signal.SIGKILL)

    def wait(self) -> bool:
        while not (status := self.get_status()).is_terminal:
            time.sleep(POLL_SECONDS)
        return status is RunStatus.FINISHED

    def cancel(self, force: bool = False) -> None:
        """SIGTERM the supervisor, which stops the command (SIGTERM, then SIGKILL after its
        grace period) and marks the run KILLED; ``force``: a second SIGTERM, at once."""
        if self.get_status().is_terminal:
            return
        supervisor = self._tag(SystemTags.SUPERVISOR)
        if owner_is_gone(supervisor) is None:
            raise UserInputError(
                f"Run {self.run_id} is supervised by {supervisor.split(':')[0] or 'an unknown'} "
                "process on another host: stop it there (reprorun runs kill on that host)."
            )
        pid = int(supervisor.split(":")[1])
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            if force:
                time.sleep(0.2)
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self._grace + 10.0
        while not self.get_status().is_terminal:
            if time.monotonic() > deadline:
                # The supervisor does not answer: end it, then the check above closes the run.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + self._grace + 10.0
            time.sleep(POLL_SECONDS)

    def logs(self) -> bytes:
        """The log as the command writes it (in the artifact folder, or the staging folder
        of a run recorded on a server), else the stored artifact."""
        from reprorun.backends.job import stored_log
        from reprorun.config import home

        run = self._run
        rel = run.data.tags.get(SystemTags.LOG_ARTIFACT) or "logs/run.log"
        staged = home() / "staging" / run.info.run_id / rel
        if staged.is_file():
            return staged.read_bytes()
        found = stored_log(run.info.artifact_uri, getattr(self.store, "uri", None), rel)
        return found or b""
