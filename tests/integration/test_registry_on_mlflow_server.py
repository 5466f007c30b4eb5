"""reprorun's registry client against a real `mlflow server` (3.17.2): the REST store's
registry calls, ``register_model``, the ``models:/`` resolver, ``load_model`` and
``reprorun models`` speak MLflow's own server as they speak reprorun's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import reprorun
from reprorun.tracking.registry import register_version, resolve_model_uri
from reprorun.tracking.store import open_store
from tests.conftest import reprorun_cli
from tests.integration.test_runner_mlflow import mlflow_python, mlflow_server  # noqa: F401

pytestmark = pytest.mark.slow


def test_reprorun_uses_an_mlflow_servers_registry(
    mlflow_server: str,  # noqa: F811 - fixture
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REPRORUN_TRACKING_URI", mlflow_server)
    with reprorun.start_run() as run:
        reprorun.log_model({"w": 3}, "model")
    done = register_version(f"runs:/{run.run_id}/model", "rr-model")
    assert (done.version.version, done.created_model) == (1, True)
    assert done.version.source.startswith("mlflow-artifacts:/")
    store = open_store(mlflow_server)
    store.set_registered_model_alias("rr-model", "champion", 1)
    assert store.get_model_version_by_alias("rr-model", "champion").run_id == run.run_id
    store.transition_model_version_stage("rr-model", 1, "Staging")
    assert [v.current_stage for v in store.get_latest_versions("rr-model")] == ["Staging"]
    store.set_model_version_tag("rr-model", 1, "k", "v")
    store.set_registered_model_tag("rr-model", "team", "a")
    store.update_registered_model("rr-model", "from reprorun")
    model = store.get_registered_model("rr-model")
    assert (model.description, model.tags, model.aliases) == (
        "from reprorun",
        {"team": "a"},
        {"champion": 1},
    )
    found = store.search_registered_models("name LIKE 'rr-%'")
    assert [m.name for m in found] == ["rr-model"]
    assert [v.tags for v in store.search_model_versions("name = 'rr-model'")] == [{"k": "v"}]
    assert resolve_model_uri("models:/rr-model@champion") == done.version.source
    assert reprorun.load_model("models:/rr-model@champion") == {"w": 3}
    assert reprorun.load_model("models:/rr-model/Staging") == {"w": 3}
    listed = reprorun_cli("models", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(m["name"], m["aliases"]) for m in json.loads(listed.stdout)] == [
        ("rr-model", {"champion": 1})
    ]
    store.delete_registered_model_alias("rr-model", "champion")
    store.rename_registered_model("rr-model", "rr-renamed")
    store.delete_model_version("rr-renamed", 1)
    store.delete_registered_model("rr-renamed")
    assert store.search_registered_models("name LIKE 'rr-%'") == []
