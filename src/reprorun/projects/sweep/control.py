"""Commands on a sweep that is not being driven from here: cancel it, send its failed points
back to pending."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from typing import Any

from reprorun.errors import SweepError
from reprorun.projects.sweep.pinning import code_changes, moved_message
from reprorun.projects.sweep.processes import STOP_GRACE_SECONDS, child_alive
from reprorun.projects.sweep.results import sweep_status
from reprorun.projects.sweep.state import (
    POLL_SECONDS,
    driver_alive,
    file_lock,
    load_state,
    mutate_state,
    now_ms,
    read_run_id,
    resolve_sweep_id,
    sweep_dir,
)


def cancel_sweep(sweep_id: str) -> dict[str, Any]:
    """Mark the sweep cancelled. A live driver is sent SIGTERM (it stops its children, marks
    pending points cancelled and the parent KILLED); without one, that is done here, and the
    children a killed driver left running are sent SIGTERM."""
    from reprorun.tracking.entities import RunStatus
    from reprorun.tracking.store import open_store

    sweep_id = resolve_sweep_id(sweep_id)
    state = mutate_state(sweep_id, lambda s: s.update(cancelled=True))
    driver = state.get("driver")
    if driver and driver_alive(sweep_id):
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
    with file_lock(sweep_dir(sweep_id) / "driver.lock", blocking=False, patience=1.0) as got:
        if not got:
            raise SweepError(f"Sweep {sweep_id}: a driver started meanwhile; cancel again.")
        store = open_store(state["spec"]["tracking_uri"])
        for point in state["points"]:
            if point["status"] == "running" and child_alive(point["pid"], point["host"]):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(point["pid"]), signal.SIGTERM)

        def cancelled(s: dict[str, Any]) -> None:
            for point in s["points"]:
                if point["status"] == "pending":
                    point["status"] = "cancelled"
                elif point["status"] == "running":
                    point.update(status="killed", ended=now_ms(), pid=None, host=None)
                    point["run_id"] = point["run_id"] or read_run_id(
                        sweep_dir(sweep_id), point["index"]
                    )

        mutate_state(sweep_id, cancelled)
        store.update_run(
            state["parent_run_id"],
            status=RunStatus.KILLED,
            end_time=now_ms(),
        )
    return sweep_status(sweep_id)


def _wait_for_driver(sweep_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and driver_alive(sweep_id):
        time.sleep(POLL_SECONDS)


def retry_failed(sweep_id: str, *, allow_new_code: bool = False) -> int:
    """Failed and killed points back to pending (their runs stay, listed as attempts);
    returns how many. The caller then runs the sweep again (``run_sweep``). Refused, with
    nothing changed, when the code moved and not ``allow_new_code``."""
    sweep_id = resolve_sweep_id(sweep_id)
    if driver_alive(sweep_id):
        raise SweepError(f"Sweep {sweep_id} is running; retry its failed points once it ends.")
    if not allow_new_code:
        changed = code_changes(load_state(sweep_id))
        if changed:
            raise SweepError(moved_message(sweep_id, changed, "retry-failed"))
    count = 0

    def again(state: dict[str, Any]) -> None:
        nonlocal count
        for point in state["points"]:
            if point["status"] in ("failed", "killed"):
                if point["run_id"]:
                    point["attempts"].append(point["run_id"])
                point.update(status="pending", run_id=None, reused=False, exit_code=None)
                count += 1

    mutate_state(sweep_id, again)
    return count
