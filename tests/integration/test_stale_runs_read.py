"""A local run whose supervisor died is closed when it is read through MLflow's API, so nothing
reads as RUNNING forever. The API lives in the tracking layer, which never asks a backend: the
check is passed in by whoever builds the API (``reprorun server``, the runner for a run's own
endpoint), and an API built without one shows runs as stored."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

from reprorun._utils import process_identity
from reprorun.tracking.entities import Run, RunStatus, SystemTags
from reprorun.tracking.store import close_stores, open_store
from tests.integration.server_proc import server_process
from tests.integration.test_server import call, create_run, ok


def _dead_identity() -> str:
    """The identity (host:pid:start) of a process that has exited."""
    process = subprocess.Popen(["sleep", "60"])
    identity = process_identity(process.pid)
    process.kill()
    process.wait()
    return identity


def test_the_server_closes_a_run_whose_supervisor_died(tmp_path: Path) -> None:
    with server_process(tmp_path) as server:
        read, searched = create_run(server), create_run(server)
        for run_id in (read, searched):
            tag = {"run_id": run_id, "key": SystemTags.SUPERVISOR, "value": _dead_identity()}
            ok(call(server, "POST", "runs/set-tag", tag))
        got = ok(call(server, "GET", "runs/get", query={"run_id": read}))["run"]
        assert got["info"]["status"] == "FAILED"
        found = ok(call(server, "POST", "runs/search", {"experiment_ids": ["0"]}))["runs"]
        assert {r["info"]["run_id"]: r["info"]["status"] for r in found} == {
            read: "FAILED",
            searched: "FAILED",
        }


def test_an_api_without_a_refresh_shows_runs_as_stored(home: Path) -> None:
    from reprorun.tracking.mlflow_api.api import MlflowApi
    from reprorun.tracking.mlflow_api.context import ArtifactUris

    store = open_store()
    try:
        run_id = store.create_run("0").info.run_id
        store.set_tag(run_id, SystemTags.SUPERVISOR, _dead_identity())
        api = MlflowApi(store, ArtifactUris("", proxied=False))
        status, body = api.handle("GET", "/api/2.0/mlflow/runs/get", {"run_id": [run_id]}, b"")
        assert status == 200
        assert body["run"]["info"]["status"] == "RUNNING"
    finally:
        close_stores()


def test_a_runs_endpoint_reads_runs_through_the_refresh_it_was_given(home: Path) -> None:
    from reprorun.tracking.endpoint.sidecar import Sidecar

    store = open_store()
    run_id = store.create_run("0").info.run_id
    seen: list[str] = []

    def refresh(run: Run) -> Run:
        seen.append(run.info.run_id)
        store.update_run(run.info.run_id, status=RunStatus.FAILED)
        return store.get_run(run.info.run_id)

    endpoint = Sidecar(store, run_id, refresh)
    try:
        request = urllib.request.Request(
            f"{endpoint.url}/api/2.0/mlflow/runs/get?run_id={run_id}",
            headers={"Authorization": f"Bearer {endpoint.token}"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            body = json.load(response)
        assert seen == [run_id]
        assert body["run"]["info"]["status"] == "FAILED"
    finally:
        endpoint.close()
        close_stores()
