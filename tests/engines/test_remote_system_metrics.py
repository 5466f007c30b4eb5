"""Issue 18, section 4, remote part, on a real engine (a single-node Slurm on this machine):
the job's wrapper logs the system/* metrics of the node and of the command's process tree, and
its peak memory, through a real ``reprorun server``; ``system_metrics=False`` turns them off."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reprorun.projects.launch import run_request
from reprorun.projects.request import RunRequest
from reprorun.tracking.entities import RunStatus, SystemTags
from reprorun.tracking.store import open_store
from tests.conftest import make_project
from tests.integration.server_proc import server_process

# 60 MB held for 3 s by the command's python (a grandchild of the wrapper).
HOLD = (
    'python -c \'import time; b = bytearray(60 * 10**6); b[::4096] = b"x" * len(b[::4096]); '
    "time.sleep(3)'"
)


@pytest.mark.slow
def test_a_slurm_job_logs_system_metrics_and_its_peak_memory(
    slurm_cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPRORUN_HEARTBEAT_INTERVAL", "0.5")
    monkeypatch.setenv("REPRORUN_SYSTEM_METRICS_INTERVAL", "0.5")
    project = make_project(
        tmp_path / "p", f"entry_points:\n  main:\n    command: {json.dumps(HOLD)}\n"
    )
    with server_process(tmp_path / "server") as server:
        runs = {}
        for switch in (True, False):
            request = RunRequest(
                str(project),
                "main",
                {},
                backend="slurm",
                backend_config={"partition": slurm_cluster, "time": "5"},
                env_manager="local",
                tracking_uri=server.url,
                synchronous=True,
                system_metrics=switch,
            )
            submitted = run_request(request, echo=False)
            runs[switch] = submitted.run_id
        store = open_store(server.url)
        on = store.get_run(runs[True])
        assert on.info.status is RunStatus.FINISHED
        names = {key for key in on.data.metrics if key.startswith("system/")}
        assert {
            "system/cpu_utilization_percentage",
            "system/system_memory_usage_megabytes",
            "system/process_memory_rss_megabytes",
            "system/process_cpu_percentage",
        } <= names, names
        assert on.data.metrics["system/process_memory_rss_megabytes"] >= 60
        assert float(on.data.tags[SystemTags.PEAK_MEMORY]) >= 60
        off = store.get_run(runs[False])
        assert off.info.status is RunStatus.FINISHED
        assert not [key for key in off.data.metrics if key.startswith("system/")]
        assert SystemTags.PEAK_MEMORY not in off.data.tags
        assert SystemTags.HEARTBEAT in off.data.tags  # the wrapper ran, without sampling
