"""A sweep's state: one JSON file per sweep (``<home>/sweeps/<id>.json``), replaced
atomically and changed under a lock (drivers and commands interleave), and its folder
``<home>/sweeps/<id>/``: each point's log, request and run-id file, the lock files and (for a
local folder) the manifest of the project's files."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from reprorun.errors import ResourceNotFound, SweepError

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
def file_lock(path: Path, *, blocking: bool = True, patience: float = 0.0) -> Iterator[bool]:
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


def save_state(state: dict[str, Any]) -> None:
    path = state_path(state["id"])
    state["updated"] = now_ms()
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(state, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    partial.replace(path)


def mutate_state(sweep_id: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Read, change and write the state under its lock (drivers and commands interleave)."""
    with file_lock(sweep_dir(sweep_id) / "state.lock"):
        state = load_state(sweep_id)
        change(state)
        save_state(state)
        return state


def point_of(state: dict[str, Any], index: int) -> dict[str, Any]:
    point: dict[str, Any] = state["points"][index - 1]
    return point


def now_ms() -> int:
    from reprorun.tracking import entities

    return entities.now_ms()


def read_run_id(folder: Path, index: int) -> str | None:
    try:
        text = (folder / f"point-{index}.runid").read_text().strip()
    except FileNotFoundError:
        return None
    return text or None


def describe_point(params: Mapping[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def count_statuses(points: list[dict[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    for point in points:
        counts[point["status"]] += 1
    return counts


def driver_alive(sweep_id: str) -> bool:
    """A driver holds ``driver.lock`` for as long as it lives (released when it dies)."""
    with file_lock(sweep_dir(sweep_id) / "driver.lock", blocking=False) as got:
        return not got
