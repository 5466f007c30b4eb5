"""Heartbeats of remote runs (issue 18): the wrapper each remote job's command runs under, and
the check that closes a run whose heartbeat stopped.

The wrapper (``reprorun.tracking.heartbeat``, in reprorun's in-run client, which every remote
job has on its PYTHONPATH) sets the run's ``reprorun.heartbeat`` tag and stores the log so far
every ``REPRORUN_HEARTBEAT_INTERVAL`` seconds. A job whose Python cannot import the client runs
its command as before (no heartbeat, the log at the end). Only runs that sent a heartbeat are
ever judged by it: a run that never could (its store out of the job's reach) is left to its
engine, as before.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable

from reprorun import config
from reprorun.backends.base import FAILURE_TAG, LaunchSpec, SubmittedRun
from reprorun.backends.exit_reason import signal_name
from reprorun.tracking.entities import ExitReason, Run, RunStatus, SystemTags, now_ms
from reprorun.tracking.store.base import TrackingStore

WRAPPER_MODULE = "reprorun.tracking.heartbeat"


def interval() -> float:
    """Seconds between heartbeats (REPRORUN_HEARTBEAT_INTERVAL), read where the job is
    submitted and written into its command."""
    return config.seconds("heartbeat_interval")


def metrics_interval(spec: LaunchSpec) -> float | None:
    """Seconds between the job's system-metrics samples (REPRORUN_SYSTEM_METRICS_INTERVAL,
    read where the job is submitted), None when the run's switch is off."""
    return config.seconds("system_metrics_interval") if spec.system_metrics else None


def wrapped(command: str, every: float, *, exec_: bool = True, metrics: float | None = None) -> str:
    """A POSIX shell line running ``command`` with bash under the heartbeat wrapper (a beat
    every ``every`` seconds, the system metrics every ``metrics`` seconds when given) when the
    job's ``python3`` can import it, else with bash alone, as before. ``exec_``: the line
    replaces the shell."""
    plain = f"bash -c {shlex.quote(command)}"
    run = "exec " if exec_ else ""
    check = f"python3 -c 'import {WRAPPER_MODULE}' >/dev/null 2>&1"
    options = f"--every {every:g}" + (f" --system-metrics {metrics:g}" if metrics else "")
    return (
        f"if {check}; then {run}python3 -m {WRAPPER_MODULE} {options} -- {plain}; "
        f"else {run}{plain}; fi"
    )


def heartbeat_lost(run: Run, now: int | None = None) -> bool:
    """``run`` is RUNNING and its last heartbeat is older than REPRORUN_HEARTBEAT_TIMEOUT
    (a wrapper that said its command ended is silent by right: see ``ended_unseen``)."""
    return _silent(run, now) and SystemTags.COMMAND_EXIT not in run.data.tags


def ended_unseen(run: Run, now: int | None = None) -> bool:
    """``run`` is RUNNING, its job's wrapper said the command ended, and the heartbeat window
    has passed since without anyone recording the job's end from its engine."""
    return _silent(run, now) and run.data.tags.get(SystemTags.COMMAND_EXIT, "").isdigit()


def _silent(run: Run, now: int | None) -> bool:
    if run.info.status is not RunStatus.RUNNING:
        return False  # queued runs have no heartbeat yet; ended runs are done
    beat = run.data.tags.get(SystemTags.HEARTBEAT, "")
    if not beat.isdigit():
        return False  # never sent one: the engine alone says how it is
    window_ms = config.seconds("heartbeat_timeout") * 1000
    return (now if now is not None else now_ms()) - int(beat) > window_ms


def close_if_lost(store: TrackingStore, run: Run, given: Iterable[str] = ()) -> Run:
    """``run`` as it is after a look at its heartbeat: closed FAILED with reason
    ``node-lost`` if the heartbeat stopped, closed as its wrapper reported if the command
    ended unseen (``ended_unseen``), else as it is. Once: a concurrent close (the engine's,
    another reader's) wins over this one, and only the closer notifies (``given``: the
    waiting process's --notify targets, with the setting's and the experiment's)."""
    return close_silent(store, run, given)[0]


def close_silent(store: TrackingStore, run: Run, given: Iterable[str] = ()) -> tuple[Run, bool]:
    """``close_if_lost``, and whether this call closed the run."""
    if heartbeat_lost(run):
        silent = (now_ms() - int(run.data.tags[SystemTags.HEARTBEAT])) / 1000
        detail = (
            f"no heartbeat from the job for {silent:.0f} s (REPRORUN_HEARTBEAT_TIMEOUT is "
            f"{config.seconds('heartbeat_timeout'):g} s): its node or its wrapper stopped"
        )
        status = RunStatus.FAILED
        tags = {
            SystemTags.EXIT_REASON: ExitReason.NODE_LOST.value,
            SystemTags.EXIT_DETAIL: detail,
            FAILURE_TAG: detail,
        }
    elif ended_unseen(run):
        code = int(run.data.tags[SystemTags.COMMAND_EXIT])
        status = RunStatus.FINISHED if code == 0 else RunStatus.FAILED
        detail = (
            f"the job's command ended with exit status {code}, as its wrapper reported (its "
            f"engine was not asked: `reprorun runs status {run.info.run_id}` asks it)"
        )
        tags = {
            SystemTags.EXIT_REASON: (
                ExitReason.SUCCEEDED if code == 0 else ExitReason.CODE_ERROR
            ).value,
            SystemTags.EXIT_DETAIL: detail,
            SystemTags.EXIT_CODE: str(code),
        }
        if code > 128 and (name := signal_name(128 - code)):
            tags[SystemTags.EXIT_SIGNAL] = name
        if code:
            tags[FAILURE_TAG] = detail
    else:
        return run, False
    closed = store.update_run(
        run.info.run_id, status=status, end_time=now_ms(), only_if_status=RunStatus.RUNNING
    )
    if not closed:
        return store.get_run(run.info.run_id), False
    store.log_batch(run.info.run_id, tags=tags)
    from reprorun.backends.notify import Event, notify, targets_for

    ended = store.get_run(run.info.run_id)
    event = Event.NODE_LOST if status is RunStatus.FAILED and not ended_unseen(run) else None
    targets = targets_for(store, run.info.experiment_id, given)
    notify(store, event or Event.of(status), ended, targets)  # never raises
    return ended, True


class Watched(SubmittedRun):
    """A remote run's handle whose status also ends at a lost heartbeat: the engine may call
    a job RUNNING whose node stopped answering. The job is then abandoned (its engine asked
    to stop it, best effort), so that whoever waits for it (``reprorun run``, a retry, ``runs
    logs --follow``) goes on, and a retry does not run beside a job that may come back."""

    def __init__(self, store: TrackingStore, handle: SubmittedRun):
        self.store = store
        self.handle = handle
        self.backend = handle.backend
        self.job_url = handle.job_url
        self._closed_here = False

    @property
    def run_id(self) -> str:
        return self.handle.run_id

    @property
    def job_id(self) -> str:
        return self.handle.job_id

    @property
    def ended_here(self) -> bool:  # type: ignore[override]
        return self._closed_here or self.handle.ended_here

    def get_status(self) -> RunStatus:
        self.handle.notify_targets = self.notify_targets
        status = self.handle.get_status()
        if status.is_terminal:
            return status
        run, closed = close_silent(self.store, self.store.get_run(self.run_id), self.notify_targets)
        self._closed_here = self._closed_here or closed
        tags = run.data.tags
        lost = (
            tags.get(SystemTags.EXIT_REASON) == ExitReason.NODE_LOST.value
            and SystemTags.COMMAND_EXIT not in tags
        )
        # Only a lost heartbeat ends it here: code that ended its own run FAILED while its
        # command goes on is followed until the command ends, as before.
        if run.info.status.is_terminal and lost:
            self.handle.abandon()
            return run.info.status
        return status

    def wait(self) -> bool:
        import time

        while not self.get_status().is_terminal:
            time.sleep(1.0)
        return self.get_status() is RunStatus.FINISHED

    def cancel(self, force: bool = False) -> None:
        self.handle.cancel(force)

    def logs(self, start: int = 0) -> bytes:
        return self.handle.logs(start)
