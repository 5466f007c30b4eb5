"""System metrics of real local runs: `reprorun run` samples the machine and the command's
process tree under MLflow's names while the command runs, and keeps its peak memory."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from reprorun.config import resolve_tracking
from reprorun.tracking.entities import SystemTags
from reprorun.tracking.store import open_store
from tests.conftest import make_project, reprorun_cli

# ~100 MB written (so resident), 0.6 s of CPU, then alive long enough for several samples.
WORK = """
import time
data = b"x" * 100_000_000
while time.process_time() < 0.6:
    pass
time.sleep(1.5)
"""
MACHINE = {
    "system/cpu_utilization_percentage",
    "system/system_memory_usage_megabytes",
    "system/system_memory_usage_percentage",
    "system/disk_usage_percentage",
    "system/disk_usage_megabytes",
    "system/disk_available_megabytes",
    "system/network_receive_megabytes",
    "system/network_transmit_megabytes",
}
TREE = {
    "system/process_cpu_percentage",
    "system/process_memory_rss_megabytes",
    "system/process_memory_vms_megabytes",
    "system/process_memory_percentage",
    "system/process_threads",
}


def run_once(tmp_path: Path, *options: str) -> dict:
    project = make_project(
        tmp_path / "project",
        "name: work\nentry_points:\n  main:\n    command: python work.py\n",
        {"work.py": WORK},
    )
    env = {**os.environ, "REPRORUN_SYSTEM_METRICS_INTERVAL": "0.25"}
    result = reprorun_cli("run", str(project), "--env-manager", "local", *options, env=env)
    assert result.returncode == 0, result.stderr
    listing = reprorun_cli("runs", "list", "--json")
    (run,) = json.loads(listing.stdout)
    return run


@pytest.mark.slow
def test_a_local_run_records_system_metrics_and_its_peak_memory(home: Path, tmp_path: Path) -> None:
    run = run_once(tmp_path)
    metrics, tags = run["data"]["metrics"], run["data"]["tags"]
    assert set(metrics) >= MACHINE | TREE
    assert not any(k.startswith("system/gpu_") for k in metrics)  # no nvidia-smi here
    for key in ("cpu_utilization_percentage", "system_memory_usage_percentage"):
        assert 0 <= metrics[f"system/{key}"] <= 100
    assert 0 < metrics["system/disk_usage_percentage"] < 100
    assert metrics["system/disk_available_megabytes"] > 0
    assert metrics["system/network_receive_megabytes"] >= 0
    # The tree is the python command (bash execs it): its 100 MB, one thread.
    assert 100 <= metrics["system/process_memory_rss_megabytes"] < 400
    assert metrics["system/process_threads"] >= 1
    assert 100 <= float(tags[SystemTags.PEAK_MEMORY]) < 400

    store = open_store(resolve_tracking().uri)
    run_id = run["info"]["run_id"]
    history = store.get_metric_history(run_id, "system/cpu_utilization_percentage")
    assert len(history) >= 4  # every 0.25 s for ~2 s
    assert [m.step for m in history] == list(range(len(history)))
    cpu = store.get_metric_history(run_id, "system/process_cpu_percentage")
    assert all(0 <= m.value <= 100 * os.cpu_count() for m in cpu)  # type: ignore[operator]
    # Summed over time, the samples account for the command's CPU time (>= 0.6 s), whatever
    # else the machine does meanwhile (each covers the time since the one before it).
    times = [cpu[0].timestamp - 250] + [m.timestamp for m in cpu]
    seconds = sum(
        m.value / 100 * (t - before) / 1000
        for m, before, t in zip(cpu, times, times[1:], strict=False)
    )
    assert 0.4 < seconds < 3, seconds


@pytest.mark.slow
def test_no_system_metrics_records_none(home: Path, tmp_path: Path) -> None:
    run = run_once(tmp_path, "--no-system-metrics")
    assert not [k for k in run["data"]["metrics"] if k.startswith("system/")]
    assert SystemTags.PEAK_MEMORY not in run["data"]["tags"]


@pytest.mark.slow
def test_a_detached_run_records_them_from_its_supervisor(home: Path, tmp_path: Path) -> None:
    run_id = run_once(tmp_path, "--detach")["info"]["run_id"]
    store = open_store(resolve_tracking().uri)
    deadline = time.monotonic() + 60
    while not store.get_run(run_id).info.status.is_terminal and time.monotonic() < deadline:
        time.sleep(0.1)
    done = store.get_run(run_id)
    assert done.info.status.name == "FINISHED"
    assert set(done.data.metrics) >= MACHINE | TREE
    assert float(done.data.tags[SystemTags.PEAK_MEMORY]) >= 100
