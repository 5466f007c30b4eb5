"""MLflow compatibility: the real MLflow client (its own virtualenv) against `reprorun server`.

Each scenario of ``mlflow_client.py`` sends known values (the dictionaries below) through
``mlflow.MlflowClient`` and the fluent API and reports what the server answered; the tests
compare the two. A scenario runs once per module (importing mlflow costs seconds) against one
server, and several tests check its report, so one run lists every incompatibility.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.mlflow_env import (
    MLFLOW_VERSION,
    TrackingServer,
    client_python,
    run_client,
    tracking_server,
)

pytestmark = pytest.mark.slow

Json = dict[str, Any]

T0 = 1_700_000_000_000  # a fixed epoch in ms for the timestamps the client sends
MISSING_RUN_ID = "0" * 32
MAX_DOUBLE = sys.float_info.max


def user_tags(tags: dict[str, str]) -> dict[str, str]:
    """Tags without MLflow's system tags (mlflow.user, mlflow.source.*, mlflow.runName...)."""
    return {k: v for k, v in tags.items() if not k.startswith("mlflow.")}


def by_path(infos: list[Json]) -> dict[str, tuple[bool, int | None]]:
    return {f["path"]: (f["is_dir"], f["file_size"]) for f in infos}


# --- what the scenarios send -------------------------------------------------------------------

EXPERIMENTS: Json = {
    # After the rename of the first, four names match the LIKE filter: two full pages of two.
    "names": ["compat-exp-b", "compat-exp-a", "compat-exp-c", "compat-exp-ü", "compat-exp-d"],
    "tags": {"team": "ml", "ünï": "ćødé ✓"},
    "missing_name": "compat-no-such-experiment",
    "missing_id": "987654321",
    "renamed": "compat-renamed-ø",
    "set_tags": {"stage": "dev", "overwritten": "first", "gone": "soon"},
    "deleted_tag": "gone",
    "like": "name LIKE 'compat-exp-%'",
    "tag_filter": "tags.team = 'ml'",
    "fluent_name": "compat-fluent ✓",
}

RUNS: Json = {
    "experiment": "compat-runs",
    "fluent_run_name": "fluent-ünï",
    "start_tags": {"phase": "train", "ünï": "✓"},
    # Not strings on purpose: MLflow logs str(value).
    "params": {"lr": 0.1, "depth": 3, "name": "välue ✓ 🚀", "flag": True},
    "more_params": {"ключ": "значение", "empty": ""},
    # Logged out of step order: the latest value is the one at the highest step (0.9).
    "history": [
        {"value": 0.5, "step": 0, "timestamp": T0},
        {"value": 0.9, "step": 4, "timestamp": T0 + 1000},
        {"value": 0.7, "step": 1, "timestamp": T0 + 2000},
        {"value": 0.65, "step": 2, "timestamp": T0 + 3000},
        {"value": 0.8, "step": 3, "timestamp": T0 + 4000},
    ],
    "metrics": {"a": 1, "b": 2.5, "tiny": 1e-300, "huge": -1.5e300},
    "metrics_step": 5,
    "special_metrics": {"nan": "nan", "inf": "inf", "neg_inf": "-inf"},
    "tags": {"single": "one", "multi": "ü ✓", "json": '{"a": [1, 2]}'},
    "start_time": T0 + 50_000,
    "client_tags": {"origin": "client"},
    "client_run_name": "client-run",
    "batch": [
        {"key": "loss", "value": 1.0, "timestamp": T0 + 100, "step": 0},
        {"key": "loss", "value": 0.5, "timestamp": T0 + 200, "step": 1},
        {"key": "loss", "value": 0.25, "timestamp": T0 + 300, "step": 2},
        {"key": "int_like", "value": 42, "timestamp": T0 + 300, "step": 0},
    ],
    "batch_params": {"p1": "v1", "ünï": "välue"},
    "batch_tags": {"bt": "x"},
    "renamed_run": "client-renamed",
    "end_time": T0 + 99_000,
    "missing_run_id": MISSING_RUN_ID,
}

# name, experiment, start-time offset (s; not creation order), score, loss, kind, group, status
_RUN_TABLE = [
    ("r0", 0, 5, 0.1, 2.0, "a", "g1", "FINISHED"),
    ("r1", 0, 2, 0.9, 1.0, "b", "g2", "FINISHED"),
    ("r2", 0, 7, 0.5, 3.0, "a", "g1", "FINISHED"),
    ("r3", 0, 1, 0.7, 4.0, "b", "g2", "FAILED"),
    ("r4", 0, 6, None, 5.0, "a", "g1", "FINISHED"),
    ("r5", 0, 0, 0.3, 6.0, "b", "g2", "KILLED"),
    ("r6", 1, 4, 0.8, 7.0, "a", "g1", "FINISHED"),
    ("r7", 1, 3, 0.6, 8.0, "b", "g2", "FINISHED"),
]
# The dataset inputs (name, digest, context) some runs log with client.log_inputs.
_RUN_DATASETS = {
    "r0": [("iris", "d1", "training")],
    "r1": [("iris", "d1", "evaluation"), ("wine", "d2", "training")],
    "r2": [("wine", "d2", "training")],
    "r6": [("iris", "d1", "training")],
}
# (filter, order_by, experiments searched, the run names expected in that order)
SEARCH_QUERIES: list[tuple[str, list[str], list[int], list[str]]] = [
    ("metrics.score > 0.5", ["metrics.score DESC"], [0], ["r1", "r3"]),
    ("metrics.score >= 0.5 and params.kind = 'a'", ["metrics.score ASC"], [0, 1], ["r2", "r6"]),
    ("tags.group = 'g2'", ["attributes.run_name ASC"], [0], ["r1", "r3", "r5"]),
    (
        "attributes.status = 'FINISHED'",
        ["attributes.start_time ASC"],
        [0, 1],
        ["r1", "r7", "r6", "r0", "r4", "r2"],
    ),
    # A run without the metric comes last, in both directions.
    (
        "attributes.run_name LIKE 'r%'",
        ["metrics.score DESC"],
        [0, 1],
        ["r1", "r6", "r3", "r7", "r2", "r5", "r0", "r4"],
    ),
    ("", ["metrics.score ASC"], [0, 1], ["r0", "r5", "r2", "r7", "r3", "r6", "r1", "r4"]),
    (
        "params.kind != 'a'",
        ["params.kind ASC", "metrics.loss DESC"],
        [0, 1],
        ["r7", "r5", "r3", "r1"],
    ),
    ("tags.group ILIKE 'G1'", ["attributes.run_name"], [0, 1], ["r0", "r2", "r4", "r6"]),
    ("tags.`has space` = 'yes'", [], [0, 1], ["r7"]),
    ("attributes.status != 'FINISHED'", ["attributes.run_name DESC"], [0], ["r5", "r3"]),
    ("metrics.score = 0.5", [], [0, 1], ["r2"]),
    ("metrics.loss <= 3 and metrics.loss > 1", ["metrics.loss"], [0], ["r0", "r2"]),
    ("", ["attributes.start_time DESC"], [1], ["r6", "r7"]),
    ("datasets.name = 'iris'", ["attributes.run_name"], [0, 1], ["r0", "r1", "r6"]),
    ("datasets.digest IN ('d2')", ["attributes.run_name"], [0], ["r1", "r2"]),
    ("datasets.context = 'training'", ["attributes.run_name"], [0], ["r0", "r1", "r2"]),
    (
        "datasets.name = 'iris' and datasets.context = 'evaluation'",
        ["attributes.run_name"],
        [0, 1],
        ["r1"],
    ),
    ("dataset.name LIKE 'w%' and metrics.score > 0.6", [], [0], ["r1"]),
]
SEARCH: Json = {
    "experiments": ["compat-search-1", "compat-search-2"],
    "runs": [
        {
            "name": name,
            "experiment": exp,
            "start_time": T0 + offset * 1000,
            "metrics": {"loss": loss, **({} if score is None else {"score": score})},
            "params": {"kind": kind},
            "tags": {"group": group, **({"has space": "yes"} if name == "r7" else {})},
            "status": status,
            "datasets": _RUN_DATASETS.get(name, []),
        }
        for name, exp, offset, score, loss, kind, group, status in _RUN_TABLE
    ],
    "queries": [
        {"filter": f, "order_by": order, "experiments": exps}
        for f, order, exps, _ in SEARCH_QUERIES
    ],
    "bad_filter": "metrics.score >>> 1",
}

ARTIFACTS: Json = {
    "experiment": "compat-artifacts",
    "files": {
        "hello.txt": {"text": "hello\n"},
        "ünï cödé.txt": {"text": "ü ✓\n"},
        "empty.bin": {"size": 0, "seed": 0},
        "big.bin": {"size": 3_000_001, "seed": 1},
        "nested/inner.txt": {"text": "inner"},
        "tree/a.txt": {"text": "a"},
        "tree/sub/b.bin": {"size": 70_000, "seed": 2},
        "tree/sub/deeper/c.txt": {"text": "c"},
    },
    "root_files": ["hello.txt", "ünï cödé.txt", "empty.bin", "big.bin"],
    "nested_file": "nested/inner.txt",
    "text": "Ünïcode text ✓\nline 2\n",
    "dict": {"a": 1, "b": [1, 2, {"c": "ü"}], "n": None},
}

MODELS: Json = {
    "experiment": "compat-models",
    "model_params": {"alpha": "0.5", "ünï": "✓"},
    "manual": {
        "name": "manual-model",
        "tags": {"k1": "v1", "gone": "x"},
        "params": {"p": "1"},
        "model_type": "hand-made",
        "more_tags": {"k2": "ü ✓"},
        "deleted_tag": "gone",
    },
}

GIVEN = {
    "experiments": EXPERIMENTS,
    "runs": RUNS,
    "search": SEARCH,
    "artifacts": ARTIFACTS,
    "models": MODELS,
}


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mlflow_python() -> Path:
    """The client's Python (built once, cached across sessions; a failure fails the tests)."""
    return client_python()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    with tracking_server(tmp_path_factory.mktemp("server-home")) as running:
        yield running


@pytest.fixture(scope="module")
def scenario(
    mlflow_python: Path, server: TrackingServer, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Json]:
    """The report of a scenario, run on first use (a failure is kept and raised to each user)."""
    reports: dict[str, Json | BaseException] = {}
    work = tmp_path_factory.mktemp("mlflow-client")

    def report(name: str) -> Json:
        if name not in reports:
            try:
                got = run_client(mlflow_python, server, name, work, GIVEN[name])
                assert got["mlflow_version"] == MLFLOW_VERSION
                assert server.alive(), server.output()
                reports[name] = got
            except Exception as exc:
                reports[name] = exc
        result = reports[name]
        if isinstance(result, BaseException):
            raise result
        return result

    return report


@pytest.fixture
def experiments(scenario: Callable[[str], Json]) -> Json:
    return scenario("experiments")


@pytest.fixture
def runs(scenario: Callable[[str], Json]) -> Json:
    return scenario("runs")


@pytest.fixture
def search(scenario: Callable[[str], Json]) -> Json:
    return scenario("search")


@pytest.fixture
def artifacts(scenario: Callable[[str], Json]) -> Json:
    return scenario("artifacts")


@pytest.fixture
def models(scenario: Callable[[str], Json]) -> Json:
    return scenario("models")


# --- experiments -------------------------------------------------------------------------------


def test_experiments_create_and_get(experiments: Json) -> None:
    got, given = experiments, EXPERIMENTS
    names, ids = given["names"], got["ids"]
    assert len(set(ids)) == len(names)
    for i, (exp, name) in enumerate(zip(got["created"], names, strict=True)):
        assert exp["experiment_id"] == ids[i]
        assert exp["name"] == name
        assert exp["lifecycle_stage"] == "active"
        assert exp["tags"] == (given["tags"] if i == 0 else {})
        assert exp["artifact_location"].startswith("mlflow-artifacts:/"), exp
        assert isinstance(exp["creation_time"], int)
        assert exp["last_update_time"] >= exp["creation_time"]
    assert len({e["artifact_location"] for e in got["created"]}) == len(names)
    assert got["by_name"] == got["created"]
    assert got["by_name_missing"] is None
    assert got["default"]["experiment_id"] == "0"
    assert got["default"]["name"] == "Default"
    assert got["create_duplicate"] == "RESOURCE_ALREADY_EXISTS"
    assert got["get_missing"] == "RESOURCE_DOES_NOT_EXIST"


def test_experiments_rename_and_tags(experiments: Json) -> None:
    got, given = experiments, EXPERIMENTS
    assert got["renamed"]["name"] == given["renamed"]
    assert got["renamed"]["tags"] == given["tags"]
    assert got["renamed"]["last_update_time"] >= got["created"][0]["last_update_time"]
    assert got["renamed_by_new_name"] == got["ids"][0]
    assert got["renamed_old_name"] is None
    # MLflow's own server answers BAD_REQUEST here (its unique constraint fails).
    assert got["rename_to_taken"] in ("RESOURCE_ALREADY_EXISTS", "BAD_REQUEST")

    assert got["tagged"] == given["set_tags"]
    assert got["tag_overwritten"] == "second"
    assert got["after_delete_tag"] == {"stage": "dev", "overwritten": "second"}


def test_experiments_search_like_tags_order_and_pages(experiments: Json) -> None:
    got, names = experiments, EXPERIMENTS["names"]
    matching = sorted(names[1:])  # the first was renamed away
    assert got["search_like"] == matching
    assert got["search_like_desc"] == matching[::-1]
    assert got["search_by_tag"] == [got["ids"][0]]
    # Two full pages and no token after the last: no third, empty page.
    assert got["pages"] == [matching[:2], matching[2:]]


def test_experiments_delete_and_restore(experiments: Json) -> None:
    got, names = experiments, EXPERIMENTS["names"]
    matching = sorted(names[1:])
    assert got["deleted"]["lifecycle_stage"] == "deleted"
    assert got["deleted"]["name"] == names[2]
    assert got["deleted_by_name"] == "deleted"
    assert got["deleted_run_stage"] == "deleted"  # deleting an experiment deletes its runs
    assert sorted(got["search_active"]) == [n for n in matching if n != names[2]]
    assert got["search_deleted"] == [names[2]]
    assert got["search_all"] == matching
    assert got["create_run_in_deleted"] == "INVALID_PARAMETER_VALUE"
    assert got["tag_deleted"] == "INVALID_PARAMETER_VALUE"
    assert "late" not in got["restored"]["tags"]
    assert got["create_deleted_name"] == "RESOURCE_ALREADY_EXISTS"
    assert got["delete_twice"] == "RESOURCE_DOES_NOT_EXIST"
    assert got["restored"]["lifecycle_stage"] == "active"
    assert got["restored"]["experiment_id"] == got["ids"][2]
    assert got["restored_run_stage"] == "active"
    assert got["search_after_restore"] == matching


def test_experiments_fluent_set_experiment(experiments: Json) -> None:
    got, given = experiments, EXPERIMENTS
    fluent = got["fluent"]
    assert fluent["name"] == given["fluent_name"]
    assert fluent["lifecycle_stage"] == "active"
    assert fluent["experiment_id"] not in got["ids"]
    assert got["fluent_again"] == fluent["experiment_id"]
    assert got["fluent_by_name"] == fluent
    assert got["fluent_search"] == [given["fluent_name"]]


# --- runs and logging --------------------------------------------------------------------------


def test_runs_fluent_params_metrics_tags(runs: Json) -> None:
    got, given = runs, RUNS
    active = got["active"]["info"]
    assert active["status"] == "RUNNING"
    assert active["run_name"] == given["fluent_run_name"]
    assert active["end_time"] is None
    assert active["lifecycle_stage"] == "active"
    assert active["artifact_uri"].startswith("mlflow-artifacts:/")

    run = got["fluent_run"]
    info = run["info"]
    assert info["run_id"] == active["run_id"]
    assert info["status"] == "FINISHED"
    assert info["end_time"] >= info["start_time"] == active["start_time"]
    assert info["run_name"] == given["fluent_run_name"]
    assert run["tags"]["mlflow.runName"] == given["fluent_run_name"]
    assert run["params"] == {
        **{k: str(v) for k, v in given["params"].items()},
        **given["more_params"],
    }
    last = max(given["history"], key=lambda m: m["step"])
    metrics = dict(run["metrics"])
    # MLflow's SQL store keeps infinities as the largest finite double; either is faithful.
    assert metrics.pop("inf") in ("Infinity", MAX_DOUBLE)
    assert metrics.pop("neg_inf") in ("-Infinity", -MAX_DOUBLE)
    assert metrics == {"acc": last["value"], **given["metrics"], "nan": "NaN"}
    assert user_tags(run["tags"]) == {**given["start_tags"], **given["tags"]}
    assert got["same_param_same_value"] == "OK"
    assert got["same_param_other_value"] == "INVALID_PARAMETER_VALUE"


def test_runs_metric_history_and_pages(runs: Json) -> None:
    got, given = runs, RUNS
    # MLflow's server answers a history ordered by timestamp, then step, then value.
    sent = [{"key": "acc", **m} for m in given["history"]]
    ordered = sorted(sent, key=lambda m: (m["timestamp"], m["step"], m["value"]))
    assert got["history"] == ordered
    assert got["history_missing"] == []
    assert got["history_pages"] == [ordered[:2], ordered[2:4], ordered[4:]]
    assert len(got["nan_history"]) == 1
    assert got["nan_history"][0]["value"] == "NaN"
    assert got["batch_history"] == [m for m in given["batch"] if m["key"] == "loss"]


def test_runs_nested_and_failed(runs: Json) -> None:
    got = runs
    parent_id = got["fluent_run"]["info"]["run_id"]
    child = got["child"]
    assert child["tags"]["mlflow.parentRunId"] == parent_id
    assert child["metrics"] == {"child_metric": 1.0}
    assert child["info"]["status"] == "FINISHED"
    assert got["child_parent"] == parent_id
    assert got["failed_status"] == "FAILED"


def test_runs_client_create_batch_update_terminate(runs: Json) -> None:
    got, given = runs, RUNS
    created = got["created"]
    assert created["info"]["start_time"] == given["start_time"]
    assert created["info"]["status"] == "RUNNING"
    assert created["info"]["run_name"] == given["client_run_name"]
    assert user_tags(created["tags"]) == given["client_tags"]

    batched = got["batched"]
    latest = {m["key"]: m["value"] for m in sorted(given["batch"], key=lambda m: m["step"])}
    assert batched["metrics"] == {**latest, "single": 7.5}
    assert batched["params"] == given["batch_params"]
    assert user_tags(batched["tags"]) == {
        **given["client_tags"],
        **given["batch_tags"],
        "ünï-tag": "välue ✓",
    }

    assert got["renamed"]["info"]["run_name"] == given["renamed_run"]
    assert got["renamed"]["tags"]["mlflow.runName"] == given["renamed_run"]
    assert "ünï-tag" not in got["terminated"]["tags"]
    assert got["delete_missing_tag"] == "RESOURCE_DOES_NOT_EXIST"
    terminated = got["terminated"]["info"]
    assert terminated["status"] == "KILLED"
    assert terminated["end_time"] == given["end_time"]
    assert got["get_missing_run"] == "RESOURCE_DOES_NOT_EXIST"
    assert got["log_to_missing_run"] == "RESOURCE_DOES_NOT_EXIST"


def test_runs_delete_and_restore(runs: Json) -> None:
    got, given = runs, RUNS
    run_id = got["created"]["info"]["run_id"]
    assert got["deleted"]["info"]["lifecycle_stage"] == "deleted"
    assert got["deleted"]["params"] == given["batch_params"]
    # MLflow refuses any write to a deleted run ("must be in the 'active' state").
    assert got["writes_to_deleted"] == {
        "log_metric": "INVALID_PARAMETER_VALUE",
        "log_param": "INVALID_PARAMETER_VALUE",
        "set_tag": "INVALID_PARAMETER_VALUE",
        "log_batch": "INVALID_PARAMETER_VALUE",
    }
    restored = got["restored"]
    assert "late" not in restored["metrics"]
    assert set(restored["params"]) == set(given["batch_params"])
    assert "late" not in restored["tags"]
    active = sorted([given["fluent_run_name"], "child", "fails"])
    assert got["search_active"] == active
    assert got["search_deleted"] == [run_id]
    assert got["search_all"] == sorted([*active, given["renamed_run"]])
    assert got["restored"]["info"]["lifecycle_stage"] == "active"
    assert got["restored"]["metrics"] == got["batched"]["metrics"]
    assert got["search_after_restore"] == got["search_all"]
    assert got["delete_missing_run"] == "RESOURCE_DOES_NOT_EXIST"


# --- search and pagination ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "query"),
    list(enumerate(SEARCH_QUERIES)),
    ids=[f"{f or '(all)'} | {', '.join(o) or '(default)'}" for f, o, _, _ in SEARCH_QUERIES],
)
def test_search_runs_filter_and_order(
    search: Json, index: int, query: tuple[str, list[str], list[int], list[str]]
) -> None:
    assert search["queries"][index] == query[3]


def test_search_runs_bad_filter_and_pages(search: Json) -> None:
    assert search["bad_filter"] == "INVALID_PARAMETER_VALUE"
    by_start = [r["name"] for r in sorted(SEARCH["runs"], key=lambda r: r["start_time"])]
    assert search["pages"] == [by_start[:3], by_start[3:6], by_start[6:]]


def test_search_runs_return_what_was_logged(search: Json) -> None:
    runs = search["full_runs"]
    assert sorted(runs) == sorted(r["name"] for r in SEARCH["runs"])
    for spec in SEARCH["runs"]:
        run = runs[spec["name"]]
        assert run["info"]["experiment_id"] == search["experiment_ids"][spec["experiment"]]
        assert run["info"]["start_time"] == spec["start_time"]
        assert run["info"]["status"] == spec["status"]
        assert run["info"]["end_time"] >= spec["start_time"]
        assert run["metrics"] == spec["metrics"]
        assert run["params"] == spec["params"]
        assert user_tags(run["tags"]) == spec["tags"]


def test_search_runs_fluent(search: Json) -> None:
    assert search["fluent_frame"] == {
        "columns": ["metrics.loss", "metrics.score", "params.kind"],
        "run_names": ["r7", "r3", "r6", "r1"],
        "scores": [0.6, 0.7, 0.8, 0.9],
    }
    assert search["fluent_list"] == ["r0", "r2", "r4", "r6"]


# --- artifacts -----------------------------------------------------------------------------------


def _content(spec: Json) -> bytes:
    """The bytes mlflow_client.py writes for a file spec (the same recipe)."""
    if "text" in spec:
        return str(spec["text"]).encode()
    block = hashlib.sha256(str(spec["seed"]).encode()).digest()
    return (block * (spec["size"] // len(block) + 1))[: spec["size"]]


FILES = {rel: _content(spec) for rel, spec in ARTIFACTS["files"].items()}
DIGESTS = {rel: hashlib.sha256(data).hexdigest() for rel, data in FILES.items()}
NESTED_NAME = Path(ARTIFACTS["nested_file"]).name


def test_artifacts_listing(artifacts: Json) -> None:
    got, given = artifacts, ARTIFACTS
    assert got["sent"] == dict(sorted(DIGESTS.items()))
    root = by_path(got["list_root"])
    if root.get("empty.bin") == (False, None):  # MLflow's server omits a size of 0
        root["empty.bin"] = (False, 0)
    assert root == {
        **{rel: (False, len(FILES[rel])) for rel in given["root_files"]},
        "deep": (True, None),
        "tree": (True, None),
        "notes": (True, None),
        "config.json": (False, root["config.json"][1]),
        "by-client": (True, None),
    }
    assert [f["path"] for f in got["list_root"]] == sorted(root)
    assert by_path(got["list_tree"]) == {"tree/a.txt": (False, 1), "tree/sub": (True, None)}
    nested = given["nested_file"]
    assert by_path(got["list_deep"]) == {f"deep/er/{NESTED_NAME}": (False, len(FILES[nested]))}
    assert got["list_missing"] == []
    assert got["fluent_list"] == got["list_root"]


def test_artifacts_download_and_load(artifacts: Json) -> None:
    got, given = artifacts, ARTIFACTS
    first, nested = given["root_files"][0], given["nested_file"]
    assert got["download_file"] == {first: DIGESTS[first]}
    tree = {rel.removeprefix("tree/"): d for rel, d in DIGESTS.items() if rel.startswith("tree/")}
    assert got["download_dir"] == tree
    everything = {
        **{rel: DIGESTS[rel] for rel in given["root_files"]},
        **{f"tree/{rel}": d for rel, d in tree.items()},
        f"deep/er/{NESTED_NAME}": DIGESTS[nested],
        f"by-client/{NESTED_NAME}": DIGESTS[nested],
        "notes/readme.txt": hashlib.sha256(given["text"].encode()).hexdigest(),
    }
    all_files = dict(got["download_all"])
    assert all_files.pop("config.json")
    assert all_files == everything
    assert got["download_by_uri"] == {f"er/{NESTED_NAME}": DIGESTS[nested]}
    assert got["download_runs_uri"] == {NESTED_NAME: DIGESTS[nested]}
    assert got["load_text"] == given["text"]
    assert got["load_dict"] == given["dict"]
    assert got["download_missing"] != "OK"


def test_artifacts_stored_under_artifacts_destination(
    artifacts: Json, server: TrackingServer
) -> None:
    uri = artifacts["artifact_uri"]
    assert uri.startswith("mlflow-artifacts:/")
    on_disk = server.artifacts / uri.removeprefix("mlflow-artifacts:/").lstrip("/")
    assert (on_disk / "big.bin").read_bytes() == FILES["big.bin"]
    assert (on_disk / "notes" / "readme.txt").read_text(encoding="utf-8") == ARTIFACTS["text"]


# --- logged models -----------------------------------------------------------------------------


def test_models_sklearn_log_model_files_under_run(models: Json) -> None:
    got = models
    skops, pickled = got["infos"]
    assert skops["name"] == "model"
    assert pickled["name"] == "model_cp"
    for info in (skops, pickled):
        assert info["run_id"] == got["run_id"]
        assert info["model_uri"] == f"models:/{info['model_id']}"
        assert info["flavors"] == ["python_function", "sklearn"]

    # MLflow 3's layout: the files live with the logged model (experiment's models/<id>/),
    # not in the run's own artifact folder, exactly as MLflow's server keeps them ...
    assert got["run_artifacts"] == []
    # ... and the client reaches them through the run: list_artifacts(run_id, "model") joins
    # the run's folder with the logged model of that name. Each file is listed once.
    model_files = [f["path"] for f in got["model_files"]]
    assert {"model/MLmodel", "model/model.skops"} <= set(model_files), model_files
    assert len(model_files) == len(set(model_files)), model_files
    model_cp_files = [f["path"] for f in got["model_cp_files"]]
    assert "model_cp/model.pkl" in model_cp_files
    assert len(model_cp_files) == len(set(model_cp_files)), model_cp_files
    logged_files = [f["path"] for f in got["logged_model_files"]]
    assert {"MLmodel", "model.skops"} <= set(logged_files)
    assert sorted(logged_files) == sorted({p.removeprefix("model/") for p in model_files})


def test_models_ready_and_searchable(models: Json) -> None:
    got = models
    skops, pickled = got["infos"]
    for logged, info in zip(got["logged"], (skops, pickled), strict=True):
        assert logged["model_id"] == info["model_id"]
        assert logged["status"] == "READY"
        assert logged["name"] == info["name"]
        assert logged["experiment_id"] == got["experiment_id"]
        assert logged["source_run_id"] == got["run_id"]
        assert logged["last_updated_timestamp"] >= logged["creation_timestamp"]
    # log_model records the active run's parameters on the model too.
    assert got["logged"][0]["params"] == {**MODELS["model_params"], "max_depth": "3"}
    assert got["logged"][1]["params"] == {"max_depth": "3"}

    ids = sorted([skops["model_id"], pickled["model_id"]])
    assert got["search"] == ids
    assert got["search_by_name"] == [skops["model_id"]]
    assert got["fluent_search"] == ids
    assert [len(page) for page in got["search_pages"]] == [1, 1]
    assert sorted(m for page in got["search_pages"] for m in page) == ids


def test_models_load_back(models: Json) -> None:
    got = models
    assert got["loaded_predictions"] == got["expected_predictions"]
    assert got["runs_uri_predictions"] == got["expected_predictions"]
    assert {"MLmodel", "model.skops"} <= set(got["downloaded_model"])


def test_models_recorded_as_run_outputs(models: Json) -> None:
    """MLflow 3 records the models a run logged as the run's outputs (GetRun's run.outputs),
    and the run's tags are only those the client set."""
    run = models["run"]
    ids = sorted(info["model_id"] for info in models["infos"])
    assert run["params"] == {"max_depth": "3"}
    assert sorted(o["model_id"] for o in run["model_outputs"]) == ids
    assert user_tags(run["tags"]) == {}


def test_models_logged_model_api(models: Json) -> None:
    got, manual = models, MODELS["manual"]
    created = got["manual_created"]
    assert created["status"] == "PENDING"
    assert created["name"] == manual["name"]
    assert created["experiment_id"] == got["experiment_id"]
    assert created["source_run_id"] == got["run_id"]
    assert created["model_type"] == manual["model_type"]
    assert created["tags"] == manual["tags"]
    assert created["params"] == manual["params"]

    expected_tags = {**manual["tags"], **manual["more_tags"]}
    del expected_tags[manual["deleted_tag"]]
    for model in (got["manual_finalized"], got["manual_got"]):
        assert model["model_id"] == created["model_id"]
        assert model["status"] == "READY"
        assert model["tags"] == expected_tags
        assert model["params"] == manual["params"]
        assert model["last_updated_timestamp"] >= created["creation_timestamp"]
    assert got["manual_get_deleted"] == "RESOURCE_DOES_NOT_EXIST"
    # A metric logged with the model's id is attached to the model; search finds it by dataset.
    assert got["manual_metrics"] == [
        {
            "key": "auc",
            "value": 0.9,
            "timestamp": 1234,
            "step": 2,
            "run_id": got["run_id"],
            "model_id": created["model_id"],
            "dataset_name": "val",
            "dataset_digest": "d1",
        }
    ]
    assert got["search_by_dataset"] == {"val": [created["model_id"]], "other": []}
    assert got["search_after_delete"] == sorted(info["model_id"] for info in got["infos"])
    assert got["get_missing"] == "RESOURCE_DOES_NOT_EXIST"
