"""The model registry with the real MLflow client against ``reprorun server``, on SQLite and
PostgreSQL: ``mlflow.register_model``, ``MlflowClient``'s registry calls,
``mlflow.pyfunc.load_model("models:/iris@champion")``; then reprorun's own side (the REST
store, the resolver, ``reprorun models``) reads and adds to what the client registered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reprorun.tracking.models import model_dir
from reprorun.tracking.registry import register_version, resolve_model_uri
from reprorun.tracking.store import open_store
from tests.integration.mlflow_env import CLIENT_TIMEOUT, MLFLOW_VERSION, client_python
from tests.integration.mlflow_env import tracking_server as sqlite_server
from tests.integration.server_proc import server_process

SCRIPT = Path(__file__).with_name("mlflow_registry_client.py")
Json = dict[str, Any]


@pytest.fixture(scope="module")
def mlflow_python() -> Path:
    return client_python()


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "sqlite":
        (tmp_path / "server").mkdir()
        with sqlite_server(tmp_path / "server") as running:
            yield running
    else:
        url = request.getfixturevalue("postgres_url")
        with server_process(tmp_path / "server", store_uri=url) as running:
            yield running


def run_scenario(python: Path, server: Any, work: Path) -> Json:
    work.mkdir(parents=True, exist_ok=True)
    report = work / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPRORUN_", "MLFLOW_"))}
    env.update(
        MLFLOW_TRACKING_URI=server.url,
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        MLFLOW_HTTP_REQUEST_TIMEOUT="60",
    )
    done = subprocess.run(
        [str(python), str(SCRIPT), str(report)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
    )
    if done.returncode != 0 or not report.exists():
        raise AssertionError(
            f"The MLflow registry scenario failed ({done.returncode}).\n--- stdout\n"
            f"{done.stdout}\n--- stderr\n{done.stderr}\n--- server log\n{server.output()}"
        )
    found: Json = json.loads(report.read_text())
    return found


def reprorun_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reprorun", *args], capture_output=True, text=True, timeout=120
    )


def test_the_mlflow_client_registers_aliases_and_loads_models(
    mlflow_python: Path, server: Any, tmp_path: Path
) -> None:
    got = run_scenario(mlflow_python, server, tmp_path / "client")
    assert got["mlflow_version"] == MLFLOW_VERSION
    run_id, model_id = got["run_id"], got["model_id"]

    first, second = got["registered"]
    assert (first["name"], first["version"], first["status"]) == ("iris", "1", "READY")
    assert first["run_id"] == run_id
    assert (second["version"], second["run_id"]) == ("2", run_id)
    assert second["tags"] == {"from": "model-uri"}
    # The server links the logged model to its versions (the client adds its own entries).
    linked = json.loads(got["logged_model_versions"])
    assert {"name": "iris", "version": 1} in linked and {"name": "iris", "version": 2} in linked
    assert (got["duplicate"], got["missing"], got["missing_version"]) == (
        "RESOURCE_ALREADY_EXISTS",
        "RESOURCE_DOES_NOT_EXIST",
        "RESOURCE_DOES_NOT_EXIST",
    )

    assert got["search_all"] == ["iris", "wine"]
    assert got["search_like"] == ["iris"]
    assert got["search_tag"] == ["wine"]
    assert got["search_versions"] == [["iris", "1"], ["iris", "2"]]

    assert (got["by_alias"]["version"], got["by_alias"]["aliases"]) == ("1", ["champion"])
    assert got["bad_alias"] == "RESOURCE_DOES_NOT_EXIST"
    assert got["staged"] == "Production"
    assert [(v["version"], v["current_stage"]) for v in got["latest"]] == [
        ("1", "None"),
        ("2", "Production"),
    ]
    assert got["latest_production"] == ["2"]
    # Served through the server's artifact proxy, as for any MLflow client.
    assert got["download_uri"].startswith("mlflow-artifacts:/")

    assert got["predicted_alias"] == got["expected"]
    assert got["predicted_version"] == got["expected"]

    assert got["model"] == {
        "name": "iris",
        "description": "flowers",
        "tags": {"owner": "me"},
        "aliases": {"champion": "1"},
        "latest": ["1", "2"],
    }
    assert got["version1"]["tags"] == {"checked": "yes"}
    assert got["alias_gone"] == "RESOURCE_DOES_NOT_EXIST"
    assert got["renamed"] == "red"
    assert got["after_version_delete"] == ["1"]
    assert got["deleted"] == "RESOURCE_DOES_NOT_EXIST"

    # reprorun's side, through the REST store: the resolver and load path find the files.
    store = open_store(server.url)
    assert store.get_model_version_by_alias("iris", "champion").run_id == run_id
    assert store.get_model_version("iris", 1).model_id == model_id  # MLflow's client drops it
    assert resolve_model_uri("models:/iris@champion", server.url).startswith("mlflow-artifacts:/")
    folder = model_dir("models:/iris@champion", server.url)
    assert (folder / "MLmodel").is_file()
    assert "sklearn" in (folder / "MLmodel").read_text()
    assert (model_dir(f"models:/{model_id}", server.url) / "MLmodel").is_file()

    # reprorun registers against the same server; MLflow's client would see it.
    done = register_version(f"runs:/{run_id}/model", "iris", tracking_uri=server.url)
    assert (done.version.version, done.created_model) == (3, False)
    assert done.version.model_id == model_id
    listed = reprorun_cli("models", "list", "--json", "--tracking-uri", server.url)
    assert listed.returncode == 0, listed.stderr
    assert [(m["name"], m["latest_version"]) for m in json.loads(listed.stdout)] == [("iris", 3)]
    shown = reprorun_cli("models", "show", "iris", "--json", "--tracking-uri", server.url)
    assert shown.returncode == 0, shown.stderr
    versions = json.loads(shown.stdout)["versions"]
    assert [(v["version"], v["run_id"]) for v in versions] == [(3, run_id), (1, run_id)]
    assert server.alive(), server.output()
