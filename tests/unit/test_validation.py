"""What a run may record (MLflow's key and number rules, at the store so every way in refuses
the same), and the REST API's answer to anything a client may send: a 4xx, never a 500."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reprorun import _json
from reprorun.errors import UserInputError
from reprorun.tracking.entities import Metric
from reprorun.tracking.mlflow_api.api import MlflowApi
from reprorun.tracking.mlflow_api.context import ArtifactUris
from reprorun.tracking.mlflow_api.routes import routes
from reprorun.tracking.mlflow_api.routing import API
from reprorun.tracking.store.database import SqliteDatabase
from reprorun.tracking.store.sql import SqlStore
from reprorun.tracking.validation import check_key
from tests.conftest import reprorun_cli

BAD_KEYS = [
    "../../etc/x",
    "..",
    ".",
    "./a",
    "a/./b",
    "a/../b",
    "a//b",
    "/abs",
    "a/",
    "a\\b",
    "a\x00b",
    "a\nb",
    "abc\n",  # a pattern's '$' also matches before a final newline
    "train/loss\n",
    "a%2e",
    "semi;colon",
    "",
    "k" * 251,
]
GOOD_KEYS = ["acc", "train/loss", "a b", "a-b_c.d", "ns:metric", "ünïcode", "mlflow.runName"]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    s = SqlStore(SqliteDatabase(str(tmp_path / "store.db")), (tmp_path / "artifacts").as_uri())
    yield s
    s.close()


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_refused_as_mlflow_does(key: str) -> None:
    with pytest.raises(UserInputError, match="metric key"):
        check_key(key, "metric")


@pytest.mark.parametrize("key", GOOD_KEYS)
def test_keys_mlflow_accepts_are_accepted(key: str) -> None:
    check_key(key, "tag")


@pytest.mark.parametrize("key", ["../../etc/x", "a//b", "/abs", "x;y", "abc\n"])
def test_the_store_refuses_bad_keys_on_every_write(store: SqlStore, key: str) -> None:
    run_id = store.create_run("0").info.run_id
    attempts = [
        lambda: store.log_param(run_id, key, "1"),
        lambda: store.set_tag(run_id, key, "1"),
        lambda: store.log_metric(run_id, Metric(key, 1.0, 1, 0)),
        lambda: store.log_batch(run_id, params={key: "1"}),
        lambda: store.log_batch(run_id, tags={key: "1"}),
        lambda: store.create_run("0", tags={key: "1"}),
        lambda: store.create_run("0", params={key: "1"}),
        lambda: store.set_experiment_tag("0", key, "1"),
        lambda: store.create_experiment("e", tags={key: "1"}),
    ]
    for attempt in attempts:
        with pytest.raises(UserInputError, match="key"):
            attempt()
    run = store.get_run(run_id)
    assert key not in run.data.params and key not in run.data.tags
    assert key not in run.data.metrics
    assert store.get_experiment_by_name("e") is None


@pytest.mark.parametrize(
    ("timestamp", "step"), [(1, 2**70), (1, -(2**63) - 1), (2**63, 0), (-1, 0)]
)
def test_metric_numbers_out_of_range_are_user_errors(
    store: SqlStore, timestamp: int, step: int
) -> None:
    run_id = store.create_run("0").info.run_id
    with pytest.raises(UserInputError, match="metric 'm'"):
        store.log_metric(run_id, Metric("m", 1.0, timestamp, step))
    assert store.get_metric_history(run_id, "m") == []


def test_metric_extremes_mlflow_accepts_are_stored(store: SqlStore) -> None:
    run_id = store.create_run("0").info.run_id
    store.log_batch(
        run_id,
        metrics=[
            Metric("m", math.nan, 0, 2**63 - 1),
            Metric("m", math.inf, 2**63 - 1, -(2**63)),
        ],
    )
    assert len(store.get_metric_history(run_id, "m")) == 2


def test_run_times_and_names_are_checked(store: SqlStore) -> None:
    with pytest.raises(UserInputError, match="start_time"):
        store.create_run("0", start_time=2**64)
    run_id = store.create_run("0").info.run_id
    with pytest.raises(UserInputError, match="end_time"):
        store.update_run(run_id, end_time=2**64)
    with pytest.raises(UserInputError, match="limit"):
        store.update_run(run_id, run_name="n" * 9000)
    with pytest.raises(UserInputError, match="500"):
        store.create_experiment("e" * 501)
    with pytest.raises(UserInputError, match="model name"):
        store.create_logged_model("0", name="../x")


# --- the REST API over anything ------------------------------------------------------------


def _api(tmp_path: Path) -> tuple[MlflowApi, str, str]:
    store = SqlStore(SqliteDatabase(str(tmp_path / "s.db")), (tmp_path / "art").as_uri())
    run_id = store.create_run("0").info.run_id
    model_id = store.create_logged_model("0", source_run_id=run_id).model_id
    return MlflowApi(store, ArtifactUris(store.artifact_root, proxied=False)), run_id, model_id


class Deep(int):
    """Stands for arrays nested this deep in a generated body (json.dumps cannot write them)."""


def encode(value: Any) -> str:
    if isinstance(value, Deep):
        return "[" * value + "]" * value
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(encode(v) for v in value) + "]"
    return json.dumps(value)


def call(api: MlflowApi, method: str, path: str, body: Any) -> tuple[int, dict[str, Any]]:
    if method == "GET":
        query = {k: [_query_value(v)] for k, v in body.items()}
        return api.handle(method, API + path, query, b"")
    raw = body if isinstance(body, bytes) else encode(body).encode()
    return api.handle(method, API + path, {}, raw)


def _query_value(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value if isinstance(value, str) else encode(value)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/runs/log-metric", {"key": "m", "value": 1, "timestamp": 1, "step": 2**70}, "step"),
        ("/runs/log-metric", {"key": "m", "value": 1, "timestamp": 2**64}, "timestamp"),
        ("/runs/log-metric", {"key": "m", "value": 10**400, "timestamp": 1}, "value"),
        ("/runs/log-metric", {"key": "m", "value": 1, "timestamp": -5}, "timestamp"),
        ("/runs/log-metric", {"key": "../../etc/x", "value": 1, "timestamp": 1}, "key"),
        ("/runs/log-parameter", {"key": "../../etc/x", "value": "1"}, "key"),
        ("/runs/set-tag", {"key": "a//b", "value": "1"}, "key"),
        ("/runs/log-batch", {"params": [{"key": "/etc", "value": "1"}]}, "key"),
        (
            "/runs/log-batch",
            {"metrics": [{"key": "m", "value": 1, "timestamp": 1, "step": 2**70}]},
            "step",
        ),
        ("/runs/log-batch", {"metrics": {"key": "m"}}, "metrics"),
        ("/runs/log-batch", {"params": "p"}, "params"),
        ("/runs/log-model", {"model_json": "[" * 100_000 + "]" * 100_000}, "model_json"),
        ("/runs/update", {"end_time": 2**70}, "end_time"),
    ],
)
def test_out_of_range_and_bad_keys_are_400_naming_the_field(
    tmp_path: Path, path: str, body: dict[str, Any], field: str
) -> None:
    api, run_id, _ = _api(tmp_path)
    status, reply = call(api, "POST", path, {"run_id": run_id, **body})
    assert status == 400, reply
    assert reply["error_code"] == "INVALID_PARAMETER_VALUE"
    assert field in reply["message"] or "nest" in reply["message"]


@pytest.mark.parametrize(
    ("route", "field"),
    [
        ("/runs/log-metric", "key"),
        ("/runs/log-metric", "value"),
        ("/runs/log-inputs", "datasets"),
        ("/runs/log-inputs", "models"),
        ("/runs/outputs", "models"),
        ("/runs/log-batch", "metrics"),
        ("/runs/set-tag", "value"),
    ],
)
@pytest.mark.parametrize("depth", [900, 2000, 100_000])
def test_deeply_nested_json_is_a_400(tmp_path: Path, route: str, field: str, depth: int) -> None:
    api, run_id, _ = _api(tmp_path)
    deep = b"[" * depth + b"]" * depth
    body = b'{"run_id": "%s", "key": "k", "%s": [%s]}' % (run_id.encode(), field.encode(), deep)
    status, reply = api.handle("POST", API + route, {}, body)
    assert status == 400, reply
    # Nesting where the route reads nothing is ignored, as any unknown field.
    body = b'{"run_id": "%s", "key": "k", "value": 1, "unknown": %s}' % (run_id.encode(), deep)
    assert api.handle("POST", API + route, {}, body)[0] != 500


def test_a_bad_value_in_a_json_tag_does_not_break_reading_the_run(tmp_path: Path) -> None:
    api, run_id, _ = _api(tmp_path)
    for key, value in (("reprorun.inputs", "[1]"), ("mlflow.log-model.history", "{")):
        assert (
            call(api, "POST", "/runs/set-tag", {"run_id": run_id, "key": key, "value": value})[0]
            == 200
        )
    assert call(api, "GET", "/runs/get", {"run_id": run_id})[0] == 200
    model = {"run_id": run_id, "model_json": json.dumps({"artifact_path": "m"})}
    assert call(api, "POST", "/runs/log-model", model)[0] == 200
    assert call(api, "POST", "/runs/log-inputs", {"run_id": run_id, "datasets": [{}]})[0] == 200


FIELDS = [
    "run_id", "run_uuid", "experiment_id", "experiment_ids", "key", "value", "step",
    "timestamp", "metrics", "params", "tags", "name", "new_name", "status", "end_time",
    "start_time", "max_results", "page_token", "filter", "order_by", "run_view_type",
    "view_type", "model_json", "datasets", "models", "metric_key", "path", "run_name",
    "artifact_location", "source_run_id", "artifact_directory_path", "allow_deleted",
]  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([10**400, -(10**400), 2**63, -(2**63) - 1]),
    st.floats(allow_nan=False),
    st.integers(min_value=200, max_value=3000).map(Deep),
    st.text(max_size=12),
    st.sampled_from(["NaN", "Infinity", "../../etc/x", "0", "1", "ACTIVE_ONLY", "FINISHED"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["key", "value", "step", "timestamp", "x"]), inner),
    ),
    max_leaves=8,
)
BODIES = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=6),
    VALUES,
    st.binary(max_size=20),
    st.integers(min_value=1, max_value=3000).map(lambda n: b"[" * n + b"]" * n),
)
ROUTES = sorted({(method, path) for method, path, _ in routes()})


@pytest.fixture(scope="module")
def fuzz_api(tmp_path_factory: pytest.TempPathFactory) -> tuple[MlflowApi, str, str]:
    """One store for every example (what they write accumulates, as on a real server)."""
    return _api(tmp_path_factory.mktemp("fuzz"))


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=BODIES, use_ids=st.booleans())
def test_no_request_body_makes_a_route_fail_with_500(
    fuzz_api: tuple[MlflowApi, str, str], method: str, path: str, body: Any, use_ids: bool
) -> None:
    api, run_id, model_id = fuzz_api
    concrete = path.removeprefix(API).replace("{model_id}", model_id).replace("{tag_key}", "t")
    if use_ids and isinstance(body, dict):
        body = {"run_id": run_id, "experiment_id": "0", **body}
    if method == "GET" and not isinstance(body, dict):
        body = {"x": body}
    status, reply = call(api, method, concrete, body)  # handle() never raises
    assert status < 500, (status, reply)
    assert set(reply) <= {"error_code", "message"} or status == 200
    _json.dumps(reply)  # what the server sends: it must encode (orjson refuses deep nesting)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["param", "../../etc/x", "1"], "Invalid parameter key '../../etc/x'"),
        (["tag", "a//b", "1"], "Invalid tag key 'a//b'"),
        (["metric", "m", "1", "--step", str(2**70)], "does not fit in a 64-bit integer"),
        (["metric", "/m", "1"], "Invalid metric key '/m'"),
    ],
)
def test_the_cli_refuses_bad_keys_and_numbers_clearly(
    tmp_path: Path, args: list[str], message: str
) -> None:
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    store = SqlStore(SqliteDatabase(str(tmp_path / "store.db")), (tmp_path / "art").as_uri())
    run_id = store.create_run("0").info.run_id
    store.close()
    result = reprorun_cli("log", *args, "--run-id", run_id, "--tracking-uri", uri)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
