"""Scenarios run by the real MLflow client (in its own virtualenv) against a tracking server.

    python mlflow_client.py SCENARIO GIVEN.json REPORT.json

Each scenario reads what to send from GIVEN.json, drives the server through
``mlflow.MlflowClient`` and the fluent API (MLFLOW_TRACKING_URI names the server), and writes
what the server answered to REPORT.json; ``test_mlflow_compat.py`` compares the two. Expected
errors are reported as their MLflow error code; anything unexpected raises (exit 1, traceback).

Runs only under the client's virtualenv: it imports mlflow, which the project does not depend on.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException

Json = dict[str, Any]


# --- rendering what the client got -------------------------------------------------------------


def num(value: float) -> float | str:
    """A double as JSON can carry it: non-finite values as MLflow's strings."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def error_code(call: Callable[[], Any]) -> str:
    """The MLflow error code ``call`` raised, or "OK" if it succeeded."""
    try:
        call()
    except MlflowException as exc:
        return str(exc.error_code)
    return "OK"


def experiment_dict(exp: Any) -> Json:
    return {
        "experiment_id": exp.experiment_id,
        "name": exp.name,
        "artifact_location": exp.artifact_location,
        "lifecycle_stage": exp.lifecycle_stage,
        "tags": dict(exp.tags),
        "creation_time": exp.creation_time,
        "last_update_time": exp.last_update_time,
    }


def run_dict(run: Any) -> Json:
    info = run.info
    outputs = run.outputs.model_outputs if run.outputs is not None else []
    return {
        "info": {
            "run_id": info.run_id,
            "run_name": info.run_name,
            "experiment_id": info.experiment_id,
            "user_id": info.user_id,
            "status": info.status,
            "start_time": info.start_time,
            "end_time": info.end_time,
            "artifact_uri": info.artifact_uri,
            "lifecycle_stage": info.lifecycle_stage,
        },
        "params": dict(run.data.params),
        "metrics": {k: num(v) for k, v in run.data.metrics.items()},
        "tags": dict(run.data.tags),
        "model_outputs": [{"model_id": o.model_id, "step": o.step} for o in outputs],
    }


def metric_dicts(metrics: list[Any]) -> list[Json]:
    return [
        {"key": m.key, "value": num(m.value), "timestamp": m.timestamp, "step": m.step}
        for m in metrics
    ]


def logged_model_dict(model: Any) -> Json:
    return {
        "model_id": model.model_id,
        "experiment_id": model.experiment_id,
        "name": model.name,
        "status": getattr(model.status, "value", str(model.status)),
        "source_run_id": model.source_run_id,
        "model_type": model.model_type,
        "artifact_location": model.artifact_location,
        "tags": dict(model.tags),
        "params": dict(model.params),
        "creation_timestamp": model.creation_timestamp,
        "last_updated_timestamp": model.last_updated_timestamp,
    }


def file_infos(infos: list[Any]) -> list[Json]:
    return [{"path": f.path, "is_dir": f.is_dir, "file_size": f.file_size} for f in infos]


def tree(root: str | Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root`` (or of ``root`` itself)."""
    root = Path(root)
    if root.is_file():
        return {root.name: sha256(root)}
    return {
        p.relative_to(root).as_posix(): sha256(p) for p in sorted(root.rglob("*")) if p.is_file()
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def all_pages(fetch: Callable[[str | None], Any]) -> list[list[Any]]:
    """Every page of a paginated search, following next-page tokens (at most 50 pages)."""
    pages: list[list[Any]] = []
    token = None
    for _ in range(50):
        page = fetch(token)
        pages.append(list(page))
        token = page.token
        if not token:
            return pages
    raise AssertionError("pagination did not end after 50 pages")


# --- scenarios -----------------------------------------------------------------------------------


def experiments(client: MlflowClient, given: Json, work: Path) -> Json:
    """Create, get (by id and name), rename, tag, search, paginate, delete and restore."""
    report: Json = {}
    names = given["names"]
    ids = [client.create_experiment(names[0], tags=given["tags"])]
    ids += [client.create_experiment(name) for name in names[1:]]
    report["ids"] = ids
    report["created"] = [experiment_dict(client.get_experiment(i)) for i in ids]
    report["by_name"] = [experiment_dict(client.get_experiment_by_name(n)) for n in names]
    report["by_name_missing"] = client.get_experiment_by_name(given["missing_name"])
    report["default"] = experiment_dict(client.get_experiment("0"))
    report["create_duplicate"] = error_code(lambda: client.create_experiment(names[0]))
    report["get_missing"] = error_code(lambda: client.get_experiment(given["missing_id"]))

    client.rename_experiment(ids[0], given["renamed"])
    report["renamed"] = experiment_dict(client.get_experiment(ids[0]))
    report["renamed_by_new_name"] = client.get_experiment_by_name(given["renamed"]).experiment_id
    report["renamed_old_name"] = client.get_experiment_by_name(names[0])
    report["rename_to_taken"] = error_code(lambda: client.rename_experiment(ids[1], names[2]))

    for key, value in given["set_tags"].items():
        client.set_experiment_tag(ids[1], key, value)
    report["tagged"] = experiment_dict(client.get_experiment(ids[1]))["tags"]
    client.set_experiment_tag(ids[1], "overwritten", "second")
    report["tag_overwritten"] = client.get_experiment(ids[1]).tags["overwritten"]
    client.delete_experiment_tag(ids[1], given["deleted_tag"])
    report["after_delete_tag"] = dict(client.get_experiment(ids[1]).tags)

    like = given["like"]
    report["search_like"] = [
        e.name for e in client.search_experiments(filter_string=like, order_by=["name ASC"])
    ]
    report["search_like_desc"] = [
        e.name for e in client.search_experiments(filter_string=like, order_by=["name DESC"])
    ]
    report["search_by_tag"] = [
        e.experiment_id
        for e in client.search_experiments(filter_string=given["tag_filter"], order_by=["name"])
    ]
    report["pages"] = [
        [e.name for e in page]
        for page in all_pages(
            lambda token: client.search_experiments(
                filter_string=like, order_by=["name ASC"], max_results=2, page_token=token
            )
        )
    ]

    # A run in the experiment that is deleted: deleting the experiment deletes its runs too.
    run = client.create_run(ids[2])
    client.delete_experiment(ids[2])
    report["deleted"] = experiment_dict(client.get_experiment(ids[2]))
    report["deleted_by_name"] = client.get_experiment_by_name(names[2]).lifecycle_stage
    report["deleted_run_stage"] = client.get_run(run.info.run_id).info.lifecycle_stage
    report["search_active"] = [e.name for e in client.search_experiments(filter_string=like)]
    report["search_deleted"] = [
        e.name
        for e in client.search_experiments(view_type=ViewType.DELETED_ONLY, filter_string=like)
    ]
    report["search_all"] = sorted(
        e.name for e in client.search_experiments(view_type=ViewType.ALL, filter_string=like)
    )
    report["create_run_in_deleted"] = error_code(lambda: client.create_run(ids[2]))
    report["tag_deleted"] = error_code(lambda: client.set_experiment_tag(ids[2], "late", "x"))
    report["create_deleted_name"] = error_code(lambda: client.create_experiment(names[2]))
    report["delete_twice"] = error_code(lambda: client.delete_experiment(ids[2]))
    client.restore_experiment(ids[2])
    report["restored"] = experiment_dict(client.get_experiment(ids[2]))
    report["restored_run_stage"] = client.get_run(run.info.run_id).info.lifecycle_stage
    report["search_after_restore"] = sorted(
        e.name for e in client.search_experiments(filter_string=like)
    )

    # The fluent API: set_experiment creates a missing experiment and makes it current.
    fluent = mlflow.set_experiment(given["fluent_name"])
    report["fluent"] = experiment_dict(fluent)
    report["fluent_again"] = mlflow.set_experiment(given["fluent_name"]).experiment_id
    report["fluent_by_name"] = experiment_dict(mlflow.get_experiment_by_name(given["fluent_name"]))
    report["fluent_search"] = [
        e.name for e in mlflow.search_experiments(filter_string=f"name = '{given['fluent_name']}'")
    ]
    return report


def runs(client: MlflowClient, given: Json, work: Path) -> Json:
    """Log params, metrics (steps, timestamps, NaN), tags and batches; read them back."""
    report: Json = {}
    exp_id = client.create_experiment(given["experiment"])

    # The fluent API.
    with mlflow.start_run(
        experiment_id=exp_id, run_name=given["fluent_run_name"], tags=given["start_tags"]
    ) as active:
        run_id = active.info.run_id
        report["active"] = run_dict(client.get_run(run_id))
        for key, value in given["params"].items():
            mlflow.log_param(key, value)
        mlflow.log_params(given["more_params"])
        for point in given["history"]:
            mlflow.log_metric(
                "acc", point["value"], step=point["step"], timestamp=point["timestamp"]
            )
        mlflow.log_metrics(given["metrics"], step=given["metrics_step"])
        for key, value in given["special_metrics"].items():
            mlflow.log_metric(key, float(value))
        mlflow.set_tag("single", given["tags"]["single"])
        mlflow.set_tags({k: v for k, v in given["tags"].items() if k != "single"})
        mlflow.set_tag("to_delete", "x")
        mlflow.delete_tag("to_delete")
        with mlflow.start_run(experiment_id=exp_id, run_name="child", nested=True) as child:
            mlflow.log_metric("child_metric", 1.0)
        report["same_param_same_value"] = error_code(
            lambda: client.log_param(run_id, "lr", given["params"]["lr"])
        )
        report["same_param_other_value"] = error_code(
            lambda: client.log_param(run_id, "lr", "other")
        )
    report["fluent_run"] = run_dict(client.get_run(run_id))
    report["history"] = metric_dicts(client.get_metric_history(run_id, "acc"))
    report["history_missing"] = metric_dicts(client.get_metric_history(run_id, "no-such-metric"))
    store = client._tracking_client.store  # the REST store: one page of history per request
    report["history_pages"] = [
        metric_dicts(page)
        for page in all_pages(
            lambda token: store.get_metric_history(run_id, "acc", max_results=2, page_token=token)
        )
    ]
    report["nan_history"] = metric_dicts(client.get_metric_history(run_id, "nan"))
    report["child"] = run_dict(client.get_run(child.info.run_id))
    parent = client.get_parent_run(child.info.run_id)
    report["child_parent"] = parent.info.run_id if parent else None

    try:
        with mlflow.start_run(experiment_id=exp_id, run_name="fails"):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    report["failed_status"] = client.search_runs([exp_id], "attributes.run_name = 'fails'")[
        0
    ].info.status

    # The client API.
    created = client.create_run(
        exp_id,
        start_time=given["start_time"],
        tags=given["client_tags"],
        run_name=given["client_run_name"],
    )
    crun = created.info.run_id
    report["created"] = run_dict(created)
    client.log_batch(
        crun,
        metrics=[Metric(m["key"], m["value"], m["timestamp"], m["step"]) for m in given["batch"]],
        params=[Param(k, v) for k, v in given["batch_params"].items()],
        tags=[RunTag(k, v) for k, v in given["batch_tags"].items()],
    )
    client.log_metric(crun, "single", 7.5, timestamp=given["start_time"] + 10, step=2)
    client.set_tag(crun, "ünï-tag", "välue ✓")
    report["batched"] = run_dict(client.get_run(crun))
    report["batch_history"] = metric_dicts(client.get_metric_history(crun, "loss"))
    client.update_run(crun, name=given["renamed_run"])
    report["renamed"] = run_dict(client.get_run(crun))
    client.delete_tag(crun, "ünï-tag")
    report["delete_missing_tag"] = error_code(lambda: client.delete_tag(crun, "ünï-tag"))
    client.set_terminated(crun, status="KILLED", end_time=given["end_time"])
    report["terminated"] = run_dict(client.get_run(crun))
    report["get_missing_run"] = error_code(lambda: client.get_run(given["missing_run_id"]))
    report["log_to_missing_run"] = error_code(
        lambda: client.log_metric(given["missing_run_id"], "m", 1.0)
    )

    # Delete and restore a run.
    client.delete_run(crun)
    report["deleted"] = run_dict(client.get_run(crun))
    report["writes_to_deleted"] = {
        "log_metric": error_code(lambda: client.log_metric(crun, "late", 1.0)),
        "log_param": error_code(lambda: client.log_param(crun, "late", "x")),
        "set_tag": error_code(lambda: client.set_tag(crun, "late", "x")),
        "log_batch": error_code(lambda: client.log_batch(crun, params=[Param("late2", "x")])),
    }
    report["search_active"] = sorted(r.info.run_name for r in client.search_runs([exp_id]))
    report["search_deleted"] = [
        r.info.run_id for r in client.search_runs([exp_id], run_view_type=ViewType.DELETED_ONLY)
    ]
    report["search_all"] = sorted(
        r.info.run_name for r in client.search_runs([exp_id], run_view_type=ViewType.ALL)
    )
    client.restore_run(crun)
    report["restored"] = run_dict(client.get_run(crun))
    report["search_after_restore"] = sorted(r.info.run_name for r in client.search_runs([exp_id]))
    report["delete_missing_run"] = error_code(lambda: client.delete_run(given["missing_run_id"]))
    return report


def search(client: MlflowClient, given: Json, work: Path) -> Json:
    """search_runs: filters, ordering, pagination, several experiments; the fluent search."""
    exp_ids = [client.create_experiment(name) for name in given["experiments"]]
    report: Json = {"experiment_ids": exp_ids}
    for spec in given["runs"]:
        run = client.create_run(
            exp_ids[spec["experiment"]], run_name=spec["name"], start_time=spec["start_time"]
        )
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(k, v, spec["start_time"], 0) for k, v in spec["metrics"].items()],
            params=[Param(k, v) for k, v in spec["params"].items()],
            tags=[RunTag(k, v) for k, v in spec["tags"].items()],
        )
        if spec["datasets"]:
            inputs = [
                DatasetInput(
                    Dataset(name, digest, "local", json.dumps({"uri": f"/data/{name}"})),
                    [InputTag("mlflow.data.context", context)],
                )
                for name, digest, context in spec["datasets"]
            ]
            client.log_inputs(run.info.run_id, datasets=inputs)
        client.set_terminated(run.info.run_id, status=spec["status"])

    def names(filter_string: str, order_by: list[str], experiments: list[str]) -> list[str]:
        found = client.search_runs(experiments, filter_string, order_by=order_by)
        return [r.info.run_name for r in found]

    report["queries"] = [
        names(q["filter"], q["order_by"], [exp_ids[i] for i in q["experiments"]])
        for q in given["queries"]
    ]
    report["bad_filter"] = error_code(lambda: client.search_runs(exp_ids, given["bad_filter"]))
    report["pages"] = [
        [r.info.run_name for r in page]
        for page in all_pages(
            lambda token: client.search_runs(
                exp_ids,
                "",
                order_by=["attributes.start_time ASC"],
                max_results=3,
                page_token=token,
            )
        )
    ]
    report["full_runs"] = {
        r.info.run_name: run_dict(r) for r in client.search_runs(exp_ids, "", max_results=100)
    }
    frame = mlflow.search_runs(
        experiment_ids=exp_ids, filter_string="metrics.score > 0.5", order_by=["metrics.score"]
    )
    report["fluent_frame"] = {
        "columns": sorted(c for c in frame.columns if c.startswith(("metrics.", "params."))),
        "run_names": list(frame["tags.mlflow.runName"]),
        "scores": [float(s) for s in frame["metrics.score"]],
    }
    listed = mlflow.search_runs(
        experiment_names=given["experiments"],
        filter_string="params.kind = 'a'",
        order_by=["attributes.run_name ASC"],
        output_format="list",
    )
    report["fluent_list"] = [r.info.run_name for r in listed]
    return report


def artifacts(client: MlflowClient, given: Json, work: Path) -> Json:
    """Upload files and folders (fluent and client), list, download, load back."""
    report: Json = {}
    source = work / "upload"
    for rel, spec in given["files"].items():
        path = source / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if "text" in spec:
            path.write_text(spec["text"], encoding="utf-8")
        else:
            size, seed = spec["size"], spec["seed"]
            block = hashlib.sha256(str(seed).encode()).digest()
            path.write_bytes((block * (size // len(block) + 1))[:size])
    report["sent"] = tree(source)

    exp_id = client.create_experiment(given["experiment"])
    with mlflow.start_run(experiment_id=exp_id) as active:
        run_id = active.info.run_id
        for rel in given["root_files"]:
            mlflow.log_artifact(str(source / rel))
        mlflow.log_artifact(str(source / given["nested_file"]), artifact_path="deep/er")
        mlflow.log_artifacts(str(source / "tree"), artifact_path="tree")
        mlflow.log_text(given["text"], "notes/readme.txt")
        mlflow.log_dict(given["dict"], "config.json")
    client.log_artifact(run_id, str(source / given["nested_file"]), artifact_path="by-client")
    run = client.get_run(run_id)
    report["artifact_uri"] = run.info.artifact_uri
    report["list_root"] = file_infos(client.list_artifacts(run_id))
    report["list_tree"] = file_infos(client.list_artifacts(run_id, "tree"))
    report["list_deep"] = file_infos(client.list_artifacts(run_id, "deep/er"))
    report["list_missing"] = file_infos(client.list_artifacts(run_id, "no/such/dir"))
    report["fluent_list"] = file_infos(mlflow.artifacts.list_artifacts(run_id=run_id))

    downloads = work / "downloads"
    report["download_file"] = tree(
        client.download_artifacts(run_id, given["root_files"][0], str(downloads / "one"))
    )
    report["download_dir"] = tree(client.download_artifacts(run_id, "tree", str(downloads / "t")))
    report["download_all"] = tree(
        mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(downloads / "all"))
    )
    report["download_by_uri"] = tree(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"{run.info.artifact_uri}/deep", dst_path=str(downloads / "uri")
        )
    )
    report["download_runs_uri"] = tree(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"runs:/{run_id}/by-client", dst_path=str(downloads / "runs")
        )
    )
    report["load_text"] = mlflow.artifacts.load_text(f"runs:/{run_id}/notes/readme.txt")
    report["load_dict"] = mlflow.artifacts.load_dict(f"runs:/{run_id}/config.json")
    report["download_missing"] = error_code(
        lambda: client.download_artifacts(run_id, "no-such-file.txt", str(downloads / "x"))
    )
    return report


def models(client: MlflowClient, given: Json, work: Path) -> Json:
    """mlflow.sklearn.log_model and MLflow 3's logged-model API."""
    import mlflow.pyfunc
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    report: Json = {}
    features, labels = load_iris(return_X_y=True)
    model = DecisionTreeClassifier(max_depth=3, random_state=0).fit(features, labels)
    expected = model.predict(features).tolist()
    report["expected_predictions"] = expected

    exp_id = client.create_experiment(given["experiment"])
    report["experiment_id"] = exp_id
    with mlflow.start_run(experiment_id=exp_id) as active:
        run_id = active.info.run_id
        mlflow.log_param("max_depth", 3)
        skops = mlflow.sklearn.log_model(
            model,
            name="model",
            skops_trusted_types=["sklearn.tree._tree.Tree"],
            params=given["model_params"],
        )
        # Explicit requirements skip MLflow's slow inference (a subprocess), done once above.
        pickled = mlflow.sklearn.log_model(
            model,
            name="model_cp",
            serialization_format="cloudpickle",
            pip_requirements=["scikit-learn"],
        )
    report["run_id"] = run_id
    report["infos"] = [
        {
            "model_id": info.model_id,
            "model_uri": info.model_uri,
            "run_id": info.run_id,
            "name": info.name,
            "flavors": sorted(info.flavors),
        }
        for info in (skops, pickled)
    ]
    report["run"] = run_dict(client.get_run(run_id))
    report["run_artifacts"] = file_infos(client.list_artifacts(run_id))
    report["model_files"] = file_infos(client.list_artifacts(run_id, "model"))
    report["model_cp_files"] = file_infos(client.list_artifacts(run_id, "model_cp"))
    report["logged_model_files"] = file_infos(client.list_logged_model_artifacts(skops.model_id))
    report["logged"] = [
        logged_model_dict(client.get_logged_model(i.model_id)) for i in (skops, pickled)
    ]
    report["search"] = sorted(m.model_id for m in client.search_logged_models([exp_id]))
    report["search_by_name"] = [
        m.model_id for m in client.search_logged_models([exp_id], filter_string="name = 'model'")
    ]
    report["fluent_search"] = sorted(
        m.model_id for m in mlflow.search_logged_models([exp_id], output_format="list")
    )
    report["search_pages"] = [
        sorted(m.model_id for m in page)
        for page in all_pages(
            lambda token: client.search_logged_models([exp_id], max_results=1, page_token=token)
        )
    ]
    loaded = mlflow.sklearn.load_model(skops.model_uri)  # trusted types are in MLmodel
    report["loaded_predictions"] = loaded.predict(features).tolist()
    by_run = mlflow.pyfunc.load_model(f"runs:/{run_id}/model_cp")
    report["runs_uri_predictions"] = [int(v) for v in by_run.predict(features)]
    report["downloaded_model"] = sorted(
        tree(mlflow.artifacts.download_artifacts(skops.model_uri, dst_path=str(work / "m")))
    )

    # A logged model created, tagged and finalized by hand.
    manual = client.create_logged_model(
        exp_id,
        name=given["manual"]["name"],
        source_run_id=run_id,
        tags=given["manual"]["tags"],
        params=given["manual"]["params"],
        model_type=given["manual"]["model_type"],
    )
    report["manual_created"] = logged_model_dict(manual)
    client.set_logged_model_tags(manual.model_id, given["manual"]["more_tags"])
    client.delete_logged_model_tag(manual.model_id, given["manual"]["deleted_tag"])
    report["manual_finalized"] = logged_model_dict(
        client.finalize_logged_model(manual.model_id, "READY")
    )
    report["manual_got"] = logged_model_dict(client.get_logged_model(manual.model_id))
    # A metric logged with the model's id (and its dataset) is attached to the model.
    client.log_metric(
        run_id,
        "auc",
        0.9,
        timestamp=1234,
        step=2,
        model_id=manual.model_id,
        dataset_name="val",
        dataset_digest="d1",
    )
    report["manual_metrics"] = [
        {
            "key": m.key,
            "value": m.value,
            "timestamp": m.timestamp,
            "step": m.step,
            "run_id": m.run_id,
            "model_id": m.model_id,
            "dataset_name": m.dataset_name,
            "dataset_digest": m.dataset_digest,
        }
        for m in client.get_logged_model(manual.model_id).metrics
    ]
    report["search_by_dataset"] = {
        name: sorted(
            m.model_id
            for m in client.search_logged_models(
                [exp_id], datasets=[{"dataset_name": name, "dataset_digest": "d1"}]
            )
        )
        for name in ("val", "other")
    }
    client.delete_logged_model(manual.model_id)
    report["manual_get_deleted"] = error_code(lambda: client.get_logged_model(manual.model_id))
    report["search_after_delete"] = sorted(
        m.model_id for m in client.search_logged_models([exp_id])
    )
    report["get_missing"] = error_code(lambda: client.get_logged_model("m-doesnotexist"))
    return report


SCENARIOS: dict[str, Callable[[MlflowClient, Json, Path], Json]] = {
    "experiments": experiments,
    "runs": runs,
    "search": search,
    "artifacts": artifacts,
    "models": models,
}


def main() -> None:
    scenario, given_file, report_file = sys.argv[1:4]
    given = json.loads(Path(given_file).read_text(encoding="utf-8"))
    client = MlflowClient()
    report = SCENARIOS[scenario](client, given, Path(report_file).parent)
    report["mlflow_version"] = mlflow.__version__
    Path(report_file).write_text(json.dumps(report, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
