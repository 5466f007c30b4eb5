"""The driver (``run_sweep``): starts every point as ``python -m reprorun.projects.trial`` (the
point's ``RunRequest`` run through the run pipeline, as ``reprorun run`` runs one) in a session of
its own, at most ``max_parallel`` at once in the points' order, so a driver killed outright
leaves its children running: the next driver adopts those still alive and settles the others
from their runs' statuses. Nothing here prints: progress goes to the ``on_event`` callback."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reprorun.errors import ResourceNotFound, SweepError, UserInputError
from reprorun.projects.sweep.pinning import code_changes, current_code, moved_message
from reprorun.projects.sweep.processes import STOP_GRACE_SECONDS, Child, child_alive, status_of_exit
from reprorun.projects.sweep.results import sweep_status, tag_best
from reprorun.projects.sweep.state import (
    PARENT_TAG,
    POLL_SECONDS,
    TAG_ID,
    TAG_ORPHANED,
    TAG_POINT,
    count_statuses,
    describe_point,
    file_lock,
    load_state,
    mutate_state,
    now_ms,
    point_of,
    read_run_id,
    resolve_sweep_id,
    sweep_dir,
)

if TYPE_CHECKING:
    from reprorun.projects.request import RunRequest


@dataclass(frozen=True)
class SweepEvent:
    """What the driver did: ``kind`` is "started", "ended" (a point), or "note"."""

    kind: str
    sweep_id: str
    total: int
    point: dict[str, Any] | None = None
    message: str = ""
    metric: tuple[str, float] | None = None  # the chosen metric of an ended point


def run_sweep(
    sweep_id: str,
    *,
    on_event: Callable[[SweepEvent], None] | None = None,
    allow_new_code: bool = False,
    max_parallel: int | None = None,
    check_code: bool = True,
) -> dict[str, Any]:
    """Drive the sweep until no point is pending or running (or it is stopped).

    Returns ``sweep_status`` of the end, plus ``interrupted``: the signal number that stopped
    this driver, or None. Refuses if another driver runs the sweep, or if its code moved
    (unless ``allow_new_code``)."""
    sweep_id = resolve_sweep_id(sweep_id)
    if max_parallel is not None and max_parallel < 1:
        raise UserInputError(f"--max-parallel must be at least 1, got {max_parallel}.")
    emit = on_event or (lambda _event: None)
    folder = sweep_dir(sweep_id)
    # Patience: `status` and `list` hold this lock for an instant to see if a driver lives.
    with file_lock(folder / "driver.lock", blocking=False, patience=1.0) as got:
        if not got:
            driver = load_state(sweep_id).get("driver") or {}
            where = f" (pid {driver.get('pid')} on {driver.get('host')})" if driver else ""
            raise SweepError(f"Sweep {sweep_id} is being run by another reprorun{where}.")
        return _Driver(sweep_id, emit, allow_new_code, max_parallel, check_code).drive()


class _Driver:
    def __init__(
        self,
        sweep_id: str,
        emit: Callable[[SweepEvent], None],
        allow_new_code: bool,
        max_parallel: int | None,
        check_code: bool,
    ):
        self.sweep_id, self.emit = sweep_id, emit
        self.allow_new_code, self.check_code = allow_new_code, check_code
        self.state = load_state(sweep_id)
        self.spec: dict[str, Any] = self.state["spec"]
        self.total = len(self.state["points"])
        self.max_parallel = max_parallel or int(self.spec["max_parallel"])
        self.children: dict[int, Child] = {}
        self.received: int | None = None
        self.folder = sweep_dir(sweep_id)
        from reprorun.tracking.store import open_store

        self.store = open_store(self.spec["tracking_uri"])

    # -- helpers
    def mutate(self, change: Callable[[dict[str, Any]], None]) -> None:
        self.state = mutate_state(self.sweep_id, change)

    def note(self, message: str) -> None:
        self.emit(SweepEvent("note", self.sweep_id, self.total, message=message))

    def _handle(self, signum: int, _frame: object) -> None:
        if self.received is not None:
            # A second signal: no more grace. Each child (a trial) kills its command at
            # once on its own second signal (the command runs in a session of its own, which
            # killing the child's group would miss).
            for child in self.children.values():
                child.signal(signal.SIGTERM)
        self.received = signum

    @contextlib.contextmanager
    def signals(self) -> Iterator[None]:
        from reprorun._utils import handling_signals

        with handling_signals(self._handle):
            yield

    # -- the run
    def drive(self) -> dict[str, Any]:
        from reprorun.tracking.entities import RunStatus, SystemTags

        if self.check_code:
            self._check_code()
        host, pid = socket.gethostname(), os.getpid()

        def claim(state: dict[str, Any]) -> None:
            state["driver"] = {"host": host, "pid": pid, "started": now_ms()}
            if state["cancelled"]:  # resuming a cancelled sweep: its cancelled points run
                state["cancelled"] = False
                for point in state["points"]:
                    if point["status"] == "cancelled":
                        point["status"] = "pending"

        with self.signals():
            self.mutate(claim)
            parent = self.state["parent_run_id"]
            self.store.update_run(parent, status=RunStatus.RUNNING)
            self.store.set_tag(parent, SystemTags.SUPERVISOR, f"{host}:{pid}")
            try:
                self._reconcile()
                self._loop()
            finally:
                self._stop_children()
                self.mutate(_release)
            self._finish_parent()
        result = sweep_status(self.sweep_id)
        result["interrupted"] = None if self.state["cancelled"] else self.received
        return result

    def _check_code(self) -> None:
        changed = code_changes(self.state)
        if not changed:
            return
        if not self.allow_new_code:
            raise SweepError(moved_message(self.sweep_id, changed, "resume"))
        new = current_code(self.state)
        manifest = new.pop("manifest", None)
        if manifest is not None:
            (self.folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")

        def record(state: dict[str, Any]) -> None:
            state["code_changes"].append({"at": now_ms(), "what": changed, "from": state["code"]})
            state["code"] = new

        self.mutate(record)
        self.note(f"running the remaining points on the new code ({'; '.join(changed)})")

    def _reconcile(self) -> None:
        """Points a dead driver left `running`: adopt live children, settle the others."""
        for point in list(self.state["points"]):
            if point["status"] != "running":
                continue
            index = point["index"]
            run_id = point["run_id"] or read_run_id(self.folder, index)
            if child_alive(point["pid"], point["host"]):
                child = Child(index, int(point["pid"]), None)
                child.run_id = run_id
                self.children[index] = child
                self.note(f"point {index}/{self.total}: adopted its running process {child.pid}")
                continue
            self._settle(index, run_id, None, orphan=True)

    def _loop(self) -> None:
        while True:
            self.state = load_state(self.sweep_id)
            stopping = self.received is not None or self.state["cancelled"]
            if stopping:
                for child in self.children.values():
                    if child.terminated_at is None:
                        child.signal(signal.SIGTERM)
                        child.terminated_at = time.monotonic()
            else:
                self._launch_some()
            for index, child in list(self.children.items()):
                self._watch(child)
                exited, code = child.poll()
                if exited:
                    del self.children[index]
                    self._settle(index, read_run_id(self.folder, index) or child.run_id, code)
                elif (
                    child.terminated_at is not None
                    and time.monotonic() - child.terminated_at > STOP_GRACE_SECONDS
                ):
                    child.signal(signal.SIGKILL)
            pending = any(p["status"] == "pending" for p in self.state["points"])
            if not self.children and (stopping or not pending):
                return
            time.sleep(POLL_SECONDS)

    def _launch_some(self) -> None:
        for point in self.state["points"]:
            if len(self.children) >= self.max_parallel:
                return
            if point["status"] == "pending":
                self._launch(point["index"])

    def _launch(self, index: int) -> None:
        point = point_of(self.state, index)
        run_id_file = self.folder / f"point-{index}.runid"
        run_id_file.unlink(missing_ok=True)
        request_file = self.folder / f"point-{index}.request.json"
        request_file.write_text(self._request(point).to_json(), encoding="utf-8")
        argv = [sys.executable, "-m", "reprorun.projects.trial", str(request_file)]
        argv.append(str(run_id_file))
        log_path = self.folder / f"point-{index}.log"
        cwd = self.spec["cwd"] if Path(self.spec["cwd"]).is_dir() else None
        with open(log_path, "ab") as log:
            log.write(f"==> {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=True,  # a driver killed outright leaves it running
            )
        child = Child(index, proc.pid, proc)
        self.children[index] = child
        host = socket.gethostname()

        def started(state: dict[str, Any]) -> None:
            p = point_of(state, index)
            p.update(
                status="running",
                run_id=None,
                reused=False,
                exit_code=None,
                pid=proc.pid,
                host=host,
                started=now_ms(),
                ended=None,
            )

        self.mutate(started)
        self.emit(
            SweepEvent("started", self.sweep_id, self.total, point=point_of(self.state, index))
        )

    def _request(self, point: Mapping[str, Any]) -> RunRequest:
        """What the point runs: the sweep's project at its pinned code, with the point's
        values, as a child of the sweep's parent run."""
        from reprorun.projects.request import RunRequest

        spec, code = self.spec, self.state["code"]
        return RunRequest(
            spec["uri"],
            spec["entry_point"],
            dict(point["params"]),
            version=code.get("pinned_version") or spec["version"] or None,
            experiment_id=spec["experiment_id"],
            env_manager=spec["env_manager"] or None,
            backend=spec["backend"],
            backend_config=spec["backend_config"] or None,
            reuse=bool(spec["reuse"]),
            tags={
                PARENT_TAG: self.state["parent_run_id"],
                TAG_ID: self.sweep_id,
                TAG_POINT: str(point["index"]),
            },
            run_name=f"{self.sweep_id}-{point['index']}",
            tracking_uri=spec["tracking_uri"],
            **(spec.get("retry") or {}),  # the point's attempts: projects/retry.py
        )

    def _watch(self, child: Child) -> None:
        """Record a child's run id in the state as soon as its run exists (and each retry's
        run as it starts: the file holds the latest attempt's)."""
        run_id = read_run_id(self.folder, child.index)
        if run_id is None or run_id == child.run_id:
            return
        child.run_id = run_id

        def recorded(state: dict[str, Any]) -> None:
            point_of(state, child.index)["run_id"] = run_id

        self.mutate(recorded)

    def _run_by_tags(self, index: int) -> str | None:
        """The newest run of point ``index`` of this sweep that no earlier attempt used."""
        from reprorun.tracking.search import TAG, Clause, format_filter

        of_point = [
            Clause(TAG, TAG_ID, "=", self.sweep_id),
            Clause(TAG, TAG_POINT, "=", str(index)),
        ]
        found = self.store.search_runs(
            [self.spec["experiment_id"]], format_filter(of_point), max_results=10
        )
        earlier = set(point_of(self.state, index).get("attempts") or [])
        return next((r.info.run_id for r in found if r.info.run_id not in earlier), None)

    def _settle(
        self, index: int, run_id: str | None, exit_code: int | None, orphan: bool = False
    ) -> None:
        """A point's process has ended (or was found gone): its status from its exit code,
        else (an adopted or orphaned process) from its run's status."""
        from reprorun.tracking.entities import RunStatus

        if run_id is None:  # killed before it could say: its run may exist all the same
            run_id = self._run_by_tags(index)
        run = None
        if run_id is not None:
            try:
                run = self.store.get_run(run_id)
            except ResourceNotFound:
                run = None
        run_status = run.info.status if run is not None else None
        reused = run is not None and run.data.tags.get(TAG_ID) != self.sweep_id
        if run_id is not None and run_status is RunStatus.RUNNING:
            # Its reprorun process is gone (killed outright, or a reboot): the run never ends.
            killed = exit_code is not None and status_of_exit(exit_code) == "killed"
            ended = RunStatus.KILLED if killed else RunStatus.FAILED
            self.store.update_run(
                run_id, status=ended, end_time=now_ms(), only_if_status=RunStatus.RUNNING
            )
            self.store.set_tag(
                run_id,
                TAG_ORPHANED,
                f"its reprorun process was gone when sweep {self.sweep_id}'s driver looked",
            )
            run_status = None
        if exit_code is not None:
            status = status_of_exit(exit_code)
        elif run_status is RunStatus.FINISHED:
            status = "finished"
        elif run_status is RunStatus.FAILED:
            status = "failed"
        elif run_status is RunStatus.KILLED:
            status = "killed"
        else:
            status = "pending"  # no run, or one that never ended: run the point again
        cancelled = bool(self.state["cancelled"])
        interrupted = self.received is not None and not cancelled
        if status == "killed" and interrupted:
            status = "pending"  # stopped by this driver's interruption: runs again on resume

        def settled(state: dict[str, Any]) -> None:
            p = point_of(state, index)
            if status == "pending":
                if run_id:
                    p["attempts"].append(run_id)
                p.update(status="pending", run_id=None, pid=None, host=None, exit_code=exit_code)
            else:
                p.update(status=status, run_id=run_id, reused=reused, exit_code=exit_code)
                p.update(pid=None, host=None, ended=now_ms())

        self.mutate(settled)
        point = dict(point_of(self.state, index))
        if status == "pending":
            why = "stopped; it runs again on resume" if interrupted else "it runs again"
            if orphan:
                why = "its process was gone; it runs again"
            self.note(f"point {index}/{self.total} {describe_point(point['params'])}: {why}")
            return
        value = None
        metric = self.spec.get("metric")
        if metric and run is not None and metric in run.data.metrics:
            value = (metric, run.data.metrics[metric])
        self.emit(SweepEvent("ended", self.sweep_id, self.total, point=point, metric=value))

    def _stop_children(self) -> None:
        """On the way out (a signal, or an error in this driver): stop what still runs."""
        if not self.children:
            return
        for child in self.children.values():
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while self.children and time.monotonic() < deadline:
            for index, child in list(self.children.items()):
                exited, code = child.poll()
                if exited:
                    del self.children[index]
                    with contextlib.suppress(Exception):
                        self._settle(index, read_run_id(self.folder, index) or child.run_id, code)
            time.sleep(POLL_SECONDS)
        # Still there: a second SIGTERM makes each child kill its command now; then SIGKILL.
        for child in self.children.values():
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and any(not c.poll()[0] for c in self.children.values()):
            time.sleep(POLL_SECONDS)
        for child in self.children.values():
            child.signal(signal.SIGKILL)

    def _finish_parent(self) -> None:
        from reprorun.tracking.entities import RunStatus

        counts = count_statuses(self.state["points"])
        parent = self.state["parent_run_id"]
        if self.state["cancelled"] or counts["pending"] or counts["running"]:
            status = RunStatus.KILLED
        elif counts["failed"] or counts["killed"]:
            status = RunStatus.FAILED
        else:
            status = RunStatus.FINISHED
        self.store.update_run(parent, status=status, end_time=now_ms())
        tag_best(self.store, self.state)


def _release(state: dict[str, Any]) -> None:
    """The driver's last word: no driver; a cancelled sweep's pending points are cancelled."""
    state["driver"] = None
    if state["cancelled"]:
        for point in state["points"]:
            if point["status"] == "pending":
                point["status"] = "cancelled"
