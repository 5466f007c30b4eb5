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

from reprorun import config
from reprorun.backends.base import FAILURE_TAG, LaunchSpec, SubmittedRun
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
    """``run`` is RUNNING and its last heartbeat is older than REPRORUN_HEARTBEAT_TIMEOUT."""
    if run.info.status is not RunStatus.RUNNING:
        return False  # queued runs have no heartbeat yet; ended runs are done
    beat = run.data.tags.get(SystemTags.HEARTBEAT, "")
    if not beat.isdigit():
        return False  # never sent one: the engine alone says how it is
    window_ms = config.seconds("heartbeat_timeout") * 1000
    return (now if now is not None else now_ms()) - int(beat) > window_ms


def close_if_lost(store: TrackingStore, run: Run) -> Run:
    """``run`` closed FAILED with reason ``node-lost`` if its heartbeat stopped, else as it
    is. Once: a concurrent close (the engine's, another reader's) wins over this one."""
    if not heartbeat_lost(run):
        return run
    last = int(run.data.tags[SystemTags.HEARTBEAT])
    silent = (now_ms() - last) / 1000
    detail = (
        f"no heartbeat from the job for {silent:.0f} s (REPRORUN_HEARTBEAT_TIMEOUT is "
        f"{config.seconds('heartbeat_timeout'):g} s): its node or its wrapper stopped"
    )
    closed = store.update_run(
        run.info.run_id,
        status=RunStatus.FAILED,
        end_time=now_ms(),
        only_if_status=RunStatus.RUNNING,
    )
    if closed:
        tags = {
            SystemTags.EXIT_REASON: ExitReason.NODE_LOST.value,
            SystemTags.EXIT_DETAIL: detail,
            FAILURE_TAG: detail,
        }
        store.log_batch(run.info.run_id, tags=tags)
        from reprorun.backends.notify import Event, notify

        ended = store.get_run(run.info.run_id)
        notify(store, Event.NODE_LOST, ended)  # only whoever closed it; never raises
        return ended
    return store.get_run(run.info.run_id)


class Watched(SubmittedRun):
    """A remote run's handle whose status also ends at a lost heartbeat: the engine may call
    a job RUNNING whose node stopped answering (``runs logs --follow`` stops there)."""

    def __init__(self, store: TrackingStore, handle: SubmittedRun):
        self.store = store
        self.handle = handle
        self.backend = handle.backend

    @property
    def run_id(self) -> str:
        return self.handle.run_id

    @property
    def job_id(self) -> str:
        return self.handle.job_id

    def get_status(self) -> RunStatus:
        status = self.handle.get_status()
        if status.is_terminal:
            return status
        run = close_if_lost(self.store, self.store.get_run(self.run_id))
        lost = run.data.tags.get(SystemTags.EXIT_REASON) == ExitReason.NODE_LOST.value
        # Only a lost heartbeat ends it here: code that ended its own run FAILED while its
        # command goes on is followed until the command ends, as before.
        return run.info.status if run.info.status.is_terminal and lost else status

    def wait(self) -> bool:
        import time

        while not self.get_status().is_terminal:
            time.sleep(1.0)
        return self.get_status() is RunStatus.FINISHED

    def cancel(self, force: bool = False) -> None:
        self.handle.cancel(force)

    def logs(self, start: int = 0) -> bytes:
        return self.handle.logs(start)
