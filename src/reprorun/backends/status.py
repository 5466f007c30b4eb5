"""Any run's job, whatever its backend: the handle behind `reprorun runs status|logs|kill`,
and ``refresh``, which closes a run whose job ended (or whose supervisor died) unnoticed."""

from __future__ import annotations

import json

from reprorun._utils import owner_is_gone
from reprorun.backends.base import CONFIG_TAG, JOB_ID_TAG, SubmittedRun, get_backend
from reprorun.errors import ReprorunError
from reprorun.tracking.entities import Run, RunStatus, SystemTags, now_ms
from reprorun.tracking.store.base import TrackingStore


def attach(store: TrackingStore, run: Run) -> SubmittedRun:
    """The handle of ``run``'s job, rebuilt from its tags by the backend that ran it."""
    tags = run.data.tags
    name = tags.get(SystemTags.BACKEND) or "local"
    if name != "local" and not tags.get(JOB_ID_TAG):
        return RecordedRun(run, store)  # it failed before its job was submitted
    try:
        options = json.loads(tags.get(CONFIG_TAG) or "{}")
    except ValueError:
        options = {}
    handle = get_backend(name, options).attach(run, store)
    handle.backend = name
    return handle


class RecordedRun(SubmittedRun):
    """A run with no job to ask: what the store recorded is all there is."""

    def __init__(self, run: Run, store: TrackingStore):
        self._run = run
        self.store = store

    @property
    def run_id(self) -> str:
        return self._run.info.run_id

    def get_status(self) -> RunStatus:
        return self.store.get_run(self.run_id).info.status

    def wait(self) -> bool:
        return self.get_status() is RunStatus.FINISHED

    def cancel(self, force: bool = False) -> None:
        if not self.get_status().is_terminal:
            self.store.update_run(self.run_id, status=RunStatus.KILLED, end_time=now_ms())

    def logs(self) -> bytes:
        from reprorun.backends.job import stored_log

        return stored_log(self._run.info.artifact_uri, getattr(self.store, "uri", None)) or b""


def refresh(store: TrackingStore, run: Run, *, engines: bool = True) -> Run:
    """``run`` as it is now. A run still RUNNING (or SCHEDULED) in the store is checked
    against its job: ended jobs and dead supervisors are recorded first. An engine that
    cannot be asked leaves the run as it is. ``engines=False`` checks only local runs (a
    look at /proc, no network: the server does this on every read)."""
    if run.info.status.is_terminal:
        return run
    tags = run.data.tags
    if (tags.get(SystemTags.BACKEND) or "local") == "local":
        if owner_is_gone(tags.get(SystemTags.SUPERVISOR, "")) is not True:
            return run  # its supervisor lives (or is elsewhere, or unknown): trust the store
    elif not engines:
        return run
    try:
        attach(store, run).get_status()
    except ReprorunError:
        return run
    return store.get_run(run.info.run_id)
