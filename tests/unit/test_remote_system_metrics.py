"""Issue 18, section 4, remote part: the remote job's wrapper samples the system metrics of
the node and of the command's process tree (a real child process against a real store), under
the names of a local run's, and stores the tree's peak memory; off with the run's switch."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from reprorun.config import resolve_tracking
from reprorun.tracking.entities import SystemTags
from reprorun.tracking.store import open_store
from reprorun.tracking.store.base import TrackingStore

SRC = str(Path(__file__).resolve().parents[2] / "src")
# 60 MB held for a while by a grandchild of the wrapper (bash, then python).
HOLD = (
    f'{sys.executable} -c \'import time; b = bytearray(60 * 10**6); b[::4096] = b"x" * '
    "len(b[::4096]); time.sleep(1.2)'"
)


def _wrapper(run_id: str, options: list[str], command: str) -> subprocess.CompletedProcess[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": SRC,
        "REPRORUN_RUN_ID": run_id,
        "REPRORUN_TRACKING_URI": resolve_tracking().uri,
    }
    argv = [sys.executable, "-m", "reprorun.tracking.heartbeat", "--every", "0.2", *options]
    return subprocess.run(
        [*argv, "--", "bash", "-c", command], env=env, capture_output=True, timeout=30
    )


def _system_metrics(store: TrackingStore, run_id: str) -> dict[str, float]:
    metrics = store.get_run(run_id).data.metrics
    return {key: value for key, value in metrics.items() if key.startswith("system/")}


def test_the_wrapper_logs_the_system_metrics_and_the_peak_memory(home: Path) -> None:
    store = open_store()
    run_id = store.create_run("0").info.run_id
    started = time.monotonic()
    done = _wrapper(run_id, ["--system-metrics", "0.3"], HOLD)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 20
    metrics = _system_metrics(store, run_id)
    for name in (
        "system/cpu_utilization_percentage",
        "system/system_memory_usage_megabytes",
        "system/disk_usage_percentage",
        "system/process_memory_rss_megabytes",
        "system/process_cpu_percentage",
        "system/process_threads",
    ):
        assert name in metrics, sorted(metrics)
    # one batch per interval: every name at the same steps 0, 1, ...
    history = store.get_metric_history(run_id, "system/process_threads")
    assert [m.step for m in history] == list(range(len(history)))
    assert len(history) >= 2
    tags = store.get_run(run_id).data.tags
    assert float(tags[SystemTags.PEAK_MEMORY]) >= 60  # MB: the grandchild's buffer
    assert SystemTags.HEARTBEAT in tags  # the heartbeats go on beside them
    assert done.stderr == b""


def test_the_system_metrics_are_off_with_the_runs_switch(home: Path) -> None:
    store = open_store()
    for options in ([], ["--system-metrics", "0"]):
        run_id = store.create_run("0").info.run_id
        done = _wrapper(run_id, options, "sleep 0.8")
        assert done.returncode == 0, done.stderr
        assert _system_metrics(store, run_id) == {}
        tags = store.get_run(run_id).data.tags
        assert SystemTags.PEAK_MEMORY not in tags
        assert SystemTags.HEARTBEAT in tags  # the wrapper itself ran


def test_the_shell_line_passes_the_switch_to_the_wrapper(home: Path, tmp_path: Path) -> None:
    from reprorun.backends.heartbeat import wrapped

    store = open_store()
    run_id = store.create_run("0").info.run_id
    env = {
        **os.environ,
        "PYTHONPATH": SRC,
        "REPRORUN_RUN_ID": run_id,
        "REPRORUN_TRACKING_URI": resolve_tracking().uri,
    }
    fake = tmp_path / "bin"  # python3 here: this interpreter, with the checkout's client
    fake.mkdir()
    (fake / "python3").symlink_to(sys.executable)
    env["PATH"] = f"{fake}:{env['PATH']}"
    line = wrapped(HOLD, 0.2, exec_=False, metrics=0.3)
    assert "--every 0.2 --system-metrics 0.3 -- bash -c" in line
    done = subprocess.run(["sh", "-c", line], env=env, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "system/process_memory_rss_megabytes" in _system_metrics(store, run_id)
    assert float(store.get_run(run_id).data.tags[SystemTags.PEAK_MEMORY]) >= 60
    assert "--system-metrics" not in wrapped("true", 0.2)  # the switch off: no flag


def test_each_backend_passes_the_runs_switch(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reprorun.backends.base import LaunchSpec
    from reprorun.backends.databricks.launcher import command_argv
    from reprorun.backends.databricks.payload import launcher_parameters
    from reprorun.backends.heartbeat import metrics_interval
    from reprorun.backends.kubernetes.manifest import job_manifest
    from reprorun.backends.ray.backend import entrypoint
    from reprorun.backends.slurm.options import SlurmBackendConfig
    from reprorun.backends.slurm.script import render_script

    monkeypatch.setenv("REPRORUN_SYSTEM_METRICS_INTERVAL", "7")
    on = cast(LaunchSpec, SimpleNamespace(system_metrics=True))  # all it reads
    off = cast(LaunchSpec, SimpleNamespace(system_metrics=False))
    assert (metrics_interval(on), metrics_interval(off)) == (7.0, None)

    flag = "--every 15 --system-metrics 7 -- bash -c"
    assert flag in entrypoint("echo hi", "", 15.0, 7.0)
    assert "--system-metrics" not in entrypoint("echo hi", "", 15.0, None)
    template = {"spec": {"template": {"spec": {"containers": [{"name": "x"}]}}}}
    for metrics in (7.0, None):
        manifest = job_manifest(
            template,
            name="n",
            container="c",
            image="i",
            command="echo hi",
            workdir="/w",
            env={},
            namespace="ns",
            heartbeat=15.0,
            metrics=metrics,
        )
        command = manifest["spec"]["template"]["spec"]["containers"][0]["command"][2]
        assert (flag in command) is (metrics is not None)
        script = render_script(
            SlurmBackendConfig(),
            run_id="0" * 32,
            folder=tmp_path,
            command="echo hi",
            workdir=tmp_path,
            env={},
            heartbeat=15.0,
            metrics=metrics,
        )
        assert (flag in script) is (metrics is not None)
    parameters = launcher_parameters("/p", "/c", "", "echo hi", {}, 15.0, 7.0)
    assert parameters[-2:] == ["--heartbeat=15", "--system-metrics=7"]
    assert "--system-metrics" not in " ".join(launcher_parameters("/p", "/c", "", "x", {}, 15.0))
    env = {**os.environ, "PYTHONPATH": SRC}
    assert command_argv("echo hi", "15", str(tmp_path), env, "7") == [
        sys.executable,
        *("-m", "reprorun.tracking.heartbeat", "--every", "15", "--system-metrics", "7", "--"),
        *("bash", "-c", "echo hi"),
    ]
