"""The model registry driven by the real MLflow client (in its own virtualenv) against a
tracking server: ``mlflow.register_model``, ``MlflowClient``'s registry calls and
``mlflow.pyfunc.load_model("models:/iris@champion")``.

    python mlflow_registry_client.py REPORT.json

MLFLOW_TRACKING_URI names the server. What the client got is written to REPORT.json for
``test_mlflow_registry.py`` to check; expected errors are reported as their MLflow error code.
Runs only under the client's virtualenv: it imports mlflow, which the project does not depend on.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import mlflow.sklearn
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sklearn.datasets import load_iris
from sklearn.tree import DecisionTreeClassifier

Json = dict[str, Any]


def error_code(call: Callable[[], Any]) -> str:
    try:
        call()
    except MlflowException as exc:
        return str(exc.error_code)
    return "OK"


def version_dict(v: Any) -> Json:
    return {
        "name": v.name,
        "version": str(v.version),
        "run_id": v.run_id,
        "model_id": getattr(v, "model_id", None),
        "source": v.source,
        "status": v.status,
        "current_stage": v.current_stage,
        "aliases": sorted(v.aliases),
        "tags": dict(v.tags),
    }


def main() -> None:
    warnings.simplefilter("ignore")  # get_latest_versions and stages are deprecated
    report: Json = {"mlflow_version": mlflow.__version__}
    client = MlflowClient()
    features, labels = load_iris(return_X_y=True)
    model = DecisionTreeClassifier(max_depth=3, random_state=0).fit(features, labels)
    report["expected"] = model.predict(features).tolist()

    exp_id = client.create_experiment("registry")
    with mlflow.start_run(experiment_id=exp_id) as active:
        run_id = active.info.run_id
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            serialization_format="cloudpickle",
            pip_requirements=["scikit-learn"],
        )
    report["run_id"] = run_id
    report["model_id"] = info.model_id

    # register_model creates the model and its first version; a second call adds version 2.
    first = mlflow.register_model(f"runs:/{run_id}/model", "iris")
    second = mlflow.register_model(info.model_uri, "iris", tags={"from": "model-uri"})
    report["registered"] = [version_dict(first), version_dict(second)]
    report["duplicate"] = error_code(lambda: client.create_registered_model("iris"))
    report["missing"] = error_code(lambda: client.get_registered_model("nope"))
    report["missing_version"] = error_code(lambda: client.get_model_version("iris", "9"))

    client.create_registered_model("wine", tags={"team": "b"}, description="red")
    report["search_all"] = [m.name for m in client.search_registered_models()]
    report["search_like"] = [
        m.name for m in client.search_registered_models(filter_string="name LIKE 'ir%'")
    ]
    report["search_tag"] = [
        m.name for m in client.search_registered_models(filter_string="tags.team = 'b'")
    ]
    report["search_versions"] = [
        (v.name, str(v.version))
        for v in client.search_model_versions(f"run_id = '{run_id}'", order_by=["version_number"])
    ]

    client.set_registered_model_alias("iris", "champion", "1")
    report["by_alias"] = version_dict(client.get_model_version_by_alias("iris", "champion"))
    report["bad_alias"] = error_code(
        lambda: client.get_model_version_by_alias("iris", "challenger")
    )
    staged = client.transition_model_version_stage("iris", "2", "Production")
    report["staged"] = staged.current_stage
    report["latest"] = [version_dict(v) for v in client.get_latest_versions("iris")]
    report["latest_production"] = [
        str(v.version) for v in client.get_latest_versions("iris", stages=["Production"])
    ]
    report["download_uri"] = client.get_model_version_download_uri("iris", "1")
    report["logged_model_versions"] = client.get_logged_model(info.model_id).tags.get(
        "mlflow.modelVersions"
    )

    loaded = mlflow.pyfunc.load_model("models:/iris@champion")
    report["predicted_alias"] = [int(x) for x in loaded.predict(features)]
    loaded = mlflow.pyfunc.load_model("models:/iris/2")
    report["predicted_version"] = [int(x) for x in loaded.predict(features)]

    client.set_registered_model_tag("iris", "owner", "me")
    client.set_model_version_tag("iris", "1", "checked", "yes")
    client.update_registered_model("iris", description="flowers")
    client.update_model_version("iris", "1", description="the first")
    got = client.get_registered_model("iris")
    report["model"] = {
        "name": got.name,
        "description": got.description,
        "tags": dict(got.tags),
        "aliases": dict(got.aliases),
        "latest": sorted(str(v.version) for v in got.latest_versions),
    }
    report["version1"] = version_dict(client.get_model_version("iris", "1"))
    client.delete_registered_model_tag("iris", "owner")
    client.delete_model_version_tag("iris", "1", "checked")
    client.delete_registered_model_alias("iris", "champion")
    report["alias_gone"] = error_code(lambda: client.get_model_version_by_alias("iris", "champion"))

    client.rename_registered_model("wine", "wine2")
    report["renamed"] = client.get_registered_model("wine2").description
    client.delete_model_version("iris", "2")
    report["after_version_delete"] = [
        str(v.version) for v in client.search_model_versions("name = 'iris'")
    ]
    # Kept for reprorun's side of the test: iris version 1 (alias champion again).
    client.set_registered_model_alias("iris", "champion", "1")
    client.delete_registered_model("wine2")
    report["deleted"] = error_code(lambda: client.get_registered_model("wine2"))
    Path(sys.argv[1]).write_text(json.dumps(report, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
