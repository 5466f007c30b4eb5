"""Run the command on this machine, in its own process group, streaming and storing its log.

With ``max_parallel`` the run first waits its turn in the local queue (SCHEDULED).

The output is always drained and echoed, whatever happens to the log file: if the log cannot
be written (a full disk, a read-only folder, an I/O error), the run carries ``LOG_ERROR_TAG``
(what failed, how many bytes were stored and lost) and still ends with its command's status.
The end itself is recorded with retries, or kept in a journal (``backends.journal``), with why
the run ended (``backends.exit_reason``): its exit code and signal, the OOM killer's evidence,
and whether ``--timeout`` (``LaunchSpec.timeout_seconds``, counted from the command's start,
not from the queue) or a cancel stopped it."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reprorun._utils import die_with_parent, process_identity
from reprorun.backends import journal
from reprorun.backends.base import (
    JOB_ID_TAG,
    LOG_ERROR_TAG,
    Backend,
    LaunchSpec,
    LocalBackendConfig,
    SubmittedRun,
    parse_options,
)
from reprorun.backends.exit_reason import Exit, OomWatch, classify, settle
from reprorun.backends.queue import Slot
from reprorun.backends.supervised import PROCESS_TAG, SupervisedRun, read_from
from reprorun.config import seconds
from reprorun.errors import ExecutionError, RunNotRecorded
from reprorun.tracking.entities import Run, RunStatus, now_ms
from reprorun.tracking.store.base import TrackingStore

if TYPE_CHECKING:
    from reprorun.backends.system_metrics import SystemMetrics

# After the main process exits, how long leftover processes may keep the log pipe open.
_DRAIN_SECONDS = 5.0


def create(config: Mapping[str, Any], source: str) -> Backend:
    """The local backend with its options (the ``reprorun.backends`` entry point)."""
    return LocalBackend(parse_options("local", LocalBackendConfig, config, source))


class LocalBackend(Backend):
    name = "local"

    def __init__(self, config: LocalBackendConfig | None = None):
        self.config = config or LocalBackendConfig()

    def _submit(self, spec: LaunchSpec) -> SubmittedRun:
        log_file = spec.artifact_dir / spec.log_path
        with contextlib.suppress(OSError):  # opening the log says what is wrong, and is survived
            log_file.parent.mkdir(parents=True, exist_ok=True)
        interval = seconds("system_metrics_interval") if spec.system_metrics else None
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
                preexec_fn=die_with_parent() if spec.tied_to_caller else None,
            )
        except OSError as exc:
            if slot:
                slot.release()
            raise ExecutionError(f"Could not start the command in {spec.cwd}: {exc}") from exc
        grace = self.config.stop_grace_seconds
        return LocalSubmittedRun(spec, proc, log_file, grace, slot, metrics_interval=interval)

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


def _end_run(
    store: TrackingStore, run_id: str, ended: Exit, tags: dict[str, str] | None = None
) -> None:
    """Record how the command ended and why (``ends_over`` decides over what the run says
    now), with retries; raises ``RunNotRecorded`` (the end kept in the journal) if the store
    refuses."""
    tags = {**(tags or {}), **ended.tags()}
    owner = process_identity(os.getpid())
    journal.record_end(store, journal.Ending(run_id, ended.status, now_ms(), tags, owner))


def _system_metrics(spec: LaunchSpec, pid: int, interval: float | None) -> SystemMetrics | None:
    """Start sampling the system metrics of the command ``pid`` (None when they are off)."""
    if interval is None:
        return None
    from reprorun.backends.system_metrics import SystemMetrics

    sampler = SystemMetrics(spec.store, spec.run_id, pid, interval, spec.cwd)
    sampler.start()
    return sampler


class _Log:
    """The run's log file, written as the output comes. The first write that fails (or an
    open that fails) stops the storing, not the run: what failed and how many bytes were
    lost are kept for ``LOG_ERROR_TAG``."""

    def __init__(self, path: Path, spec: LaunchSpec):
        self.path = path
        self._spec = spec
        self.stored = 0
        self.lost = 0
        self.error: str | None = None
        self._fd: int | None = None
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as exc:
            self._failed(exc)

    def write(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view and self._fd is not None:
            try:
                written = os.write(self._fd, view)
            except OSError as exc:
                self._failed(exc)
                break
            self.stored += written
            view = view[written:]
        self.lost += len(view)

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def tag(self) -> dict[str, str]:
        """``LOG_ERROR_TAG`` with what is known now (empty when all went well)."""
        if self.error is None:
            return {}
        where = "the terminal" if self._spec.echo is not None else "no one"
        return {
            LOG_ERROR_TAG: (
                f"The run's log {self.path} could not be written: {self.error}. It holds the "
                f"first {self.stored} bytes of output; {self.lost} bytes after them were not "
                f"stored (they went to {where})."
            )
        }

    def _record(self, tag: dict[str, str]) -> None:
        with contextlib.suppress(Exception):
            self._spec.store.set_tags(self._spec.run_id, tag)

    def _failed(self, exc: OSError) -> None:
        self.close()
        name = errno.errorcode.get(exc.errno or 0, "")
        self.error = f"{exc.strerror or exc}" + (f" ({name})" if name else "")
        # Said on the run now, off the pump's thread (a store that is locked or on the same
        # full disk must not stop the draining), and again with the end.
        threading.Thread(target=self._record, args=(self.tag(),), daemon=True).start()
        if self._spec.echo is not None:
            with contextlib.suppress(Exception):
                sys.stderr.write(
                    f"reprorun: warning: cannot write the run's log {self.path}: {self.error}; "
                    "the output goes on to the terminal only (recorded on the run as "
                    f"{LOG_ERROR_TAG})\n"
                )
                sys.stderr.flush()


class LocalSubmittedRun(SubmittedRun):
    def __init__(
        self,
        spec: LaunchSpec,
        proc: subprocess.Popen[bytes],
        log_file: Path,
        grace: float,
        slot: Slot | None = None,
        metrics_interval: float | None = None,  # seconds between system metrics (None: off)
    ):
        self._spec = spec
        self._proc = proc
        self._log_file = log_file
        self._slot = slot
        self._grace = grace
        self._lock = threading.Lock()
        self._ending = False  # _finish has begun (it runs once)
        self._final: RunStatus | None = None  # the run's stored status once it has ended
        self._not_recorded: RunNotRecorded | None = None
        self._cancelled = False
        self._timed_out = False  # --timeout stopped the command
        self.exit: Exit | None = None  # why the run ended, once it has
        self._oom: OomWatch | None = None
        with contextlib.suppress(Exception):  # no evidence is no reason to fail the run
            self._oom = OomWatch(proc.pid)
        self._started = time.time()  # (the Docker engine's events are asked from then)
        self._timer: threading.Timer | None = None
        if spec.timeout_seconds is not None:
            self._timer = threading.Timer(spec.timeout_seconds, self._time_out)
            self._timer.daemon = True
            self._timer.start()
        self._log = _Log(log_file, spec)  # closed by the pump thread
        self._pump = threading.Thread(
            target=self._pump_output, name=f"log-{spec.run_id[:8]}", daemon=True
        )
        self._pump.start()
        self._metrics = _system_metrics(spec, proc.pid, metrics_interval)
        # Once the output is drained: a store that is slow or refuses must not block the
        # command. Tags it refuses now are written with the end (retried, or journaled).
        self._pending: dict[str, str] = {}
        job_tags = {JOB_ID_TAG: str(proc.pid), PROCESS_TAG: process_identity(proc.pid)}
        try:
            spec.store.set_tags(spec.run_id, job_tags)
        except Exception:
            self._pending = job_tags
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
        """Drain the command's output to the terminal and the log until every process of
        the run has closed it. Neither may stop the draining: a command blocked on a full
        pipe would never end."""
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        echo = self._spec.echo
        try:
            while chunk := os.read(fd, 65536):
                if echo is not None:
                    with contextlib.suppress(Exception):  # a closed terminal must not stop it
                        echo(chunk)
                self._log.write(chunk)  # unbuffered: `reprorun runs show` reads it live
        finally:
            self._log.close()
            self._proc.stdout.close()

    def wait(self) -> bool:
        """Block until the run has ended; raises ``RunNotRecorded`` if the store refused
        to record its end (kept in the journal)."""
        self._monitor.join()
        if self._not_recorded is not None:
            raise self._not_recorded
        return self.get_status() is RunStatus.FINISHED

    def _supervise(self) -> None:
        returncode = self._proc.wait()
        if self._timer is not None:
            self._timer.cancel()
        self._pump.join(_DRAIN_SECONDS)
        if self._pump.is_alive():
            # Background processes the command left behind still hold the output open.
            self._signal_group(signal.SIGKILL)
            self._pump.join(_DRAIN_SECONDS)
        self._finish(self._classify(returncode))

    def _classify(self, returncode: int) -> Exit:
        """Why the command ended: reprorun stopped it (timeout, cancel), the OOM killer did,
        or the command's own exit code."""
        stopped = self._timed_out or self._cancelled
        oom = None
        if not stopped and self._oom is not None:
            with contextlib.suppress(Exception):
                oom = self._oom.evidence(returncode)
        if not stopped and oom is None and self._spec.container and returncode == 137:
            # `docker run` exits 137 when the container's process was SIGKILLed; the
            # container's cgroup is the engine's, so the engine says whether it was the OOM
            # killer (a --docker-args memory limit, or the machine's memory).
            from reprorun.envs.docker import oom_killed

            oom = oom_killed(self._spec.run_id, self._started)
        detail = None
        if self._timed_out:
            detail = f"stopped by --timeout after {self._spec.timeout_seconds:g} s"
        return classify(
            returncode, cancelled=self._cancelled, timed_out=self._timed_out, oom=oom, detail=detail
        )

    def _finish(self, ended: Exit) -> None:
        """End the run as ``ended`` says, unless the status its code set stands
        (``ends_over``); ``get_status`` then answers what the run says."""
        with self._lock:
            if self._ending:
                return
            self._ending = True
        # The command has ended: no more samples (a slow clean-up is not the run's).
        peak = self._metrics.stop() if self._metrics is not None else {}
        if self._slot is not None:
            self._slot.release()  # the next queued run may start
        try:
            if self._spec.on_finish is not None:
                self._spec.on_finish()
        finally:  # whatever the clean-up did, the run ends
            status = ended.status
            self.exit = ended
            try:
                tags = {**self._pending, **self._log.tag(), **peak}
                _end_run(self._spec.store, self.run_id, ended, tags)
                status = self._stored(status)
                self.exit = settle(ended, status)  # as recorded (journal.apply)
            except RunNotRecorded as exc:
                self._not_recorded = exc  # for wait(), in the thread that waits
            finally:
                self._final = status

    def _stored(self, recorded: RunStatus) -> RunStatus:
        """The run's status as stored now that its end is recorded (``recorded`` if the
        store cannot say)."""
        try:
            stored = self._spec.store.get_run(self.run_id).info.status
        except Exception:
            return recorded
        return stored if stored.is_terminal else recorded

    def get_status(self) -> RunStatus:
        """The stored status once the run has ended. Before, the store's, except that a run
        its code (or ``runs end``) has ended already is RUNNING while its command goes on."""
        if self._final is not None:
            return self._final
        status = self._spec.store.get_run(self.run_id).info.status
        return RunStatus.RUNNING if status.is_terminal else status

    def cancel(self, force: bool = False) -> None:
        """SIGTERM the process group, SIGKILL it after the grace period (at once with
        ``force``), mark the run KILLED (reason cancelled; timeout if ``--timeout`` is
        already stopping it)."""
        if self._proc.poll() is None:
            with self._lock:
                self._cancelled = not self._timed_out
            self._stop(force)
        self._monitor.join()

    def _time_out(self) -> None:
        """``--timeout`` has passed: stop the command as a cancel does (reason timeout)."""
        with self._lock:
            if self._cancelled or self._proc.poll() is not None:
                return
            self._timed_out = True
        self._stop(force=False)

    def _stop(self, force: bool) -> None:
        if self._proc.poll() is None:
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

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)
