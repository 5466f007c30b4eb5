"""`reprorun server` as a real process, driven over HTTP with the standard library only.

Bad input gets MLflow's error body with a 4xx (never a 500, never a partial write); the artifact
proxy keeps every path under its root; authentication guards every endpoint; the server binds
127.0.0.1 by default; concurrent writers lose and duplicate no metric point (one process and
``--workers 2``); /health and /openapi.json answer.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import itertools
import json
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from tests.conftest import reprorun_cli
from tests.integration.server_proc import ServerProcess, server_process, worker_pids

API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
MAX_REQUEST_MB = 1  # the shared server's --max-request-mb
LOAD_SECONDS = 30.0  # how long the load test's writers write
LOAD_THREADS = 8
LOAD_BATCH = 20  # metric points per log-batch request in the load test


# --- HTTP -------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def __str__(self) -> str:  # shown by failing asserts
        return f"HTTP {self.status}: {self.body[:500]!r}"


def send(
    server: ServerProcess,
    method: str,
    path: str,
    body: bytes | str | Iterable[bytes] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60,
) -> Reply:
    """One request on a fresh connection; ``path`` is sent exactly as given (no normalizing)."""
    conn = server.connection(timeout)
    try:
        chunked = body is not None and not isinstance(body, (bytes, str))
        conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()


def call(
    server: ServerProcess,
    method: str,
    endpoint: str,
    body: dict[str, Any] | None = None,
    query: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """A REST API 2.0 call: ``endpoint`` under /api/2.0/mlflow/, a JSON body, a query string."""
    path = f"{API}/{endpoint}" + (f"?{urlencode(query)}" if query else "")
    data = None if body is None else json.dumps(body)
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    return send(server, method, path, data, hdrs)


def ok(reply: Reply) -> Any:
    assert reply.status == 200, str(reply)
    return reply.json()


def assert_error(reply: Reply, status: int, code: str | None = None) -> dict[str, Any]:
    """``reply`` is MLflow's error body with ``status`` (and ``code``, when given)."""
    assert reply.status == status, str(reply)
    assert reply.headers.get_content_type() == "application/json", str(reply)
    body = reply.json()
    assert set(body) >= {"error_code", "message"}, body
    assert isinstance(body["error_code"], str) and body["error_code"], body
    assert isinstance(body["message"], str) and body["message"], body
    if code is not None:
        assert body["error_code"] == code, body
    return body


def create_run(server: ServerProcess, experiment_id: str = "0") -> str:
    run = ok(call(server, "POST", "runs/create", {"experiment_id": experiment_id}))["run"]
    return str(run["info"]["run_id"])


def run_data(server: ServerProcess, run_id: str) -> dict[str, dict[str, Any]]:
    """A run's latest metrics, params and tags as dicts."""
    data = ok(call(server, "GET", "runs/get", query={"run_id": run_id}))["run"]["data"]
    return {
        kind: {item["key"]: item["value"] for item in data.get(kind, [])}
        for kind in ("metrics", "params", "tags")
    }


def metric_history(server: ServerProcess, run_id: str, key: str) -> list[tuple[int, Any, int]]:
    """Every (step, value, timestamp) stored for ``key``, following page tokens."""
    points: list[tuple[int, Any, int]] = []
    query = {"run_id": run_id, "metric_key": key}
    tokens: set[str] = set()
    while True:
        page = ok(call(server, "GET", "metrics/get-history", query=query))
        points += [(m["step"], m["value"], m["timestamp"]) for m in page.get("metrics", [])]
        token = page.get("next_page_token")
        if not token:
            return points
        assert token not in tokens, f"get-history repeats the page token {token!r}"
        tokens.add(token)
        query["page_token"] = token


def files_under(root: Path, skip: Path | None = None) -> dict[str, bytes]:
    """relative path -> content of every file under ``root`` (outside ``skip``)."""
    found = {}
    for path in root.rglob("*"):
        if skip is not None and (path == skip or skip in path.parents):
            continue
        if path.is_file() and not path.is_symlink():
            found[str(path.relative_to(root))] = path.read_bytes()
    return found


# --- servers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server without authentication for the module's read-mostly tests."""
    workdir = tmp_path_factory.mktemp("server")
    with server_process(workdir, "--max-request-mb", str(MAX_REQUEST_MB)) as proc:
        yield proc


@pytest.fixture
def run_id(server: ServerProcess) -> str:
    return create_run(server)


@pytest.fixture(autouse=True)
def _shared_server_survives(request: pytest.FixtureRequest) -> Iterator[None]:
    """Whatever a test sent, the shared server is still up after it."""
    yield
    shared = request.node.funcargs.get("server")
    if isinstance(shared, ServerProcess):
        assert shared.alive(), f"the server died:\n{shared.log()}"


# --- 5. /health and /openapi.json ---------------------------------------------------------------


def test_health_answers_ok(server: ServerProcess) -> None:
    reply = send(server, "GET", "/health")
    assert reply.status == 200
    assert reply.body == b"OK"


def test_openapi_describes_the_rest_api(server: ServerProcess) -> None:
    reply = send(server, "GET", "/openapi.json")
    assert reply.status == 200
    assert reply.headers.get_content_type() == "application/json"
    spec = reply.json()
    assert spec["openapi"].startswith("3.")
    assert spec["info"]["title"] and spec["info"]["version"]
    paths = spec["paths"]
    search = paths[f"{API}/runs/search"]
    assert {"post", "get"} <= set(search)
    assert "200" in search["post"]["responses"]
    assert f"{API}/runs/log-batch" in paths and "post" in paths[f"{API}/runs/log-batch"]
    assert {"get", "put"} <= set(paths[ARTIFACTS + "/{artifact_path}"])
    methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    for path, operations in paths.items():
        assert path.startswith("/"), path
        assert operations and set(operations) <= methods, (path, operations)
        for operation in operations.values():
            assert operation["responses"], (path, operation)


# --- 1. bad input -------------------------------------------------------------------------------

RUN = "$RUN"  # replaced by the test's run id in bodies and queries
MISSING_RUN = "0123456789abcdef0123456789abcdef"
HUGE_OFFSET_TOKEN = base64.b64encode(b'{"offset": 99999999999999999999}').decode()


def _metric(step: int = 0, **extra: Any) -> dict[str, Any]:
    return {"key": "m", "value": 1.5, "timestamp": 1_700_000_000_000, "step": step, **extra}


BAD_REQUESTS = [
    # (method, endpoint, JSON body or raw bytes, query, status, error code)
    # malformed bodies
    pytest.param("POST", "runs/log-metric", b'{"run_id": "$RUN", "key": "m", "value": 1', None, 400, "MALFORMED_REQUEST", id="malformed-json"),
    pytest.param("POST", "runs/log-metric", b'{"run_id": "\xff\xfe"}', None, 400, "MALFORMED_REQUEST", id="not-utf8"),
    pytest.param("POST", "runs/log-metric", [{"run_id": RUN, **_metric()}], None, 400, "MALFORMED_REQUEST", id="json-array"),
    pytest.param("POST", "runs/log-batch", b"null", None, 400, "MALFORMED_REQUEST", id="json-null"),
    pytest.param("POST", "runs/log-batch", b'"text"', None, 400, "MALFORMED_REQUEST", id="json-string"),
    # wrong types
    pytest.param("POST", "runs/log-parameter", {"run_id": RUN, "key": "p", "value": 5}, None, 400, "INVALID_PARAMETER_VALUE", id="param-value-int"),
    pytest.param("POST", "runs/log-metric", {"run_id": RUN, **_metric(), "step": "abc"}, None, 400, "INVALID_PARAMETER_VALUE", id="metric-step-text"),
    pytest.param("POST", "runs/log-metric", {"run_id": RUN, **_metric(), "value": "abc"}, None, 400, "INVALID_PARAMETER_VALUE", id="metric-value-text"),
    pytest.param("POST", "runs/log-metric", {"run_id": RUN, **_metric(), "timestamp": [1]}, None, 400, "INVALID_PARAMETER_VALUE", id="metric-timestamp-list"),
    pytest.param("POST", "runs/log-metric", {"run_id": 5, **_metric()}, None, 400, "INVALID_PARAMETER_VALUE", id="run-id-int"),
    pytest.param("POST", "runs/log-batch", {"run_id": RUN, "metrics": "x"}, None, 400, "INVALID_PARAMETER_VALUE", id="batch-metrics-text"),
    pytest.param("POST", "runs/log-batch", {"run_id": RUN, "metrics": [_metric(), 5]}, None, 400, "INVALID_PARAMETER_VALUE", id="batch-metric-int"),
    pytest.param("POST", "runs/log-batch", {"run_id": RUN, "metrics": [_metric()], "params": {"a": "b"}}, None, 400, "INVALID_PARAMETER_VALUE", id="batch-params-object"),
    pytest.param("POST", "runs/log-batch", {"run_id": RUN, "metrics": [_metric()], "tags": [{"key": "t", "value": 1}]}, None, 400, "INVALID_PARAMETER_VALUE", id="batch-tag-value-int"),
    # out-of-range integers are bad input, not an internal error
    pytest.param("POST", "runs/log-metric", {"run_id": RUN, **_metric(), "timestamp": 10**30}, None, 400, "INVALID_PARAMETER_VALUE", id="metric-timestamp-overflow"),
    pytest.param("POST", "runs/log-metric", {"run_id": RUN, **_metric(step=2**63)}, None, 400, "INVALID_PARAMETER_VALUE", id="metric-step-overflow"),
    pytest.param("POST", "runs/log-batch", {"run_id": RUN, "metrics": [_metric(0), _metric(step=-(2**64))]}, None, 400, "INVALID_PARAMETER_VALUE", id="batch-step-overflow"),
    # unknown resources
    pytest.param("GET", "runs/get", None, {"run_id": MISSING_RUN}, 404, "RESOURCE_DOES_NOT_EXIST", id="get-unknown-run"),
    pytest.param("POST", "runs/log-metric", {"run_id": MISSING_RUN, **_metric()}, None, 404, "RESOURCE_DOES_NOT_EXIST", id="log-metric-unknown-run"),
    pytest.param("POST", "runs/log-batch", {"run_id": MISSING_RUN, "metrics": [_metric()]}, None, 404, "RESOURCE_DOES_NOT_EXIST", id="log-batch-unknown-run"),
    pytest.param("POST", "runs/log-parameter", {"run_id": MISSING_RUN, "key": "p", "value": "v"}, None, 404, "RESOURCE_DOES_NOT_EXIST", id="log-param-unknown-run"),
    pytest.param("GET", "experiments/get", None, {"experiment_id": "987654321"}, 404, "RESOURCE_DOES_NOT_EXIST", id="get-unknown-experiment"),
    pytest.param("GET", "experiments/get-by-name", None, {"experiment_name": "no such experiment"}, 404, "RESOURCE_DOES_NOT_EXIST", id="get-unknown-experiment-name"),
    pytest.param("POST", "runs/create", {"experiment_id": "987654321"}, None, 404, "RESOURCE_DOES_NOT_EXIST", id="run-in-unknown-experiment"),
    # missing required fields
    pytest.param("POST", "runs/log-metric", {"run_id": RUN, "value": 1.0, "timestamp": 1}, None, 400, "INVALID_PARAMETER_VALUE", id="metric-without-key"),
    pytest.param("POST", "runs/log-metric", {"run_id": RUN, "key": "m", "timestamp": 1}, None, 400, "INVALID_PARAMETER_VALUE", id="metric-without-value"),
    pytest.param("POST", "runs/log-metric", _metric(), None, 400, "INVALID_PARAMETER_VALUE", id="metric-without-run-id"),
    pytest.param("POST", "runs/log-parameter", {"run_id": RUN, "key": "p"}, None, 400, "INVALID_PARAMETER_VALUE", id="param-without-value"),
    pytest.param("POST", "runs/log-batch", {"run_id": RUN, "metrics": [{"value": 1.0}]}, None, 400, "INVALID_PARAMETER_VALUE", id="batch-metric-without-key"),
    pytest.param("GET", "runs/get", None, None, 400, "INVALID_PARAMETER_VALUE", id="get-run-without-id"),
    pytest.param("GET", "metrics/get-history", None, {"run_id": RUN}, 400, "INVALID_PARAMETER_VALUE", id="history-without-key"),
    pytest.param("POST", "experiments/create", {}, None, 400, "INVALID_PARAMETER_VALUE", id="experiment-without-name"),
    # filters that do not parse
    pytest.param("POST", "runs/search", {"experiment_ids": ["0"], "filter": "metrics.acc >"}, None, 400, "INVALID_PARAMETER_VALUE", id="filter-truncated"),
    pytest.param("POST", "runs/search", {"experiment_ids": ["0"], "filter": "params.x = 5"}, None, 400, "INVALID_PARAMETER_VALUE", id="filter-param-number"),
    pytest.param("GET", "runs/search", None, {"experiment_ids": "0", "filter": "metrics.acc >"}, 400, "INVALID_PARAMETER_VALUE", id="filter-truncated-get"),
    pytest.param("POST", "runs/search", {"experiment_ids": ["0"], "order_by": ["metrics."]}, None, 400, "INVALID_PARAMETER_VALUE", id="order-by-truncated"),
    # page tokens
    pytest.param("POST", "runs/search", {"experiment_ids": ["0"], "page_token": "not a token!"}, None, 400, "INVALID_PARAMETER_VALUE", id="runs-page-token-garbage"),
    pytest.param("POST", "runs/search", {"experiment_ids": ["0"], "page_token": base64.b64encode(b"[1]").decode()}, None, 400, "INVALID_PARAMETER_VALUE", id="runs-page-token-not-object"),
    pytest.param("POST", "runs/search", {"experiment_ids": ["0"], "page_token": HUGE_OFFSET_TOKEN}, None, 400, "INVALID_PARAMETER_VALUE", id="runs-page-token-huge-offset"),
    pytest.param("POST", "experiments/search", {"page_token": "not a token!"}, None, 400, "INVALID_PARAMETER_VALUE", id="experiments-page-token-garbage"),
    pytest.param("POST", "experiments/search", {"page_token": HUGE_OFFSET_TOKEN}, None, 400, "INVALID_PARAMETER_VALUE", id="experiments-page-token-huge-offset"),
    pytest.param("GET", "metrics/get-history", None, {"run_id": RUN, "metric_key": "m", "page_token": "zzz"}, 400, "INVALID_PARAMETER_VALUE", id="history-page-token-garbage"),
    # max_results
    pytest.param("POST", "runs/search", {"experiment_ids": ["0"], "max_results": 0}, None, 400, "INVALID_PARAMETER_VALUE", id="runs-max-results-0"),
    pytest.param("POST", "runs/search", {"experiment_ids": ["0"], "max_results": -1}, None, 400, "INVALID_PARAMETER_VALUE", id="runs-max-results-negative"),
    pytest.param("POST", "runs/search", {"experiment_ids": ["0"], "max_results": 10**12}, None, 400, "INVALID_PARAMETER_VALUE", id="runs-max-results-huge"),
    pytest.param("POST", "experiments/search", {"max_results": 0}, None, 400, "INVALID_PARAMETER_VALUE", id="experiments-max-results-0"),
    pytest.param("POST", "experiments/search", {"max_results": 10**12}, None, 400, "INVALID_PARAMETER_VALUE", id="experiments-max-results-huge"),
    pytest.param("GET", "metrics/get-history", None, {"run_id": RUN, "metric_key": "m", "max_results": "-1"}, 400, "INVALID_PARAMETER_VALUE", id="history-max-results-negative"),
    # huge values
    pytest.param("POST", "runs/log-parameter", {"run_id": RUN, "key": "p", "value": "v" * 10_000}, None, 400, "INVALID_PARAMETER_VALUE", id="param-value-10000-chars"),
    pytest.param("POST", "runs/set-tag", {"run_id": RUN, "key": "t", "value": "v" * 100_000}, None, 400, "INVALID_PARAMETER_VALUE", id="tag-value-100000-chars"),
    pytest.param("POST", "runs/log-metric", {"run_id": RUN, **_metric(), "key": "k" * 1000}, None, 400, "INVALID_PARAMETER_VALUE", id="metric-key-1000-chars"),
    pytest.param("POST", "runs/log-batch", {"run_id": RUN, "metrics": [_metric(i) for i in range(1001)]}, None, 400, "INVALID_PARAMETER_VALUE", id="batch-1001-metrics"),
    pytest.param("POST", "runs/log-batch", {"run_id": RUN, "params": [{"key": f"p{i}", "value": "v"} for i in range(101)]}, None, 400, "INVALID_PARAMETER_VALUE", id="batch-101-params"),
    pytest.param("POST", "runs/log-batch", {"run_id": RUN, "metrics": [_metric(0)], "params": [{"key": "p", "value": "v" * 10_000}]}, None, 400, "INVALID_PARAMETER_VALUE", id="batch-param-10000-chars"),
    # routing
    pytest.param("GET", "runs/no-such-endpoint", None, None, 404, "ENDPOINT_NOT_FOUND", id="unknown-endpoint-get"),
    pytest.param("POST", "no/such/endpoint", {"run_id": RUN}, None, 404, "ENDPOINT_NOT_FOUND", id="unknown-endpoint-post"),
    pytest.param("GET", "runs/log-metric", None, {"run_id": RUN, "key": "m", "value": "1"}, 405, None, id="get-on-post-endpoint"),
    pytest.param("POST", "runs/get", {"run_id": RUN}, None, 405, None, id="post-on-get-endpoint"),
    pytest.param("DELETE", "runs/log-batch", {"run_id": RUN, "metrics": [_metric()]}, None, 405, None, id="delete-on-post-endpoint"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "endpoint", "body", "query", "status", "code"), BAD_REQUESTS)
def test_bad_request_is_a_4xx_error_and_writes_nothing(
    server: ServerProcess,
    run_id: str,
    method: str,
    endpoint: str,
    body: Any,
    query: dict[str, str] | None,
    status: int,
    code: str | None,
) -> None:
    before = run_data(server, run_id)
    raw = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
    if raw is not None:
        raw = raw.replace(RUN.encode(), run_id.encode())
    if query is not None:
        query = {k: v.replace(RUN, run_id) for k, v in query.items()}
    path = f"{API}/{endpoint}" + (f"?{urlencode(query)}" if query else "")
    reply = send(server, method, path, raw, {"Content-Type": "application/json"})

    assert_error(reply, status, code)
    assert run_data(server, run_id) == before
    assert metric_history(server, run_id, "m") == []


def test_log_batch_with_a_conflicting_param_stores_nothing(server: ServerProcess) -> None:
    run_id = create_run(server)
    ok(call(server, "POST", "runs/log-parameter", {"run_id": run_id, "key": "lr", "value": "0.1"}))
    before = run_data(server, run_id)
    batch = {
        "run_id": run_id,
        "metrics": [
            {"key": "acc", "value": 0.5 + i / 10, "timestamp": 1000 + i, "step": i}
            for i in range(3)
        ],
        "params": [{"key": "epochs", "value": "10"}, {"key": "lr", "value": "0.2"}],
        "tags": [{"key": "stage", "value": "train"}],
    }
    reply = call(server, "POST", "runs/log-batch", batch)

    assert_error(reply, 400, "INVALID_PARAMETER_VALUE")
    assert "lr" in reply.json()["message"]
    after = run_data(server, run_id)
    assert after == before
    assert after["params"] == {"lr": "0.1"}
    assert "stage" not in after["tags"] and after["metrics"] == {}
    assert metric_history(server, run_id, "acc") == []

    # The same batch without the conflict goes through whole: the refusal was only the conflict.
    batch["params"] = [{"key": "epochs", "value": "10"}, {"key": "lr", "value": "0.1"}]
    ok(call(server, "POST", "runs/log-batch", batch))
    after = run_data(server, run_id)
    assert after["params"] == {"lr": "0.1", "epochs": "10"}
    assert after["tags"]["stage"] == "train"
    assert [p[0] for p in metric_history(server, run_id, "acc")] == [0, 1, 2]


def _padded_batch(run_id: str, size: int) -> bytes:
    """A valid log-batch body of exactly ``size`` bytes (an unknown field pads it)."""
    body = {"run_id": run_id, "metrics": [_metric(0, key="big")], "padding": ""}
    overhead = len(json.dumps(body))
    body["padding"] = "x" * (size - overhead)
    raw = json.dumps(body).encode()
    assert len(raw) == size
    return raw


def test_request_body_over_max_request_mb_is_413_and_writes_nothing(
    server: ServerProcess, run_id: str
) -> None:
    limit = MAX_REQUEST_MB * 1024 * 1024
    headers = {"Content-Type": "application/json"}
    path = f"{API}/runs/log-batch"

    reply = send(server, "POST", path, _padded_batch(run_id, limit + 1), headers)
    assert_error(reply, 413)
    # Without a Content-Length (chunked): the server counts what it reads.
    raw = _padded_batch(run_id, 3 * limit)
    chunks = (raw[i : i + 65536] for i in range(0, len(raw), 65536))
    reply = send(server, "POST", path, chunks, {**headers, "Transfer-Encoding": "chunked"})
    assert_error(reply, 413)
    assert metric_history(server, run_id, "big") == []
    assert run_data(server, run_id)["metrics"] == {}

    # At the limit exactly, the same request is accepted: the limit is the configured one.
    ok(send(server, "POST", path, _padded_batch(run_id, limit), headers))
    assert [p[0] for p in metric_history(server, run_id, "big")] == [0]


# --- 2. the artifact proxy ----------------------------------------------------------------------


def test_artifact_round_trip_of_5_mb_binary_with_nested_paths_and_listing(
    server: ServerProcess,
) -> None:
    base = f"roundtrip-{uuid.uuid4().hex[:8]}"
    content = os.urandom(5 * 1024 * 1024)
    small = bytes(range(256)) * 4
    ok(send(server, "PUT", f"{ARTIFACTS}/{base}/deep/er/data.bin", content))
    ok(send(server, "PUT", f"{ARTIFACTS}/{base}/top.bin", small))

    got = send(server, "GET", f"{ARTIFACTS}/{base}/deep/er/data.bin")
    assert got.status == 200
    assert hashlib.sha256(got.body).hexdigest() == hashlib.sha256(content).hexdigest()
    assert send(server, "GET", f"{ARTIFACTS}/{base}/top.bin").body == small
    on_disk = server.artifacts / base / "deep" / "er" / "data.bin"
    assert hashlib.sha256(on_disk.read_bytes()).digest() == hashlib.sha256(content).digest()

    listing = ok(send(server, "GET", f"{ARTIFACTS}?path={quote(base)}"))["files"]
    assert sorted(listing, key=lambda f: f["path"]) == [
        {"path": "deep", "is_dir": True},
        {"path": "top.bin", "is_dir": False, "file_size": len(small)},
    ]
    listing = ok(send(server, "GET", f"{ARTIFACTS}?path={quote(base + '/deep/er')}"))["files"]
    assert listing == [{"path": "data.bin", "is_dir": False, "file_size": len(content)}]
    # Uploads are written beside the target and renamed: no partial file is left behind.
    assert sorted(p.name for p in (server.artifacts / base).rglob("*")) == [
        "data.bin",
        "deep",
        "er",
        "top.bin",
    ]

    # Overwrite, then delete.
    ok(send(server, "PUT", f"{ARTIFACTS}/{base}/top.bin", b"second"))
    assert send(server, "GET", f"{ARTIFACTS}/{base}/top.bin").body == b"second"
    ok(send(server, "DELETE", f"{ARTIFACTS}/{base}/top.bin"))
    assert_error(send(server, "GET", f"{ARTIFACTS}/{base}/top.bin"), 404)
    assert not (server.artifacts / base / "top.bin").exists()


def test_missing_artifact_is_404(server: ServerProcess) -> None:
    assert_error(
        send(server, "GET", f"{ARTIFACTS}/no/such/file.txt"), 404, "RESOURCE_DOES_NOT_EXIST"
    )
    ok(send(server, "PUT", f"{ARTIFACTS}/a-folder/inside.txt", b"x"))
    assert_error(send(server, "GET", f"{ARTIFACTS}/a-folder"), 404, "RESOURCE_DOES_NOT_EXIST")


def test_wrong_method_on_artifacts_is_405(server: ServerProcess) -> None:
    assert send(server, "POST", f"{ARTIFACTS}/posted.txt", b"x").status == 405
    assert send(server, "PATCH", f"{ARTIFACTS}/posted.txt", b"x").status == 405
    assert send(server, "PUT", ARTIFACTS, b"x").status == 405
    assert not (server.artifacts / "posted.txt").exists()


ESCAPES = [
    "../x",
    "a/../../x",
    "%2e%2e/x",
    "%2E%2E/x",
    "%252e%252e/x",
    "..%2fx",
    "a/%2e%2e/%2e%2e/x",
    "..\\x",
    "..%5cx",
    "a/..",
]


@pytest.mark.parametrize("raw", ESCAPES)
def test_artifact_paths_leaving_the_root_are_refused(server: ServerProcess, raw: str) -> None:
    outside = server.workdir / "x"  # where ../x would land (the root is workdir/artifacts)
    outside.write_bytes(b"sentinel")
    before = files_under(server.workdir, skip=server.artifacts)
    marker = f"escaped {uuid.uuid4()}".encode()

    for method, body in (("PUT", marker), ("GET", None), ("DELETE", None)):
        reply = send(server, method, f"{ARTIFACTS}/{raw}", body)
        assert 400 <= reply.status < 500, (method, raw, str(reply))
        assert_error(reply, reply.status)
    reply = send(server, "GET", f"{ARTIFACTS}?path={quote(raw, safe='%')}")
    assert 400 <= reply.status < 500, (raw, str(reply))

    assert outside.read_bytes() == b"sentinel"
    assert not (server.workdir.parent / "x").exists()
    after = files_under(server.workdir, skip=server.artifacts)
    for name in set(before) | set(after):
        if not name.endswith(("server.log", ".db", ".db-wal", ".db-shm")):
            assert after.get(name) == before.get(name), name
    assert all(marker not in content for content in files_under(server.artifacts).values())


def test_absolute_artifact_paths_are_refused(server: ServerProcess) -> None:
    reply = send(server, "GET", f"{ARTIFACTS}//etc/passwd")
    assert 400 <= reply.status < 500, str(reply)
    assert b"root:" not in reply.body
    assert 400 <= send(server, "GET", f"{ARTIFACTS}?path=/etc").status < 500
    # Writes and deletes aim at a file of the test's own, outside the root.
    target = server.workdir / "absolute-target.txt"
    target.write_bytes(b"sentinel")
    for method, body in (("PUT", b"overwritten"), ("DELETE", None), ("GET", None)):
        reply = send(server, method, f"{ARTIFACTS}/{target}", body)
        assert 400 <= reply.status < 500, (method, str(reply))
        assert_error(reply, reply.status)
    assert target.read_bytes() == b"sentinel"


@pytest.mark.parametrize("path", ["", ".", "./"])
def test_the_artifact_root_itself_cannot_be_deleted(tmp_path: Path, path: str) -> None:
    with server_process(tmp_path / "srv") as srv:
        ok(send(srv, "PUT", f"{ARTIFACTS}/keep/me.txt", b"precious"))
        reply = send(srv, "DELETE", f"{ARTIFACTS}/{path}")
        assert 400 <= reply.status < 500, (path, str(reply))
        assert_error(reply, reply.status)
        assert (srv.artifacts / "keep" / "me.txt").read_bytes() == b"precious"


def test_upload_onto_the_artifact_root_itself_is_a_4xx(tmp_path: Path) -> None:
    with server_process(tmp_path / "srv") as srv:
        ok(send(srv, "PUT", f"{ARTIFACTS}/keep/me.txt", b"precious"))
        for path in ("", ".", "./"):
            reply = send(srv, "PUT", f"{ARTIFACTS}/{path}", b"x")
            assert 400 <= reply.status < 500, (path, str(reply))
            assert_error(reply, reply.status)
        assert (srv.artifacts / "keep" / "me.txt").read_bytes() == b"precious"
        # Nothing was written beside the root (where a temporary upload file would go).
        known = {"artifacts", "home", "server.log", "store.db", "store.db-wal", "store.db-shm"}
        assert {p.name for p in srv.workdir.iterdir()} - known == set()


def test_upload_over_a_folder_or_below_a_file_is_a_4xx(server: ServerProcess) -> None:
    base = f"conflict-{uuid.uuid4().hex[:8]}"
    ok(send(server, "PUT", f"{ARTIFACTS}/{base}/dir/file.txt", b"content"))
    for path in (f"{base}/dir", f"{base}/dir/file.txt/below", f"{base}/dir/."):
        reply = send(server, "PUT", f"{ARTIFACTS}/{path}", b"x")
        assert 400 <= reply.status < 500, (path, str(reply))
        assert_error(reply, reply.status)
    assert (server.artifacts / base / "dir" / "file.txt").read_bytes() == b"content"
    assert sorted(p.name for p in (server.artifacts / base).rglob("*")) == ["dir", "file.txt"]


# --- 3. authentication and the default bind ------------------------------------------------------


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


JSON_TYPE = {"Content-Type": "application/json"}  # REST bodies are JSON (POST without: 415)


def _guarded_requests(tag: str) -> list[tuple[str, str, bytes | None]]:
    """One request of each kind the server answers, as (method, path, body)."""
    search = json.dumps({"experiment_ids": ["0"]}).encode()
    return [
        ("GET", "/health", None),
        ("GET", "/openapi.json", None),
        ("GET", "/version", None),
        ("GET", f"{API}/experiments/get?experiment_id=0", None),
        ("POST", f"{API}/runs/search", search),
        ("GET", f"{API}/runs/search?experiment_ids=0", None),
        ("POST", f"{API}/experiments/create", json.dumps({"name": f"auth-{tag}"}).encode()),
        ("PUT", f"{ARTIFACTS}/{tag}/file.txt", b"guarded"),
        ("GET", f"{ARTIFACTS}/{tag}/file.txt", None),
        ("GET", f"{ARTIFACTS}?path={tag}", None),
        ("DELETE", f"{ARTIFACTS}/{tag}/file.txt", None),
        # The web UI: the page, its assets and its endpoints (a browser asks for basic auth).
        ("GET", "/", None),
        ("GET", "/static/app.js", None),
        ("GET", "/ui-api/experiments", None),
        ("GET", "/ui-api/keys?experiment_id=0", None),
    ]


def _assert_unauthenticated(reply: Reply, what: object) -> None:
    assert reply.status == 401, (what, str(reply))
    assert_error(reply, 401, "UNAUTHENTICATED")
    assert reply.headers.get("WWW-Authenticate"), what


def test_auth_token_guards_every_endpoint(tmp_path: Path) -> None:
    token = "t0ken-" + uuid.uuid4().hex
    with server_process(tmp_path / "srv", "--auth-token", token) as srv:
        refused = [
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Bearer {token}x"},
            {"Authorization": f"Bearer {token[:-1]}"},
            {"Authorization": "Bearer "},
            {"Authorization": token},
            {"Authorization": f"Token {token}"},
            _basic("token", "wrong"),
        ]
        for method, path, body in [
            *_guarded_requests("tok"),
            ("GET", f"{API}/no/such/endpoint", None),
            ("GET", "/no-such-page", None),
        ]:
            for headers in refused:
                reply = send(srv, method, path, body, headers)
                _assert_unauthenticated(reply, (method, path, headers))
            assert not (srv.artifacts / "tok").exists()
        for method, path, body in _guarded_requests("tok"):
            headers = {"Authorization": f"Bearer {token}", **JSON_TYPE}
            reply = send(srv, method, path, body, headers)
            assert reply.status == 200, (method, path, str(reply))
        # Clients that speak only basic auth send the token as the password.
        assert send(srv, "GET", "/health", None, _basic("token", token)).status == 200


def test_basic_auth_file_accepts_its_users_only(tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    for user, password in (("alice", "s3cret-Alice"), ("bob", "hunter2-bob")):
        added = reprorun_cli("server-user", "add", str(users), user, "--password", password)
        assert added.returncode == 0, added.stderr
    assert "s3cret-Alice" not in users.read_text()
    with server_process(tmp_path / "srv", "--basic-auth-file", str(users)) as srv:
        refused = [
            {},
            _basic("alice", "wrong"),
            _basic("alice", "s3cret-alice"),
            _basic("alice", "hunter2-bob"),
            _basic("mallory", "s3cret-Alice"),
            _basic("", "s3cret-Alice"),
            {"Authorization": "Basic not-base64!"},
            {"Authorization": "Bearer s3cret-Alice"},
        ]
        for method, path, body in _guarded_requests("basic"):
            for headers in refused:
                _assert_unauthenticated(send(srv, method, path, body, headers), (path, headers))
            assert not (srv.artifacts / "basic").exists()
        for method, path, body in _guarded_requests("basic"):
            reply = send(srv, method, path, body, {**_basic("alice", "s3cret-Alice"), **JSON_TYPE})
            assert reply.status == 200, (method, path, str(reply))
        assert send(srv, "GET", "/health", None, _basic("bob", "hunter2-bob")).status == 200
        assert send(srv, "GET", "/health", None, _basic("bob", "wrong")).status == 401


def test_without_auth_options_requests_need_no_credentials(server: ServerProcess) -> None:
    for headers in ({}, {"Authorization": "Bearer anything"}, _basic("someone", "anything")):
        tag = f"open-{uuid.uuid4().hex[:8]}"
        for method, path, body in _guarded_requests(tag):
            reply = send(server, method, path, body, {**headers, **JSON_TYPE})
            assert reply.status == 200, (method, path, headers, str(reply))
        assert not (server.artifacts / tag / "file.txt").exists()  # the DELETE went through


def _listening_addresses(port: int) -> list[str]:
    """The local addresses of the LISTEN sockets on ``port`` (from /proc/net/tcp{,6})."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if int(port_hex, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.append(address)
    return found


def _other_local_ipv4() -> list[str]:
    """This machine's IPv4 addresses other than 127.0.0.1 (127.0.0.2 is always local on Linux)."""
    addresses = {"127.0.0.2"}
    lines = Path("/proc/net/fib_trie").read_text().splitlines()
    for previous, line in itertools.pairwise(lines):
        if line.strip() == "/32 host LOCAL":
            addresses.add(previous.split()[-1])
    addresses.discard("127.0.0.1")
    return sorted(addresses)


def test_default_bind_is_loopback_only(tmp_path: Path) -> None:
    with server_process(tmp_path / "srv", host=None) as srv:
        assert send(srv, "GET", "/health").body == b"OK"
        listening = _listening_addresses(srv.port)
        assert listening, f"no LISTEN socket on port {srv.port}"
        assert set(listening) == {"0100007F"}, listening  # 127.0.0.1, and no IPv6 socket
        others = _other_local_ipv4()
        assert "127.0.0.2" in others
        for address in others:
            with socket.socket() as sock:
                sock.settimeout(5)
                assert sock.connect_ex((address, srv.port)) != 0, f"reachable on {address}"


def test_a_loopback_server_answers_to_loopback_names_only(tmp_path: Path) -> None:
    """A page on evil.example rebinding its name to 127.0.0.1 (DNS rebinding) sends
    ``Host: evil.example``: refused, so it can neither read runs nor post to the UI's API."""
    with server_process(tmp_path / "srv") as srv:
        for host in ("127.0.0.1", f"127.0.0.1:{srv.port}", f"localhost:{srv.port}", "[::1]:80"):
            assert send(srv, "GET", "/health", headers={"Host": host}).status == 200, host
        for host in ("evil.example", f"evil.example:{srv.port}", "127.0.0.1.evil.example", ""):
            reply = send(srv, "GET", f"{API}/experiments/search", headers={"Host": host})
            assert_error(reply, 403, "PERMISSION_DENIED")
            assert "--allowed-hosts" in json.loads(reply.body)["message"]
    with server_process(tmp_path / "named", "--allowed-hosts", "runs.internal") as srv:
        assert send(srv, "GET", "/health", headers={"Host": "runs.internal:5000"}).status == 200
        assert send(srv, "GET", "/health", headers={"Host": "127.0.0.1"}).status == 403
    with server_process(tmp_path / "any", "--allowed-hosts", "*") as srv:
        assert send(srv, "GET", "/health", headers={"Host": "whatever"}).status == 200


# --- 4. load: concurrent writers lose and duplicate nothing ------------------------------------


@dataclass
class Writer:
    index: int
    run_id: str
    key: str
    acked: list[tuple[int, float, int]] = field(default_factory=list)  # answered 200
    unknown: list[tuple[int, float, int]] = field(default_factory=list)  # no answer
    errors: list[str] = field(default_factory=list)
    requests: int = 0
    reconnects: int = 0

    def points(self, first_step: int, count: int) -> list[tuple[int, float, int]]:
        # Distinct per writer and step: the value names both.
        return [
            (step, self.index * 1_000_000.0 + step, 1_700_000_000_000 + step)
            for step in range(first_step, first_step + count)
        ]

    def run(self, server: ServerProcess, deadline: float) -> None:
        conn = server.connection(timeout=60)
        headers = {"Content-Type": "application/json"}
        step = 0
        try:
            while time.monotonic() < deadline:
                single = self.requests % 2 == 0
                points = self.points(step, 1 if single else LOAD_BATCH)
                step += len(points)
                metrics = [
                    {"key": self.key, "value": v, "timestamp": t, "step": s} for s, v, t in points
                ]
                if single:
                    path, body = f"{API}/runs/log-metric", {"run_id": self.run_id, **metrics[0]}
                else:
                    path, body = (
                        f"{API}/runs/log-batch",
                        {"run_id": self.run_id, "metrics": metrics},
                    )
                self.requests += 1
                try:
                    conn.request("POST", path, body=json.dumps(body), headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    self.unknown += points
                    self.errors.append(f"{path} steps {points[0][0]}..: {exc!r}")
                    conn.close()
                    conn = server.connection(timeout=60)
                    self.reconnects += 1
                    continue
                if response.will_close:
                    self.reconnects += 1
                if response.status == 200:
                    self.acked += points
                else:
                    self.errors.append(
                        f"{path} steps {points[0][0]}..: {response.status} {data[:300]!r}"
                    )
        except Exception as exc:  # the test reports it; a thread must not raise
            self.errors.append(f"writer {self.index} crashed: {exc!r}")
        finally:
            conn.close()


def _worker_pids(pid: int) -> list[int]:
    """The processes uvicorn's supervisor started to serve."""
    return worker_pids(pid)


def write_load(srv: ServerProcess, seconds: float) -> list[Writer]:
    """LOAD_THREADS writers on two new runs for ``seconds``, each on its own keep-alive
    connection; returns them once all have stopped (the server still alive)."""
    runs = [create_run(srv), create_run(srv)]
    writers = [Writer(i, runs[i % 2], f"load.w{i}") for i in range(LOAD_THREADS)]
    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=w.run, args=(srv, deadline)) for w in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()) + 120)
    assert not any(t.is_alive() for t in threads), "writers still running after the bound"
    assert srv.alive(), srv.log()
    return writers


def check_load(srv: ServerProcess, writers: list[Writer]) -> None:
    """Every point a writer had acknowledged is stored exactly once, nothing else is, and
    each run's latest values are its writers' last points (the highest step)."""
    assert [e for w in writers for e in w.errors] == []
    assert [w.unknown for w in writers] == [[] for _ in writers]
    assert [w.reconnects for w in writers] == [0] * LOAD_THREADS  # keep-alive held
    for w in writers:
        assert w.requests >= 10, f"writer {w.index} sent only {w.requests} requests"
        stored = metric_history(srv, w.run_id, w.key)
        assert len(stored) == len(w.acked), (w.key, len(stored), len(w.acked))
        duplicates = [p for p, n in Counter(stored).items() if n > 1]
        assert duplicates == [], (w.key, duplicates[:5])
        assert Counter(stored) == Counter(w.acked), w.key
    for run_id in dict.fromkeys(w.run_id for w in writers):
        latest = run_data(srv, run_id)["metrics"]
        assert latest == {w.key: max(w.acked)[1] for w in writers if w.run_id == run_id}


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_concurrent_writers_store_every_point_exactly_once(tmp_path: Path, workers: int) -> None:
    with server_process(tmp_path / "srv", "--workers", str(workers)) as srv:
        if workers > 1:  # uvicorn's supervisor with one process per worker
            assert len(_worker_pids(srv.process.pid)) == workers, srv.log()
        writers = write_load(srv, LOAD_SECONDS)
        check_load(srv, writers)
        total = sum(len(w.acked) for w in writers)
        print(f"workers={workers}: {total} points in {sum(w.requests for w in writers)} requests")
