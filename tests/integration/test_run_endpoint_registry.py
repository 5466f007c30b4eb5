"""The model registry through a run's own endpoint (``reprorun run``): the run's code may read
the registry and register versions of its own files (``log_model(registered_model_name=...)``,
then ``mlflow.pyfunc.load_model("models:/...")`` in the same run, with the real MLflow client),
but not move aliases or stages, delete, or register other runs' files."""

from __future__ import annotations

from pathlib import Path

import pytest

from reprorun.tracking.store import open_store
from tests.conftest import reprorun_cli
from tests.integration.test_run_endpoint_security import (  # noqa: F401 - fixtures
    call,
    held_run,
    project,
    victim,
)

REGISTER = """\
import mlflow
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

X, y = load_iris(return_X_y=True)
with mlflow.start_run():
    model = LogisticRegression(max_iter=200).fit(X, y)
    mlflow.sklearn.log_model(model, name="model", registered_model_name="iris")
    loaded = mlflow.pyfunc.load_model("models:/iris/1")
    same = loaded.predict(X).tolist() == model.predict(X).tolist()
    print("SAME", same)
    try:
        mlflow.MlflowClient().set_registered_model_alias("iris", "champion", "1")
    except mlflow.exceptions.MlflowException as exc:
        print("ALIAS REFUSED", exc.error_code)
"""
MLPROJECT = """\
name: endpoint-registry
entry_points:
  main:
    command: '"$MLFLOW_CLIENT_PYTHON" register.py'
"""


def test_the_runs_code_registers_its_own_files_only(
    project: Path,  # noqa: F811 - fixture
    tmp_path: Path,
    victim: dict[str, str],  # noqa: F811 - fixture
) -> None:
    store = open_store()
    store.create_registered_model("shared")
    store.create_model_version("shared", "/elsewhere/model")
    with held_run(project, tmp_path) as run:
        artifacts = store.get_run(run.run_id).info.artifact_uri
        status, made = call(run, "POST", "registered-models/create", {"name": "iris"})
        assert status == 200, made
        own = {"name": "iris", "source": f"{artifacts}/model", "run_id": run.run_id}
        status, version = call(run, "POST", "model-versions/create", own)
        assert status == 200, version
        assert version["model_version"]["version"] == "1"
        for endpoint in (
            "registered-models/get?name=shared",
            "registered-models/search?filter=name%3D%27shared%27",
            "model-versions/get?name=shared&version=1",
            "model-versions/get-download-uri?name=iris&version=1",
            "registered-models/get-latest-versions?name=shared",
        ):
            status, reply = call(run, "GET", endpoint)
            assert status == 200, (endpoint, reply)
        refused = [
            ("POST", "model-versions/create", {**own, "run_id": victim["run_id"]}),
            ("POST", "model-versions/create", {"name": "iris", "source": "s3://b/m"}),
            ("POST", "model-versions/create", {**own, "model_id": victim["model_id"]}),
            ("POST", "registered-models/alias", {"name": "shared", "alias": "a", "version": 1}),
            ("DELETE", "registered-models/alias", {"name": "shared", "alias": "a"}),
            ("POST", "registered-models/rename", {"name": "shared", "new_name": "mine"}),
            ("DELETE", "registered-models/delete", {"name": "shared"}),
            ("DELETE", "model-versions/delete", {"name": "shared", "version": "1"}),
            ("POST", "registered-models/set-tag", {"name": "shared", "key": "k", "value": "v"}),
            ("PATCH", "registered-models/update", {"name": "shared", "description": "x"}),
            (
                "POST",
                "model-versions/transition-stage",
                {"name": "shared", "version": "1", "stage": "Production"},
            ),
        ]
        for method, endpoint, body in refused:
            status, reply = call(run, method, endpoint, body)
            assert status == 403, (method, endpoint, reply)
            assert reply["error_code"] == "PERMISSION_DENIED"
    assert [v.version for v in store.search_model_versions("name = 'iris'")] == [1]
    shared = store.get_registered_model("shared")
    assert (shared.aliases, shared.description, shared.tags) == ({}, None, {})


@pytest.mark.slow
def test_log_model_registers_and_loads_inside_a_run(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.integration.mlflow_env import client_python

    monkeypatch.setenv("MLFLOW_CLIENT_PYTHON", str(client_python()))
    folder = tmp_path / "registering"
    folder.mkdir()
    (folder / "MLproject").write_text(MLPROJECT)
    (folder / "register.py").write_text(REGISTER)
    result = reprorun_cli("run", str(folder), "--env-manager", "local")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "SAME True" in result.stdout
    assert "ALIAS REFUSED PERMISSION_DENIED" in result.stdout
    store = open_store()
    [version] = store.search_model_versions("name = 'iris'")
    run = store.get_run(str(version.run_id))
    assert run.info.status.value == "FINISHED"
    [logged] = store.search_logged_models([run.info.experiment_id])
    assert version.model_id == logged.model_id
    assert store.get_registered_model("iris").aliases == {}
