"""The heartbeat wrapper against a real ``reprorun server`` (issue 18, section 3): the job's log
reaches the server through its artifact proxy while the command runs, in pieces as it grows,
and the UI's log endpoint follows it; the heartbeat goes through MLflow's REST API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from reprorun.tracking.entities import SystemTags
from reprorun.tracking.store import open_store
from tests.integration.server_proc import ServerProcess, server_process

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _ui_log(server: ServerProcess, run_id: str, offset: int = 0) -> dict[str, Any]:
    url = f"{server.url}/ui-api/runs/{run_id}/log?offset={offset}"
    with urllib.request.urlopen(url, timeout=30) as answer:
        return dict(json.load(answer))


def _until(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_the_log_reaches_the_server_while_the_job_runs(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    command = (
        f"echo one; sleep 0.3; echo two >&2; while [ ! -e {gate} ]; do sleep 0.05; done; echo three"
    )
    with server_process(tmp_path / "server") as server:
        store = open_store(server.url)
        run_id = store.create_run("0").info.run_id
        env = {
            **os.environ,
            "PYTHONPATH": SRC,
            "REPRORUN_RUN_ID": run_id,
            "REPRORUN_TRACKING_URI": server.url,
        }
        argv = [sys.executable, "-m", "reprorun.tracking.heartbeat", "--every", "0.2"]
        proc = subprocess.Popen(
            [*argv, "--", "bash", "-c", command], env=env, stdout=subprocess.PIPE
        )
        try:
            first = _until(lambda: (got := _ui_log(server, run_id))["exists"] and got)
            assert first["status"] == "RUNNING"
            assert first["text"] in ("one\n", "one\ntwo\n")
            grown = _until(lambda: "two" in (got := _ui_log(server, run_id))["text"] and got)
            assert grown["text"] == "one\ntwo\n"
            tags = store.get_run(run_id).data.tags
            assert tags[SystemTags.HEARTBEAT].isdigit()
            gate.touch()
            out, _ = proc.communicate(timeout=30)
        finally:
            proc.kill()
        assert (proc.returncode, out) == (0, b"one\ntwo\nthree\n")
        # The page follows from where it was: the end arrives after the command ended.
        rest = _ui_log(server, run_id, grown["offset"])
        assert rest["text"] == "three\n"
