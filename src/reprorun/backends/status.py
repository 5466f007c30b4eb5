"""Any run's job, whatever its backend: the handle behind `reprorun runs status|logs|kill`,
and ``refresh``, which closes a run whose job ended (or whose supervisor died) unnoticed."""

from __future__ import annotations

import json

from reprorun._utils import owner_is_gone
from reprorun.backends.base import CONFIG_TAG, JOB_ID_TAG, SubmittedRun
from reprorun.backends.heartbeat import Watched, close_if_lost
from reprorun.backends.registry import get_backend
from reprorun.tracking.entities import Run, SystemTags
from reprorun.tracking.store.base import TrackingStore


def attach(store: TrackingStore, run: Run) -> SubmittedRun:
    """The handle of ``run``'s job, rebuilt from its tags by the backend that ran it."""
    tags = run.data.tags
    name = tags.get(SystemTags.BACKEND) or "local"
    if name != "local" and not tags.get(JOB_ID_TAG):
        # No job yet (still submitting, or the submission failed): the submitting process
        # owns the run, and the run is closed if that process is gone.
        from reprorun.backends.supervised import SupervisedRun

        return SupervisedRun(run, store)
    try:
        options = json.loads(tags.get(CONFIG_TAG) or "{}")
    except ValueError:
        options = {}
    handle = get_backend(name, options).attach(run, store)
    handle.backend = name
    return handle


def refresh(store: TrackingStore, run: Run, *, engines: bool = True) -> Run:
    """``run`` as it is now. A run still RUNNING (or SCHEDULED) in the store is checked
    against its job: ended jobs and dead supervisors are recorded first. An engine that
    cannot be asked leaves the run as it is. ``engines=False`` checks only local runs (a
    look at /proc, no network: the server does this on every read)."""
    if run.info.status.is_terminal:
        return run
    tags = run.data.tags
    backend = tags.get(SystemTags.BACKEND) or "local"
    if backend == "local":
        if owner_is_gone(tags.get(SystemTags.SUPERVISOR, "")) is not True:
            return run  # its supervisor lives (or is elsewhere, or unknown): trust the store
    elif not engines:
        return close_if_lost(store, run)  # a remote job's stopped heartbeat (issue 18)
    engine = (backend, tags.get(CONFIG_TAG) or "")
    if engine in _UNANSWERED:
        return close_if_lost(store, run)  # one timeout per engine and process
    try:
        handle = attach(store, run)
    except Exception:  # an engine that cannot be asked, a client that fails: left as it is
        if engine[0] != "local":
            _UNANSWERED.add(engine)
        return close_if_lost(store, run)
    try:
        # The engine first (its words are more precise), then the heartbeat: a job the
        # engine still calls RUNNING whose wrapper stopped answering is a lost node, and is
        # abandoned (its engine asked to stop it).
        (Watched(store, handle) if backend != "local" else handle).get_status()
    except Exception:
        if engine[0] != "local":
            _UNANSWERED.add(engine)
        return close_if_lost(store, run)
    return store.get_run(run.info.run_id)


# Engines (backend, options) that failed to answer in this process: not asked again.
_UNANSWERED: set[tuple[str, str]] = set()
