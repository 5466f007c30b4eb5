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
from reprorun.backends.base import FAILURE_TAG
from reprorun.tracking.entities import ExitReason, Run, RunStatus, SystemTags, now_ms
from reprorun.tracking.store.base import TrackingStore

WRAPPER_MODULE = "reprorun.tracking.heartbeat"


def interval() -> float:
    """Seconds between heartbeats (REPRORUN_HEARTBEAT_INTERVAL), read where the job is
    submitted and written into its command."""
    return config.seconds("heartbeat_interval")


def wrapped(command: str, every: float, *, exec_: bool = True) -> str:
    """A POSIX shell line running ``command`` with bash under the heartbeat wrapper (a beat
    every ``every`` seconds) when the job's ``python3`` can import it, else with bash alone,
    as before. ``exec_``: the line replaces the shell."""
    plain = f"bash -c {shlex.quote(command)}"
    run = "exec " if exec_ else ""
    check = f"python3 -c 'import {WRAPPER_MODULE}' >/dev/null 2>&1"
    return (
        f"if {check}; then {run}python3 -m {WRAPPER_MODULE} --every {every:g} -- {plain}; "
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
    return store.get_run(run.info.run_id)
