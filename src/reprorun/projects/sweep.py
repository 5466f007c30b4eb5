"""Parameter sweeps: one parent run, one child run per point.

A sweep's state lives in ``<home>/sweeps/<id>.json`` (written atomically, under a lock), so
``status``, ``resume``, ``cancel`` and ``retry_failed`` work after a crash or a reboot. Its
folder ``<home>/sweeps/<id>/`` holds each point's log, the request it runs and the run-id file
its child writes, the lock files and (for a local folder) the manifest of the project's files.

The driver (``run_sweep``) starts every child as ``python -m reprorun.projects.trial`` (the
point's ``RunRequest`` run through the run pipeline, as ``reprorun run`` runs one) in a session
of its own, so a driver killed outright leaves its children running: the next driver adopts
those still alive and settles the others from their runs' statuses.

Nothing here prints: progress goes to the ``on_event`` callback.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reprorun.errors import (
    ParameterError,
    ParamProblem,
    ResourceNotFound,
    SweepError,
    UserInputError,
)

if TYPE_CHECKING:
    from reprorun.projects.request import RunRequest

FORMAT = 1
STATUSES = ("pending", "running", "finished", "failed", "killed", "cancelled")
DONE = ("finished", "failed", "killed", "cancelled")
TAG_ID = "reprorun.sweep.id"
TAG_POINT = "reprorun.sweep.point"
TAG_POINTS = "reprorun.sweep.points"
TAG_SPEC = "reprorun.sweep.spec"
TAG_BEST = "reprorun.sweep.best"
TAG_BEST_METRIC = "reprorun.sweep.bestMetric"
TAG_ORPHANED = "reprorun.sweep.orphaned"
PARENT_TAG = "mlflow.parentRunId"
POLL_SECONDS = 0.2
STOP_GRACE_SECONDS = 20.0  # the child gives its command 10 s after SIGTERM, then kills it


@dataclass(frozen=True)
class SweepEvent:
    """What the driver did: ``kind`` is "started", "ended" (a point), or "note"."""

    kind: str
    sweep_id: str
    total: int
    point: dict[str, Any] | None = None
    message: str = ""
    metric: tuple[str, float] | None = None  # the chosen metric of an ended point


@dataclass
class Sweep:
    """A sweep as created: its id, parent run and points (see ``sweep_status`` for more)."""

    sweep_id: str
    parent_run_id: str
    points: list[dict[str, str]]
    state_path: Path
    code: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# State: one JSON file per sweep, replaced atomically, mutated under an fcntl lock.


def sweeps_root() -> Path:
    from reprorun.config import home

    return home() / "sweeps"


def state_path(sweep_id: str) -> Path:
    return sweeps_root() / f"{sweep_id}.json"


def sweep_dir(sweep_id: str) -> Path:
    return sweeps_root() / sweep_id


def resolve_sweep_id(sweep_id: str) -> str:
    sweep_id = sweep_id.strip()
    if not sweep_id.startswith("sw-"):
        sweep_id = "sw-" + sweep_id
    name = sweep_id[3:]
    if not name or not all(c in "0123456789abcdef" for c in name):
        raise SweepError(f"{sweep_id!r} is not a sweep id (sw- and hex digits).")
    if state_path(sweep_id).exists():
        return sweep_id
    # A unique prefix is enough, as for run ids.
    found = sorted(p.stem for p in sweeps_root().glob(f"{sweep_id}*.json"))
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise SweepError(f"{sweep_id!r} matches several sweeps: {', '.join(found)}.")
    raise ResourceNotFound(f"No sweep {sweep_id!r} (reprorun sweep list shows them).")


@contextlib.contextmanager
def _file_lock(path: Path, *, blocking: bool = True, patience: float = 0.0) -> Iterator[bool]:
    """An exclusive lock on ``path`` (as the caches use); yields whether it was obtained
    (when not ``blocking``, after trying for ``patience`` seconds)."""
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), mode=0o600)
    try:
        lock.acquire(timeout=-1 if blocking else patience, poll_interval=0.05)
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def load_state(sweep_id: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(state_path(sweep_id).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResourceNotFound(f"No sweep {sweep_id!r}.") from None
    if data.get("format") != FORMAT:
        raise SweepError(f"Sweep {sweep_id}: state format {data.get('format')!r} is unknown.")
    return data


def _save(state: dict[str, Any]) -> None:
    path = state_path(state["id"])
    state["updated"] = _now_ms()
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(state, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    partial.replace(path)


def _mutate(sweep_id: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Read, change and write the state under its lock (drivers and commands interleave)."""
    with _file_lock(sweep_dir(sweep_id) / "state.lock"):
        state = load_state(sweep_id)
        change(state)
        _save(state)
        return state


def _point(state: dict[str, Any], index: int) -> dict[str, Any]:
    point: dict[str, Any] = state["points"][index - 1]
    return point


def _now_ms() -> int:
    from reprorun.tracking.entities import now_ms

    return now_ms()


# --------------------------------------------------------------------------------------------
# Creating a sweep.


def create_sweep(
    uri: str,
    params: list[str],
    *,
    entry_point: str = "main",
    version: str | None = None,
    experiment_name: str | None = None,
    env_manager: str | None = None,
    backend: str = "local",
    backend_config: str | None = None,
    random_count: int | None = None,
    seed: int | None = None,
    max_parallel: int = 1,
    reuse: bool = False,
    metric: str | None = None,
    goal: str = "max",
    tracking_uri: str | None = None,
    cwd: Path | None = None,
    dry_run: bool = False,
) -> Sweep:
    """Validate every point, pin the code, create the parent run and write the state.

    Everything that can be wrong with the input (an expression that does not parse, a value
    outside a parameter's type, choices or range, an unknown entry point, backend or env
    manager) raises before anything is recorded. With ``dry_run`` nothing is recorded at all:
    the returned Sweep has an empty id and parent run.
    """
    from reprorun.backends.registry import get_backend
    from reprorun.envs.registry import get_env_manager
    from reprorun.projects.params import resolve_parameters
    from reprorun.projects.request import load_backend_config
    from reprorun.projects.spec import load_project
    from reprorun.projects.sweep_grammar import expand as expand_points
    from reprorun.projects.sweep_grammar import parse_sweep_arg
    from reprorun.sources import resolve_source

    cwd = (cwd or Path.cwd()).resolve()
    if max_parallel < 1:
        raise UserInputError(f"--max-parallel must be at least 1, got {max_parallel}.")
    if goal not in ("max", "min"):
        raise UserInputError(f"--goal must be max or min, got {goal!r}.")
    if not params:
        raise UserInputError("A sweep needs at least one -P NAME=EXPRESSION.")
    parsed = [parse_sweep_arg(arg) for arg in params]
    points = expand_points(parsed, random_count=random_count, seed=seed)
    if backend_config is not None:
        backend_config = str((cwd / backend_config).resolve())
    get_backend(backend, *load_backend_config(backend_config))
    if env_manager is not None:
        get_env_manager(env_manager)

    source = resolve_source(uri, version=version, cwd=cwd)
    project = load_project(source.directory)
    ep = project.entry_point(entry_point)
    _check_values(ep.parameters, points, cwd, ep.name)
    # The first point as `reprorun run` would resolve it: required parameters, NUL bytes...
    resolve_parameters(
        ep.parameters, points[0], cwd=cwd, project_dir=project.directory, entry_point=ep.name
    )
    code = _pin_code(source)
    if dry_run:
        return Sweep("", "", points, Path(), code)

    from reprorun.config import resolve_tracking
    from reprorun.tracking.store import open_store

    target = resolve_tracking(tracking_uri)
    store = open_store(target.uri)
    from reprorun.projects.request import default_experiment_name

    experiment_id = store.get_or_create_experiment(experiment_name or default_experiment_name())
    sweep_id = _new_id()
    folder = sweep_dir(sweep_id)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = code.pop("manifest", None)
    if manifest is not None:
        (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    spec = {
        "uri": uri,
        "cwd": str(cwd),
        "entry_point": ep.name,
        "version": version,
        "params": list(params),
        "random": random_count,
        "seed": seed,
        "max_parallel": max_parallel,
        "reuse": reuse,
        "metric": metric,
        "goal": goal,
        "experiment_id": experiment_id,
        "env_manager": env_manager,
        "backend": backend,
        "backend_config": backend_config,
        "tracking_uri": target.uri,
    }
    parent = store.create_run(
        experiment_id,
        run_name=f"sweep-{sweep_id}",
        user_id=_user(),
        tags=_parent_tags(sweep_id, spec, code, len(points)),
    )
    state: dict[str, Any] = {
        "format": FORMAT,
        "id": sweep_id,
        "created": _now_ms(),
        "updated": _now_ms(),
        "spec": spec,
        "parent_run_id": parent.info.run_id,
        "code": code,
        "code_changes": [],
        "driver": None,
        "cancelled": False,
        "points": [
            {
                "index": i,
                "params": point,
                "status": "pending",
                "run_id": None,
                "reused": False,
                "exit_code": None,
                "attempts": [],
                "pid": None,
                "host": None,
                "started": None,
                "ended": None,
            }
            for i, point in enumerate(points, start=1)
        ],
    }
    with _file_lock(folder / "state.lock"):
        _save(state)
    return Sweep(sweep_id, parent.info.run_id, points, state_path(sweep_id), code)


def _new_id() -> str:
    while True:
        sweep_id = "sw-" + secrets.token_hex(5)
        if not state_path(sweep_id).exists():
            return sweep_id


def _user() -> str:
    from reprorun._utils import current_user

    return current_user()


def _check_values(
    declared: Mapping[str, Any], points: list[dict[str, str]], cwd: Path, entry_point: str
) -> None:
    """Every distinct value of every declared parameter, checked as `reprorun run` would;
    one error lists every bad value. Undeclared parameters pass through, as in a run."""
    from reprorun.params import CastError

    problems: list[ParamProblem] = []
    seen: set[tuple[str, str]] = set()
    for point in points:
        for name, raw in point.items():
            if (name, raw) in seen:
                continue
            seen.add((name, raw))
            param = declared.get(name)
            if param is None:
                continue
            try:
                param.check(raw, base_dir=cwd)
            except CastError as exc:
                problems.append(ParamProblem(name, exc.expected, raw))
    if problems:
        shown, more = problems[:20], len(problems) - 20
        if more > 0:
            shown.append(ParamProblem("...", f"{more} more bad values", None))
        raise ParameterError(shown, entry_point)


def _pin_code(source: Any) -> dict[str, Any]:
    """What the children run: a git source's commit (they get --version COMMIT); a local
    folder's commit (if any) and content hash (they run the folder in place)."""
    prov = source.provenance
    code: dict[str, Any] = {
        "kind": prov.source_kind,
        "source_name": prov.source_name,
        "commit": prov.git_commit,
        "dirty": prov.git_dirty,
        "archive_sha256": prov.archive_sha256,
        "directory": str(source.directory),
        "tree_hash": None,
        "pinned_version": prov.git_commit if prov.source_kind == "git" else None,
    }
    if prov.source_kind == "local":
        manifest = _manifest(source.directory)
        code["tree_hash"] = _manifest_hash(manifest)
        code["manifest"] = manifest
    return code


def _manifest(directory: Path) -> dict[str, Any]:
    """Each project file, as the fingerprint sees them -> [kind, content hash or link
    target]; unchanged files keep their hash through the fingerprint's cache."""
    from reprorun.projects.fingerprint import HashCache, project_files, tree_entries

    root = directory.resolve()
    cache = HashCache.default()
    try:
        return {
            rel: [kind, content]
            for rel, kind, content in tree_entries(root, project_files(root), cache)
        }
    finally:
        cache.close()


def _manifest_hash(manifest: Mapping[str, Any]) -> str:
    from reprorun.projects.fingerprint import entries_hash

    return entries_hash((rel, *manifest[rel][:2]) for rel in sorted(manifest))


def _parent_tags(
    sweep_id: str, spec: Mapping[str, Any], code: Mapping[str, Any], count: int
) -> dict[str, str]:
    from reprorun.tracking.entities import SystemTags

    described = {k: spec[k] for k in ("params", "random", "seed", "metric", "goal", "reuse")}
    tags = {
        TAG_ID: sweep_id,
        TAG_POINTS: str(count),
        TAG_SPEC: json.dumps(described),
        SystemTags.SOURCE_TYPE: "PROJECT",
        SystemTags.SOURCE_NAME: str(code["source_name"]),
        SystemTags.SOURCE_KIND: str(code["kind"]),
        SystemTags.ENTRY_POINT: str(spec["entry_point"]),
    }
    if code.get("commit"):
        tags[SystemTags.GIT_COMMIT] = str(code["commit"])
    return tags


# --------------------------------------------------------------------------------------------
# Driving a sweep.


def _pid_alive(pid: int | None, host: str | None) -> bool:
    """Whether ``pid`` on ``host`` is a live reprorun process (guards against pid reuse)."""
    if not pid or host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the pid
    return b"reprorun" in cmdline


def _driver_alive(sweep_id: str) -> bool:
    """A driver holds ``driver.lock`` for as long as it lives (released when it dies)."""
    with _file_lock(sweep_dir(sweep_id) / "driver.lock", blocking=False) as got:
        return not got


class _Child:
    """A point's process (``projects.trial``): started here, or adopted from a dead driver."""

    def __init__(self, index: int, pid: int, proc: subprocess.Popen[bytes] | None):
        self.index, self.pid, self.proc = index, pid, proc
        self.run_id: str | None = None
        self.terminated_at: float | None = None

    def poll(self) -> tuple[bool, int | None]:
        """(exited, exit code if known)."""
        if self.proc is not None:
            code = self.proc.poll()
            return code is not None, code
        return not _pid_alive(self.pid, socket.gethostname()), None

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if signum == signal.SIGKILL:
                os.killpg(self.pid, signum)  # the child leads its own session
            else:
                os.kill(self.pid, signum)


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
    with _file_lock(folder / "driver.lock", blocking=False, patience=1.0) as got:
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
        self.children: dict[int, _Child] = {}
        self.received: int | None = None
        self.folder = sweep_dir(sweep_id)
        from reprorun.tracking.store import open_store

        self.store = open_store(self.spec["tracking_uri"])

    # -- helpers
    def mutate(self, change: Callable[[dict[str, Any]], None]) -> None:
        self.state = _mutate(self.sweep_id, change)

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
            state["driver"] = {"host": host, "pid": pid, "started": _now_ms()}
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
            raise SweepError(_moved_message(self.sweep_id, changed, "resume"))
        new = _current_code(self.state)
        manifest = new.pop("manifest", None)
        if manifest is not None:
            (self.folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")

        def record(state: dict[str, Any]) -> None:
            state["code_changes"].append({"at": _now_ms(), "what": changed, "from": state["code"]})
            state["code"] = new

        self.mutate(record)
        self.note(f"running the remaining points on the new code ({'; '.join(changed)})")

    def _reconcile(self) -> None:
        """Points a dead driver left `running`: adopt live children, settle the others."""
        for point in list(self.state["points"]):
            if point["status"] != "running":
                continue
            index = point["index"]
            run_id = point["run_id"] or _read_run_id(self.folder, index)
            if _pid_alive(point["pid"], point["host"]):
                child = _Child(index, int(point["pid"]), None)
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
                    self._settle(index, child.run_id or _read_run_id(self.folder, index), code)
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
        point = _point(self.state, index)
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
        child = _Child(index, proc.pid, proc)
        self.children[index] = child
        host = socket.gethostname()

        def started(state: dict[str, Any]) -> None:
            p = _point(state, index)
            p.update(
                status="running",
                run_id=None,
                reused=False,
                exit_code=None,
                pid=proc.pid,
                host=host,
                started=_now_ms(),
                ended=None,
            )

        self.mutate(started)
        self.emit(SweepEvent("started", self.sweep_id, self.total, point=_point(self.state, index)))

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
        )

    def _watch(self, child: _Child) -> None:
        """Record a child's run id in the state as soon as its run exists."""
        if child.run_id is not None:
            return
        run_id = _read_run_id(self.folder, child.index)
        if run_id is None:
            return
        child.run_id = run_id

        def recorded(state: dict[str, Any]) -> None:
            _point(state, child.index)["run_id"] = run_id

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
        earlier = set(_point(self.state, index).get("attempts") or [])
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
            killed = exit_code is not None and _status_of_exit(exit_code) == "killed"
            ended = RunStatus.KILLED if killed else RunStatus.FAILED
            self.store.update_run(
                run_id, status=ended, end_time=_now_ms(), only_if_status=RunStatus.RUNNING
            )
            self.store.set_tag(
                run_id,
                TAG_ORPHANED,
                f"its reprorun process was gone when sweep {self.sweep_id}'s driver looked",
            )
            run_status = None
        if exit_code is not None:
            status = _status_of_exit(exit_code)
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
            p = _point(state, index)
            if status == "pending":
                if run_id:
                    p["attempts"].append(run_id)
                p.update(status="pending", run_id=None, pid=None, host=None, exit_code=exit_code)
            else:
                p.update(status=status, run_id=run_id, reused=reused, exit_code=exit_code)
                p.update(pid=None, host=None, ended=_now_ms())

        self.mutate(settled)
        point = dict(_point(self.state, index))
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
                        self._settle(index, child.run_id or _read_run_id(self.folder, index), code)
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

        counts = _counts(self.state["points"])
        parent = self.state["parent_run_id"]
        if self.state["cancelled"] or counts["pending"] or counts["running"]:
            status = RunStatus.KILLED
        elif counts["failed"] or counts["killed"]:
            status = RunStatus.FAILED
        else:
            status = RunStatus.FINISHED
        self.store.update_run(parent, status=status, end_time=_now_ms())
        _tag_best(self.store, self.state)


def _release(state: dict[str, Any]) -> None:
    """The driver's last word: no driver; a cancelled sweep's pending points are cancelled."""
    state["driver"] = None
    if state["cancelled"]:
        for point in state["points"]:
            if point["status"] == "pending":
                point["status"] = "cancelled"


def _status_of_exit(code: int) -> str:
    if code == 0:
        return "finished"
    if code < 0 or code > 128:
        return "killed"
    return "failed"


def _read_run_id(folder: Path, index: int) -> str | None:
    try:
        text = (folder / f"point-{index}.runid").read_text().strip()
    except FileNotFoundError:
        return None
    return text or None


def describe_point(params: Mapping[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def _counts(points: list[dict[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    for point in points:
        counts[point["status"]] += 1
    return counts


def _tag_best(store: Any, state: dict[str, Any]) -> None:
    metric, goal = state["spec"].get("metric"), state["spec"].get("goal") or "max"
    if not metric:
        return
    values = _metric_values(store, state["points"], metric)
    best = _best(state["points"], values, goal)
    if best is None:
        return
    run_id = best["run_id"]
    store.set_tags(
        state["parent_run_id"],
        {TAG_BEST: run_id, TAG_BEST_METRIC: f"{metric}={values[run_id]!r} ({goal})"},
    )


def _metric_values(store: Any, points: list[dict[str, Any]], metric: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for point in points:
        run_id = point.get("run_id")
        if point["status"] != "finished" or not run_id:
            continue
        try:
            metrics = store.get_run(run_id).data.metrics
        except ResourceNotFound:
            continue
        if metric in metrics:
            values[run_id] = float(metrics[metric])
    return values


def _best(
    points: list[dict[str, Any]], values: Mapping[str, float], goal: str
) -> dict[str, Any] | None:
    import math

    scored = [
        p for p in points if p.get("run_id") in values and not math.isnan(values[p["run_id"]])
    ]
    if not scored:
        return None
    sign = 1.0 if goal == "max" else -1.0
    # Ties go to the earliest point.
    return max(scored, key=lambda p: (sign * values[p["run_id"]], -p["index"]))


# --------------------------------------------------------------------------------------------
# Moved code.


def _current_code(state: dict[str, Any]) -> dict[str, Any]:
    from reprorun.sources import resolve_source

    spec = state["spec"]
    source = resolve_source(spec["uri"], version=spec["version"], cwd=Path(spec["cwd"]))
    return _pin_code(source)


def code_changes(state: dict[str, Any]) -> list[str]:
    """What changed in the sweep's project since its code was pinned, in words ([] if none)."""
    old = state["code"]
    new = _current_code(state)
    changed: list[str] = []
    if old.get("commit") != new.get("commit"):
        a, b = (old.get("commit") or "(none)")[:12], (new.get("commit") or "(none)")[:12]
        line = f"commit {a} -> {b}"
        files = _commit_files(old, new)
        if files:
            line += f" (files: {_few(files)})"
        changed.append(line)
    if old.get("kind") == "local" and old.get("tree_hash") != new.get("tree_hash"):
        before = _read_manifest(state["id"])
        after = new.get("manifest") or {}
        diffs = [
            f"{rel} ({_file_change(rel, before, after)})"
            for rel in sorted(set(before) | set(after))
            if (before.get(rel) or [None, None])[:2] != (after.get(rel) or [None, None])[:2]
        ]
        changed.append("files " + _few(diffs) if diffs else "the project's files")
    if old.get("archive_sha256") != new.get("archive_sha256"):
        changed.append(f"archive sha256 {old.get('archive_sha256')} -> {new.get('archive_sha256')}")
    return changed


def _file_change(rel: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    if rel not in before:
        return "added"
    return "removed" if rel not in after else "modified"


def _moved_message(sweep_id: str, changed: list[str], command: str) -> str:
    return (
        f"Sweep {sweep_id}: the project's code changed since the sweep started: "
        f"{'; '.join(changed)}. Run `reprorun sweep {command} {sweep_id} --allow-new-code` to "
        "run the remaining points on the new code (the points already done keep their runs)."
    )


def _read_manifest(sweep_id: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((sweep_dir(sweep_id) / "manifest.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data


def _few(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _commit_files(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Files that differ between the two commits (best effort: [] if git cannot tell)."""
    a, b = old.get("commit"), new.get("commit")
    if not a or not b:
        return []
    directory = Path(str(new.get("directory")))
    if new.get("kind") == "git":
        # The snapshot is not a repository; its mirror is two levels up (snapshots/<commit>).
        for parent in directory.parents:
            if (parent / "mirror.git").is_dir():
                directory = parent / "mirror.git"
                break
        else:
            return []
    from reprorun.projects.diff import GitUnavailable, changed_files, find_repository

    try:
        repo = find_repository([directory], [a, b])
        return [f["path"] for f in changed_files(repo, a, b)] if repo is not None else []
    except GitUnavailable:
        return []


# --------------------------------------------------------------------------------------------
# Status, cancel, retry, list.


def sweep_status(
    sweep_id: str, metric: str | None = None, goal: str | None = None
) -> dict[str, Any]:
    """The sweep's spec, driver, counts by status, points (with the chosen metric's latest
    value) and best point. ``metric``/``goal`` default to the sweep's own."""
    from reprorun.tracking.store import open_store

    sweep_id = resolve_sweep_id(sweep_id)
    state = load_state(sweep_id)
    spec = state["spec"]
    metric = metric or spec.get("metric")
    goal = goal or spec.get("goal") or "max"
    if goal not in ("max", "min"):
        raise UserInputError(f"--goal must be max or min, got {goal!r}.")
    store = open_store(spec["tracking_uri"])
    values = _metric_values(store, state["points"], metric) if metric else {}
    best = _best(state["points"], values, goal) if metric else None
    points = []
    for point in state["points"]:
        shown = {k: point[k] for k in ("index", "params", "status", "run_id", "reused")}
        shown["exit_code"] = point.get("exit_code")
        shown["attempts"] = list(point.get("attempts") or [])
        shown["log"] = str(sweep_dir(sweep_id) / f"point-{point['index']}.log")
        if metric:
            shown["metric"] = values.get(point.get("run_id") or "")
        points.append(shown)
    driver = state.get("driver")
    live = bool(driver) and _driver_alive(sweep_id)
    parent_status = None
    with contextlib.suppress(ResourceNotFound):
        parent_status = store.get_run(state["parent_run_id"]).info.status.value
    return {
        "sweep_id": sweep_id,
        "parent_run_id": state["parent_run_id"],
        "parent_status": parent_status,
        "created": state["created"],
        "updated": state["updated"],
        "spec": spec,
        "code": state["code"],
        "code_changes": state["code_changes"],
        "driver": {**driver, "alive": live} if driver else None,
        "cancelled": state["cancelled"],
        "counts": _counts(state["points"]),
        "total": len(points),
        "metric": metric,
        "goal": goal,
        "best": (
            {
                "index": best["index"],
                "run_id": best["run_id"],
                "params": best["params"],
                "value": values[best["run_id"]],
            }
            if best
            else None
        ),
        "points": points,
        "state_file": str(state_path(sweep_id)),
    }


def cancel_sweep(sweep_id: str) -> dict[str, Any]:
    """Mark the sweep cancelled. A live driver is sent SIGTERM (it stops its children, marks
    pending points cancelled and the parent KILLED); without one, that is done here, and the
    children a killed driver left running are sent SIGTERM."""
    from reprorun.tracking.entities import RunStatus
    from reprorun.tracking.store import open_store

    sweep_id = resolve_sweep_id(sweep_id)
    state = _mutate(sweep_id, lambda s: s.update(cancelled=True))
    driver = state.get("driver")
    if driver and _driver_alive(sweep_id):
        if driver.get("host") != socket.gethostname():
            raise SweepError(
                f"Sweep {sweep_id} is run on {driver.get('host')}: it stops there at its next "
                "check (it was marked cancelled)."
            )
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(driver["pid"]), signal.SIGTERM)
        _wait_for_driver(sweep_id, timeout=STOP_GRACE_SECONDS + 10)
        return sweep_status(sweep_id)
    # No driver: settle it here, under the driver lock so none starts meanwhile.
    with _file_lock(sweep_dir(sweep_id) / "driver.lock", blocking=False, patience=1.0) as got:
        if not got:
            raise SweepError(f"Sweep {sweep_id}: a driver started meanwhile; cancel again.")
        store = open_store(state["spec"]["tracking_uri"])
        for point in state["points"]:
            if point["status"] == "running" and _pid_alive(point["pid"], point["host"]):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(point["pid"]), signal.SIGTERM)

        def cancelled(s: dict[str, Any]) -> None:
            for point in s["points"]:
                if point["status"] == "pending":
                    point["status"] = "cancelled"
                elif point["status"] == "running":
                    point.update(status="killed", ended=_now_ms(), pid=None, host=None)
                    point["run_id"] = point["run_id"] or _read_run_id(
                        sweep_dir(sweep_id), point["index"]
                    )

        _mutate(sweep_id, cancelled)
        store.update_run(
            state["parent_run_id"],
            status=RunStatus.KILLED,
            end_time=_now_ms(),
        )
    return sweep_status(sweep_id)


def _wait_for_driver(sweep_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _driver_alive(sweep_id):
        time.sleep(POLL_SECONDS)


def retry_failed(sweep_id: str, *, allow_new_code: bool = False) -> int:
    """Failed and killed points back to pending (their runs stay, listed as attempts);
    returns how many. The caller then runs the sweep again (``run_sweep``). Refused, with
    nothing changed, when the code moved and not ``allow_new_code``."""
    sweep_id = resolve_sweep_id(sweep_id)
    if _driver_alive(sweep_id):
        raise SweepError(f"Sweep {sweep_id} is running; retry its failed points once it ends.")
    if not allow_new_code:
        changed = code_changes(load_state(sweep_id))
        if changed:
            raise SweepError(_moved_message(sweep_id, changed, "retry-failed"))
    count = 0

    def again(state: dict[str, Any]) -> None:
        nonlocal count
        for point in state["points"]:
            if point["status"] in ("failed", "killed"):
                if point["run_id"]:
                    point["attempts"].append(point["run_id"])
                point.update(status="pending", run_id=None, reused=False, exit_code=None)
                count += 1

    _mutate(sweep_id, again)
    return count


def list_sweeps() -> list[dict[str, Any]]:
    """Every sweep, newest first: id, creation time, project, counts, driver."""
    found = []
    root = sweeps_root()
    if not root.is_dir():
        return []
    for path in root.glob("sw-*.json"):
        try:
            state = load_state(path.stem)
        except (ValueError, ResourceNotFound, SweepError):
            continue
        driver = state.get("driver")
        found.append(
            {
                "sweep_id": state["id"],
                "created": state["created"],
                "uri": state["spec"]["uri"],
                "entry_point": state["spec"]["entry_point"],
                "parent_run_id": state["parent_run_id"],
                "total": len(state["points"]),
                "counts": _counts(state["points"]),
                "cancelled": state["cancelled"],
                "running": bool(driver) and _driver_alive(state["id"]),
            }
        )
    return sorted(found, key=lambda s: s["created"], reverse=True)
