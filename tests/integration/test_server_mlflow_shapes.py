"""``reprorun server`` answers as MLflow's own REST tests expect (issue 16, section 6): the
probes newer clients make, downloads with their file's type, MLflow's error messages."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from typing import Any

import pytest

from tests.integration.server_proc import ServerProcess, server_process

API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with server_process(tmp_path_factory.mktemp("mlflow-shapes")) as running:
        yield running


def call(
    server: ServerProcess,
    method: str,
    path: str,
    body: Any = None,
    content_type: str = "application/json",
) -> tuple[int, Message, bytes]:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.url + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def call_json(server: ServerProcess, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    status, _, raw = call(server, method, path, body)
    return status, json.loads(raw)


def new_run(server: ServerProcess) -> str:
    status, body = call_json(server, "POST", f"{API}/runs/create", {"experiment_id": "0"})
    assert status == 200, body
    return str(body["run"]["info"]["run_id"])


@pytest.mark.parametrize("prefix", ["/api", "/ajax-api"])
def test_server_info_answers_what_newer_clients_probe(server: ServerProcess, prefix: str) -> None:
    status, body = call_json(server, "GET", f"{prefix}/3.0/mlflow/server-info")
    assert status == 200
    assert body == {
        "store_type": "SqlStore",
        "workspaces_enabled": False,
        "trace_archival_enabled": False,
        "multipart_uploads_enabled": False,  # a folder root: through the proxy (docs/s3.md)
        "multipart_downloads_enabled": False,
        "presigned_upload_run_id_supported": True,
        "presigned_upload_model_id_supported": True,
    }


def test_version_is_the_mlflow_api_served_and_reprorun_s_own_is_a_header(
    server: ServerProcess,
) -> None:
    from reprorun import __version__

    status, headers, body = call(server, "GET", "/version")
    assert (status, body) == (200, b"3.17.2")
    assert headers["X-Reprorun-Version"] == __version__
    _, headers, _ = call(server, "GET", "/health")
    assert headers["X-Reprorun-Version"] == __version__


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        (f"{API}/no/such/thing", "application/json"),
        (f"{API}/no/such/thing", "text/plain"),  # a 404, not a 415
        ("/api/2.0/elsewhere", "text/plain"),
        ("/ajax-api/3.0/mlflow/nothing-here", "application/x-www-form-urlencoded"),
    ],
)
def test_unknown_api_paths_answer_mlflow_s_json_404(
    server: ServerProcess, path: str, content_type: str
) -> None:
    status, headers, raw = call(server, "POST", path, b"x=1", content_type)
    assert status == 404
    assert headers["Content-Type"] == "application/json"
    assert json.loads(raw)["error_code"] == "ENDPOINT_NOT_FOUND"


def test_known_paths_still_refuse_a_body_that_is_not_json(server: ServerProcess) -> None:
    status, _, _ = call(server, "POST", f"{API}/experiments/create", b"name=x", "text/plain")
    assert status == 415


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.txt", "text/plain"),
        ("MLmodel", "text/plain"),
        ("MLproject", "text/plain"),
        ("c.png", "image/png"),
        ("d.pdf", "application/pdf"),
        ("b.pkl", "application/octet-stream"),
        ("page.html", "application/octet-stream"),  # never a page of the server's origin
        ("img.svg", "application/octet-stream"),
    ],
)
def test_downloads_carry_the_file_s_type(server: ServerProcess, name: str, expected: str) -> None:
    path = f"{ARTIFACTS}/types/{name}"
    assert call(server, "PUT", path, b"content", "application/octet-stream")[0] == 200
    status, headers, body = call(server, "GET", path)
    assert (status, body) == (200, b"content")
    assert headers["Content-Type"] == expected
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Security-Policy"] == "sandbox"
    assert headers["Content-Disposition"].startswith("attachment")


def test_get_artifact_serves_a_run_s_file_with_its_type_and_nothing_outside(
    server: ServerProcess,
) -> None:
    """MLflow's GET /get-artifact?run_id=&path=, with the proxy's download rules."""
    from urllib.parse import quote

    run_id = new_run(server)
    status, body = call_json(server, "GET", f"{API}/runs/get?run_id={run_id}")
    folder = body["run"]["info"]["artifact_uri"].removeprefix("mlflow-artifacts:/")
    for name in ("a.txt", "page.html"):
        assert call(server, "PUT", f"{ARTIFACTS}/{folder}/{name}", b"x", "text/plain")[0] == 200
    status, headers, data = call(server, "GET", f"/get-artifact?run_id={run_id}&path=a.txt")
    assert (status, data, headers["Content-Type"]) == (200, b"x", "text/plain")
    assert headers["X-Content-Type-Options"] == "nosniff"
    status, headers, _ = call(server, "GET", f"/get-artifact?run_id={run_id}&path=page.html")
    assert (status, headers["Content-Type"]) == (200, "application/octet-stream")
    for path in ("../../../store.db", "/etc/passwd", quote("..%2Fx", safe="")):
        status, _, raw = call(server, "GET", f"/get-artifact?run_id={run_id}&path={path}")
        assert status == 400, (path, raw)
        assert json.loads(raw)["error_code"] == "INVALID_PARAMETER_VALUE"
    status, _, raw = call(server, "GET", "/get-artifact?run_id=0123456789abcdef&path=a.txt")
    assert status == 404 and json.loads(raw)["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    status, _, raw = call(server, "GET", "/get-artifact?path=a.txt")
    assert status == 400 and "run_id" in json.loads(raw)["message"]


def test_a_metric_without_timestamp_is_refused(server: ServerProcess) -> None:
    run_id = new_run(server)
    status, body = call_json(
        server, "POST", f"{API}/runs/log-metric", {"run_id": run_id, "key": "m", "value": 1}
    )
    assert status == 400
    assert "Missing value for required parameter 'timestamp'" in body["message"]
    status, body = call_json(
        server,
        "POST",
        f"{API}/runs/log-batch",
        {"run_id": run_id, "metrics": [{"key": "mae", "value": 2.5}]},
    )
    assert status == 400
    assert "Missing value for required parameter 'metrics[0].timestamp'" in body["message"]


@pytest.mark.parametrize(
    ("endpoint", "fields", "expected"),
    [
        ("log-metric", {"run_id": 31, "timestamp": 1}, "Invalid value 31 for parameter 'run_id'"),
        ("log-metric", {"key": 31, "timestamp": 1}, "Invalid value 31 for parameter 'key'"),
        (
            "log-metric",
            {"step": "foo", "timestamp": 1},
            "Invalid value \"foo\" for parameter 'step'",
        ),
        ("log-parameter", {"run_id": 31, "value": 41}, "Invalid value 31 for parameter 'run_id'"),
        ("set-tag", {"value": 41}, "Invalid value 41 for parameter 'value'"),
        ("log-batch", {"tags": "5"}, "Invalid value \"5\" for parameter 'tags'"),
        ("log-batch", {"metrics": "foo"}, "Invalid value \"foo\" for parameter 'metrics'"),
    ],
)
def test_invalid_values_are_named_in_mlflow_s_words(
    server: ServerProcess, endpoint: str, fields: dict[str, Any], expected: str
) -> None:
    body: dict[str, Any] = {"run_id": new_run(server), "key": "k", "value": 1.0, **fields}
    status, answer = call_json(server, "POST", f"{API}/runs/{endpoint}", body)
    assert status == 400
    assert answer["error_code"] == "INVALID_PARAMETER_VALUE"
    assert answer["message"].startswith(expected + " supplied"), answer


def test_missing_runs_and_tags_are_named_in_mlflow_s_words(server: ServerProcess) -> None:
    status, body = call_json(
        server, "POST", f"{API}/runs/delete-tag", {"run_id": "fake_run_id", "key": "t"}
    )
    assert (status, body["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")
    assert body["message"].startswith("Run with id=fake_run_id not found")
    run_id = new_run(server)
    status, body = call_json(
        server, "POST", f"{API}/runs/delete-tag", {"run_id": run_id, "key": "fakeTag"}
    )
    assert status == 404
    assert body["message"].startswith("No tag with name: fakeTag")
    status, body = call_json(
        server, "POST", f"{API}/runs/search", {"experiment_ids": ["0"], "max_results": 123456789}
    )
    assert status == 400
    assert "Invalid value 123456789 for parameter 'max_results' supplied" in body["message"]


def test_a_relative_artifact_location_is_made_absolute(server: ServerProcess) -> None:
    status, body = call_json(
        server,
        "POST",
        f"{API}/experiments/create",
        {"name": "relative", "artifact_location": "my_location"},
    )
    assert status == 200, body
    _, got = call_json(
        server, "GET", f"{API}/experiments/get?experiment_id={body['experiment_id']}"
    )
    assert got["experiment"]["artifact_location"] == str(server.workdir / "my_location")


def test_runs_show_their_latest_metrics_with_timestamp_and_step(server: ServerProcess) -> None:
    run_id = new_run(server)
    metrics = [
        {"key": "loss", "value": 1.0, "timestamp": 100, "step": 0},
        {"key": "loss", "value": 0.5, "timestamp": 200, "step": 3},
    ]
    body = {"run_id": run_id, "metrics": metrics}
    assert call_json(server, "POST", f"{API}/runs/log-batch", body)[0] == 200
    expected = [{"key": "loss", "value": 0.5, "timestamp": 200, "step": 3}]
    _, got = call_json(server, "GET", f"{API}/runs/get?run_id={run_id}")
    assert got["run"]["data"]["metrics"] == expected
    search = {"experiment_ids": ["0"], "filter": f"attributes.run_id = '{run_id}'"}
    _, found = call_json(server, "POST", f"{API}/runs/search", search)
    assert [r["data"]["metrics"] for r in found["runs"]] == [expected]


def test_bulk_metric_histories_for_charts(server: ServerProcess) -> None:
    runs = sorted([new_run(server), new_run(server)])
    for offset, run_id in enumerate(runs):
        metrics = [
            {"key": "acc", "value": step + offset, "timestamp": 1000 - step, "step": step}
            for step in range(10)
        ]
        body = {"run_id": run_id, "metrics": metrics}
        assert call_json(server, "POST", f"{API}/runs/log-batch", body)[0] == 200
    query = f"run_id={runs[1]}&run_id={runs[0]}&metric_key=acc&max_results=2"
    status, got = call_json(server, "GET", f"/ajax-api/2.0/mlflow/metrics/get-history-bulk?{query}")
    assert status == 200
    # By run id, each run's history by timestamp, at most max_results points per run.
    assert [(m["run_id"], m["step"]) for m in got["metrics"]] == [
        (runs[0], 9),
        (runs[0], 8),
        (runs[1], 9),
        (runs[1], 8),
    ]
    assert got["metrics"][0] == {
        "key": "acc",
        "value": 9.0,
        "timestamp": 991,
        "step": 9,
        "run_id": runs[0],
    }
    interval = f"{API}/metrics/get-history-bulk-interval?run_ids={runs[0]}&metric_key=acc"
    _, sampled = call_json(server, "GET", interval + "&max_results=5")
    assert [m["step"] for m in sampled["metrics"]] == [0, 2, 4, 6, 8, 9]  # and the last
    _, window = call_json(server, "GET", interval + "&max_results=5&start_step=0&end_step=4")
    assert [m["step"] for m in window["metrics"]] == [0, 1, 2, 3, 4]
    for query, message in [
        ("metric_key=acc", "Missing value for required parameter 'run_ids'."),
        (f"run_ids={runs[0]}&metric_key=acc&start_step=1", "both must be specified"),
        (f"run_ids={runs[0]}&metric_key=acc&start_step=2&end_step=1", "end_step must be"),
        (f"run_ids={runs[0]}&metric_key=acc&max_results=0", "between 1 and 2500"),
    ]:
        status, error = call_json(server, "GET", f"{API}/metrics/get-history-bulk-interval?{query}")
        assert (status, error["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
        assert message in error["message"]
    status, error = call_json(server, "GET", f"{API}/metrics/get-history-bulk?metric_key=acc")
    assert status == 400
    assert "must specify at least one run_id" in error["message"]


# --- logged models: metrics, datasets, files; run inputs; the UI's upload --------------------


def new_experiment(server: ServerProcess, name: str, **fields: Any) -> str:
    status, body = call_json(server, "POST", f"{API}/experiments/create", {"name": name, **fields})
    assert status == 200, body
    return str(body["experiment_id"])


def new_model(server: ServerProcess, experiment_id: str, **fields: Any) -> str:
    status, body = call_json(
        server, "POST", f"{API}/logged-models", {"experiment_id": experiment_id, **fields}
    )
    assert status == 200, body
    return str(body["model"]["info"]["model_id"])


def run_in(server: ServerProcess, experiment_id: str) -> str:
    status, body = call_json(server, "POST", f"{API}/runs/create", {"experiment_id": experiment_id})
    assert status == 200, body
    return str(body["run"]["info"]["run_id"])


def test_a_metric_logged_with_a_model_id_is_attached_to_that_model(server: ServerProcess) -> None:
    exp = new_experiment(server, "model-metrics")
    run_id = run_in(server, exp)
    model_id = new_model(server, exp)
    point = {
        "run_id": run_id,
        "key": "auc",
        "value": 0.5,
        "timestamp": 123,
        "step": 1,
        "model_id": model_id,
        "dataset_name": "val",
        "dataset_digest": "d1",
    }
    assert call_json(server, "POST", f"{API}/runs/log-metric", point)[0] == 200
    assert call_json(server, "POST", f"{API}/runs/log-metric", point)[0] == 200  # kept once
    batch = {"run_id": run_id, "metrics": [{**point, "key": "loss", "dataset_name": "train"}]}
    assert call_json(server, "POST", f"{API}/runs/log-batch", batch)[0] == 200
    status, body = call_json(server, "GET", f"{API}/logged-models/{model_id}")
    assert status == 200
    common = {"value": 0.5, "timestamp": 123, "step": 1, "model_id": model_id, "run_id": run_id}
    assert body["model"]["data"]["metrics"] == [
        {"key": "auc", **common, "dataset_name": "val", "dataset_digest": "d1"},
        {"key": "loss", **common, "dataset_name": "train", "dataset_digest": "d1"},
    ]
    # The run has them too, as any metric.
    status, body = call_json(server, "GET", f"{API}/runs/get?run_id={run_id}")
    assert {m["key"] for m in body["run"]["data"]["metrics"]} == {"auc", "loss"}

    # A model that does not exist: nothing is written, the run included (all or nothing).
    missing = {**point, "key": "lost", "model_id": "m-" + "0" * 32}
    status, body = call_json(server, "POST", f"{API}/runs/log-metric", missing)
    assert (status, body["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")
    assert "m-" + "0" * 32 in body["message"]
    status, body = call_json(server, "GET", f"{API}/runs/get?run_id={run_id}")
    assert "lost" not in {m["key"] for m in body["run"]["data"]["metrics"]}
    too_long = {**point, "key": "long", "dataset_digest": "x" * 37}
    status, body = call_json(server, "POST", f"{API}/runs/log-metric", too_long)
    assert (status, body["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
    assert "dataset_digest" in body["message"]


def test_logged_models_are_searched_by_the_datasets_their_metrics_were_measured_on(
    server: ServerProcess,
) -> None:
    exp = new_experiment(server, "model-datasets")
    run_id = run_in(server, exp)
    on_val, on_test, none = (new_model(server, exp, name=n) for n in ("val", "test", "none"))
    for model_id, dataset, digest in ((on_val, "val", "d1"), (on_test, "test", "d2")):
        metric = {
            "run_id": run_id,
            "key": "auc",
            "value": 1,
            "timestamp": 1,
            "model_id": model_id,
            "dataset_name": dataset,
            "dataset_digest": digest,
        }
        assert call_json(server, "POST", f"{API}/runs/log-metric", metric)[0] == 200

    def search(datasets: Any) -> tuple[int, Any]:
        body = {"experiment_ids": [exp], "datasets": datasets}
        return call_json(server, "POST", f"{API}/logged-models/search", body)

    def names(datasets: Any) -> set[str]:
        status, body = search(datasets)
        assert status == 200, body
        return {m["info"]["name"] for m in body.get("models", [])}

    assert names([]) == {"val", "test", "none"}
    assert names([{"dataset_name": "val"}]) == {"val"}
    assert names([{"dataset_name": "val", "dataset_digest": "d1"}]) == {"val"}
    assert names([{"dataset_name": "val", "dataset_digest": "d2"}]) == set()
    assert names([{"dataset_name": "val"}, {"dataset_name": "test"}]) == {"val", "test"}
    status, body = search([{"dataset_digest": "d1"}])
    assert (status, body["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
    assert "dataset_name" in body["message"]
    status, body = search("val")
    assert (status, body["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
    assert none  # created, never measured


def test_a_logged_model_may_name_a_source_run_from_elsewhere(server: ServerProcess) -> None:
    """As MLflow: a source run the store does not know is recorded as given."""
    exp = new_experiment(server, "model-source")
    model_id = new_model(server, exp, source_run_id="123")
    status, body = call_json(server, "GET", f"{API}/logged-models/{model_id}")
    assert body["model"]["info"]["source_run_id"] == "123"
    status, body = call_json(
        server, "POST", f"{API}/logged-models", {"experiment_id": exp, "source_run_id": "r" * 33}
    )
    assert (status, body["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
    deleted = run_in(server, exp)
    assert call_json(server, "POST", f"{API}/runs/delete", {"run_id": deleted})[0] == 200
    status, body = call_json(
        server, "POST", f"{API}/logged-models", {"experiment_id": exp, "source_run_id": deleted}
    )
    assert (status, body["error_code"]) == (400, "INVALID_PARAMETER_VALUE")


def test_search_datasets_summarises_the_inputs_runs_logged(server: ServerProcess) -> None:
    exp = new_experiment(server, "datasets")
    other = new_experiment(server, "datasets-other")

    def log_inputs(run_id: str, name: str, context: str | None) -> None:
        tags = [{"key": "mlflow.data.context", "value": context}] if context else []
        dataset = {"name": name, "digest": f"{name}-d", "source_type": "local", "source": "x"}
        body = {"run_id": run_id, "datasets": [{"dataset": dataset, "tags": tags}]}
        assert call_json(server, "POST", f"{API}/runs/log-inputs", body)[0] == 200

    first, second = run_in(server, exp), run_in(server, exp)
    log_inputs(first, "train", "training")
    log_inputs(second, "train", "training")  # the same summary: shown once
    log_inputs(second, "raw", None)
    log_inputs(run_in(server, other), "elsewhere", "eval")
    path = "/ajax-api/2.0/mlflow/experiments/search-datasets"
    status, body = call_json(server, "POST", path, {"experiment_ids": [exp]})
    assert status == 200, body
    assert body["dataset_summaries"] == [
        {"experiment_id": exp, "name": "train", "digest": "train-d", "context": "training"},
        {"experiment_id": exp, "name": "raw", "digest": "raw-d"},
    ]
    status, body = call_json(server, "POST", path, {"experiment_ids": [exp, other]})
    assert len(body["dataset_summaries"]) == 3
    for ids, message in (
        ([], "must specify at least one experiment_id"),
        ([str(i) for i in range(21)], "cannot specify more than 20 experiment_ids"),
    ):
        status, body = call_json(server, "POST", path, {"experiment_ids": ids})
        assert (status, body["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
        assert message in body["message"]


UPLOAD = "/ajax-api/2.0/mlflow/upload-artifact"


def upload(server: ServerProcess, query: str, data: bytes | None) -> tuple[int, Any]:
    status, _, raw = call(server, "POST", f"{UPLOAD}?{query}", data, "application/octet-stream")
    return status, json.loads(raw)


def test_upload_artifact_writes_one_file_of_the_run_and_nothing_outside(
    server: ServerProcess, tmp_path: Any
) -> None:
    from urllib.parse import quote

    run_id = new_run(server)
    assert upload(server, f"run_uuid={run_id}&path=sub/dir/f.txt", b"hello") == (200, {})
    status, _, data = call(server, "GET", f"/get-artifact?run_id={run_id}&path=sub/dir/f.txt")
    assert (status, data) == (200, b"hello")
    assert upload(server, f"run_uuid={run_id}&path=sub/dir/f.txt", b"again")[0] == 200
    assert call(server, "GET", f"/get-artifact?run_id={run_id}&path=sub/dir/f.txt")[2] == b"again"

    for query, message in (
        ("", "Request must specify run_uuid."),
        (f"run_uuid={run_id}", "Request must specify path."),
        (f"run_uuid={run_id}&path=", "Request must specify path."),
        (f"run_uuid={run_id}&path=x.txt", "Request must specify data."),
    ):
        status, body = upload(server, query, None)
        assert (status, body["error_code"]) == (400, "INVALID_PARAMETER_VALUE"), query
        assert body["message"] == message
    hostile = ("../x.txt", "a/../../x.txt", "/tmp/x.txt", quote("..%2Fx.txt", safe=""))
    for path in (*hostile, quote("a\\..\\x", safe=""), "a%00b", "sub"):
        status, body = upload(server, f"run_uuid={run_id}&path={quote(path, safe='%')}", b"x")
        assert (status, body["error_code"]) == (400, "INVALID_PARAMETER_VALUE"), path
    assert "Invalid path" in upload(server, f"run_uuid={run_id}&path=../x.txt", b"x")[1]["message"]
    status, body = upload(server, f"run_uuid={run_id}&path=sub/dir/f.txt/under", b"x")
    assert status == 400 and "is a file" in body["message"]
    assert not list(server.workdir.rglob("x.txt"))

    # More than 10 MB declared: refused before the body is read (as MLflow).
    connection = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=30)
    connection.putrequest("POST", f"{UPLOAD}?run_uuid={run_id}&path=big.bin")
    connection.putheader("Content-Length", str(10 * 2**20 + 1))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 400 and "Max size is 10MB" in json.loads(response.read())["message"]
    connection.close()
    status, body = upload(server, "run_uuid=0123456789abcdef0123456789abcdef&path=a", b"x")
    assert (status, body["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")

    # A run whose artifacts are outside the server's artifact root gets no file from it.
    outside = tmp_path / "outside"
    exp = new_experiment(server, "upload-outside", artifact_location=str(outside))
    status, body = upload(server, f"run_uuid={run_in(server, exp)}&path=a.txt", b"x")
    assert status == 400 and "artifact root" in body["message"]
    assert not outside.exists()


def test_upload_artifact_follows_no_link_out_of_the_run_s_folder(server: ServerProcess) -> None:
    run_id = new_run(server)
    assert upload(server, f"run_uuid={run_id}&path=keep.txt", b"x")[0] == 200
    (kept,) = server.workdir.rglob(f"{run_id}/artifacts/keep.txt")
    target = server.workdir / "escaped"
    target.mkdir()
    (kept.parent / "link").symlink_to(target)
    status, body = upload(server, f"run_uuid={run_id}&path=link/f.txt", b"x")
    assert status == 400 and "leaves the run's artifact folder" in body["message"]
    assert not list(target.iterdir())


def test_a_logged_model_s_file_is_served_with_the_download_rules(server: ServerProcess) -> None:
    exp = new_experiment(server, "model-files")
    model_id = new_model(server, exp)
    _, body = call_json(server, "GET", f"{API}/logged-models/{model_id}")
    folder = body["model"]["info"]["artifact_uri"].removeprefix("mlflow-artifacts:/")
    assert (
        call(server, "PUT", f"{ARTIFACTS}/{folder}/MLmodel", b"model_id: x", "text/plain")[0] == 200
    )
    for prefix in ("/api", "/ajax-api"):
        path = f"{prefix}/2.0/mlflow/logged-models/{model_id}/artifacts/files"
        status, headers, data = call(server, "GET", f"{path}?artifact_file_path=MLmodel")
        assert (status, data, headers["Content-Type"]) == (200, b"model_id: x", "text/plain")
        assert headers["X-Content-Type-Options"] == "nosniff"
    path = f"{API}/logged-models/{model_id}/artifacts/files"
    for query, status_code in (
        ("artifact_file_path=../../../../store.db", 400),
        ("artifact_file_path=%2Fetc%2Fpasswd", 400),
        ("", 400),
        ("artifact_file_path=nothing", 404),
    ):
        status, _, raw = call(server, "GET", f"{path}?{query}")
        assert status == status_code, (query, raw)
    unknown = f"{API}/logged-models/m-{'0' * 32}/artifacts/files?artifact_file_path=MLmodel"
    status, _, raw = call(server, "GET", unknown)
    assert (status, json.loads(raw)["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")
