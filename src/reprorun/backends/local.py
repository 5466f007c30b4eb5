"""Run the command on this machine, in its own process group, streaming and storing its log.

With ``max_parallel`` the run first waits its turn in the local queue (SCHEDULED)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from reprorun._utils import process_identity
from reprorun.backends.base import (
    JOB_ID_TAG,
    Backend,
    LaunchSpec,
    LocalBackendConfig,
    SubmittedRun,
    ends_over,
)
from reprorun.backends.queue import Slot
from reprorun.backends.supervised import PROCESS_TAG, SupervisedRun, read_from
from reprorun.errors import ExecutionError
from reprorun.tracking.entities import Run, RunStatus, SystemTags, now_ms
from reprorun.tracking.store.base import TrackingStore

_LINUX = sys.platform.startswith("linux")  # the parent-death signal is Linux's prctl
# After the main process exits, how long leftover processes may keep the log pipe open.
_DRAIN_SECONDS = 5.0


class LocalBackend(Backend):
    name = "local"

    def __init__(self, config: LocalBackendConfig | None = None):
        self.config = config or LocalBackendConfig()

    def _submit(self, spec: LaunchSpec) -> SubmittedRun:
        log_file = spec.artifact_dir / spec.log_path
        log_file.parent.mkdir(parents=True, exist_ok=True)
        slot = _wait_for_slot(spec) if spec.max_parallel else None
        try:
            proc = subprocess.Popen(
                spec.argv or ["bash", "-c", spec.command],
                cwd=spec.cwd,
                env=dict(spec.env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: Ctrl-C reaches us, we stop it all
                preexec_fn=_die_with_parent() if spec.tied_to_caller and _LINUX else None,
            )
        except OSError as exc:
            if slot:
                slot.release()
            raise ExecutionError(f"Could not start the command in {spec.cwd}: {exc}") from exc
        spec.store.set_tags(
            spec.run_id,
            {JOB_ID_TAG: str(proc.pid), PROCESS_TAG: process_identity(proc.pid)},
        )
        return LocalSubmittedRun(spec, proc, log_file, self.config.stop_grace_seconds, slot)

    def attach(self, run: Run, store: TrackingStore) -> SubmittedRun:
        return SupervisedRun(run, store, self.config.stop_grace_seconds)


def _wait_for_slot(spec: LaunchSpec) -> Slot:
    """Hold the run SCHEDULED until the local queue has a free slot for it."""
    from reprorun.backends.queue import acquire
    from reprorun.config import home

    assert spec.max_parallel is not None

    def scheduled() -> None:
        spec.store.update_run(
            spec.run_id, status=RunStatus.SCHEDULED, only_if_status=RunStatus.RUNNING
        )

    slot = acquire(
        home() / "queue",
        spec.max_parallel,
        spec.run_id,
        on_wait=scheduled,
        interrupted=spec.interrupted,
    )
    spec.store.update_run(spec.run_id, status=RunStatus.RUNNING, only_if_status=RunStatus.SCHEDULED)
    if spec.store.get_run(spec.run_id).info.status.is_terminal:
        slot.release()  # ended while it waited (runs end, a reader): nothing to run
        raise ExecutionError(f"Run {spec.run_id} was ended while it waited in the queue.")
    return slot


def _die_with_parent() -> Callable[[], None]:
    """What the child runs before exec: ask for SIGKILL when the thread that started it
    dies (a supervisor killed with SIGKILL must not leave its command running unowned).
    Resolved here, in the parent: the child may only make the call, not import."""
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1

    def request() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL)

    return request


def _end_run(store: TrackingStore, run_id: str, status: RunStatus, returncode: int | None) -> None:
    """Record how the command ended (``ends_over`` decides over what the run says now)."""
    if returncode is not None:
        store.log_batch(run_id, tags={SystemTags.EXIT_CODE: str(returncode)})
    current = store.get_run(run_id).info.status
    if ends_over(current, status):
        store.update_run(run_id, status=status, end_time=now_ms(), only_if_status=current)


class LocalSubmittedRun(SubmittedRun):
    def __init__(
        self,
        spec: LaunchSpec,
        proc: subprocess.Popen[bytes],
        log_file: Path,
        grace: float,
        slot: Slot | None = None,
    ):
        self._spec = spec
        self._proc = proc
        self._log_file = log_file
        self._slot = slot
        self._grace = grace
        self._lock = threading.Lock()
        self._final: RunStatus | None = None
        self._cancelled = False
        self._log = open(log_file, "ab")  # noqa: SIM115 - closed by the pump thread
        self._pump = threading.Thread(
            target=self._pump_output, name=f"log-{spec.run_id[:8]}", daemon=True
        )
        self._pump.start()
        # Not a daemon: the interpreter waits for the run to be recorded before it exits.
        self._monitor = threading.Thread(target=self._supervise, name=f"run-{spec.run_id[:8]}")
        self._monitor.start()

    @property
    def run_id(self) -> str:
        return self._spec.run_id

    @property
    def job_id(self) -> str:
        return str(self._proc.pid)

    def logs(self, start: int = 0) -> bytes:
        return read_from(self._log_file, start)

    def _pump_output(self) -> None:
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        echo = self._spec.echo
        try:
            while chunk := os.read(fd, 65536):
                self._log.write(chunk)
                self._log.flush()  # `reprorun runs show` reads the log while the run goes on
                if echo is not None:
                    with contextlib.suppress(Exception):  # a closed terminal must not kill the log
                        echo(chunk)
        finally:
            self._log.close()
            self._proc.stdout.close()

    def wait(self) -> bool:
        self._monitor.join()
        return self.get_status() is RunStatus.FINISHED

    def _supervise(self) -> None:
        returncode = self._proc.wait()
        self._pump.join(_DRAIN_SECONDS)
        if self._pump.is_alive():
            # Background processes the command left behind still hold the output open.
            self._signal_group(signal.SIGKILL)
            self._pump.join(_DRAIN_SECONDS)
        if self._cancelled:
            status = RunStatus.KILLED
        else:
            status = RunStatus.FINISHED if returncode == 0 else RunStatus.FAILED
        self._finish(status, returncode)

    def _finish(self, status: RunStatus, returncode: int | None) -> None:
        with self._lock:
            if self._final is not None:
                return
            self._final = status
        if self._slot is not None:
            self._slot.release()  # the next queued run may start
        try:
            if self._spec.on_finish is not None:
                self._spec.on_finish()
        finally:  # whatever the clean-up did, the run ends
            _end_run(self._spec.store, self.run_id, status, returncode)

    def get_status(self) -> RunStatus:
        if self._final is not None:
            return self._final
        return self._spec.store.get_run(self.run_id).info.status

    def cancel(self, force: bool = False) -> None:
        """SIGTERM the process group, SIGKILL it after the grace period (at once with
        ``force``), mark the run KILLED."""
        if self._proc.poll() is None:
            self._cancelled = True
            if self._spec.stop_argv:  # e.g. docker kill: the container outlives its client
                with contextlib.suppress(OSError, subprocess.SubprocessError):
                    subprocess.run(self._spec.stop_argv, capture_output=True, timeout=30)
            if force:
                self._signal_group(signal.SIGKILL)
            self._signal_group(signal.SIGTERM)
            try:
                self._proc.wait(timeout=self._grace)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self._proc.wait()
            # Stop anything else left in the group too.
            self._signal_group(signal.SIGKILL)
        self._monitor.join()

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)
