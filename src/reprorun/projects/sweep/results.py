"""What a sweep shows: its status (counts, points with the chosen metric, the best point),
the list of sweeps, and the best run tagged on the parent."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from reprorun.errors import ResourceNotFound, SweepError, UserInputError
from reprorun.projects.sweep.state import (
    TAG_BEST,
    TAG_BEST_METRIC,
    count_statuses,
    driver_alive,
    load_state,
    resolve_sweep_id,
    state_path,
    sweep_dir,
    sweeps_root,
)


def tag_best(store: Any, state: dict[str, Any]) -> None:
    metric, goal = state["spec"].get("metric"), state["spec"].get("goal") or "max"
    if not metric:
        return
    values = metric_values(store, state["points"], metric)
    best = best_point(state["points"], values, goal)
    if best is None:
        return
    run_id = best["run_id"]
    store.set_tags(
        state["parent_run_id"],
        {TAG_BEST: run_id, TAG_BEST_METRIC: f"{metric}={values[run_id]!r} ({goal})"},
    )


def metric_values(store: Any, points: list[dict[str, Any]], metric: str) -> dict[str, float]:
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


def best_point(
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
    values = metric_values(store, state["points"], metric) if metric else {}
    best = best_point(state["points"], values, goal) if metric else None
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
    live = bool(driver) and driver_alive(sweep_id)
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
        "counts": count_statuses(state["points"]),
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
                "counts": count_statuses(state["points"]),
                "cancelled": state["cancelled"],
                "running": bool(driver) and driver_alive(state["id"]),
            }
        )
    return sorted(found, key=lambda s: s["created"], reverse=True)
