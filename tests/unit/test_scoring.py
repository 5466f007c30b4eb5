"""The scoring server and batch scorer (reprorun.clients.scoring) in this process, over a real
socket on 127.0.0.1: MLflow's request formats, its error shape and status codes, limits, and
batch scoring that streams a file larger than the memory it uses."""

from __future__ import annotations

import http.client
import json
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from reprorun.clients import scoring
from reprorun.tracking.models import save_model

COLUMNS = ["sl", "sw", "pl", "pw"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


class Exploding:
    """A model whose predict fails the way a model's code can."""

    def predict(self, data: Any) -> Any:
        raise RuntimeError("the model broke")


@pytest.fixture(scope="module")
def classifier() -> LogisticRegression:
    x, y = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=300).fit(x, y)


def _with_signature(folder: Path) -> Path:
    """Give a reprorun model folder a column signature, as MLflow's models carry."""
    mlmodel = json.loads((folder / "MLmodel").read_text())
    mlmodel["signature"] = {
        "inputs": json.dumps([{"type": "double", "name": c, "required": True} for c in COLUMNS])
    }
    (folder / "MLmodel").write_text(json.dumps(mlmodel))
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, classifier: LogisticRegression) -> Path:
    folder = tmp_path_factory.mktemp("model") / "m"
    save_model(classifier, folder)
    return _with_signature(folder)


@pytest.fixture(scope="module")
def expected(classifier: LogisticRegression) -> list[int]:
    return [int(v) for v in classifier.predict(np.asarray(ROWS))]


class Client:
    def __init__(self, port: int) -> None:
        self.port = port

    def request(
        self, method: str, path: str, body: bytes | str | None = None, ctype: str | None = None
    ) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Content-Type": ctype} if ctype else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        if response.getheader("Content-Type") == "application/json" and data.strip():
            try:
                return response.status, json.loads(data)
            except ValueError:
                pass
        return response.status, data.decode()

    def invoke(self, payload: Any, ctype: str = "application/json") -> tuple[int, Any]:
        body = payload if isinstance(payload, (str, bytes)) else json.dumps(payload)
        return self.request("POST", "/invocations", body, ctype)


def _serve(folder: Path, max_body: int = 1024 * 1024) -> Iterator[Client]:
    server = scoring.make_server(scoring.Model(folder), "127.0.0.1", 0, max_body=max_body)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Client(int(server.server_address[1]))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def client(model_dir: Path) -> Iterator[Client]:
    yield from _serve(model_dir)


def test_ping_health_and_version(client: Client) -> None:
    assert client.request("GET", "/ping") == (200, "\n")
    assert client.request("GET", "/health") == (200, "\n")
    status, version = client.request("GET", "/version")
    assert status == 200 and version.strip()


@pytest.mark.parametrize(
    "payload",
    [
        {"dataframe_split": {"columns": COLUMNS, "data": ROWS}},
        {"dataframe_split": {"columns": COLUMNS, "data": ROWS, "index": [7, 8, 9]}},
        {"dataframe_records": [dict(zip(COLUMNS, r, strict=True)) for r in ROWS]},
        {"instances": [dict(zip(COLUMNS, r, strict=True)) for r in ROWS]},
        {"instances": ROWS},
        {"inputs": ROWS},
        {"inputs": {c: [r[i] for r in ROWS] for i, c in enumerate(COLUMNS)}},
        # columns in another order are put in the model's order
        {"dataframe_split": {"columns": COLUMNS[::-1], "data": [r[::-1] for r in ROWS]}},
        {"dataframe_split": {"columns": COLUMNS, "data": ROWS}, "params": {"unused": 1}},
    ],
)
def test_mlflow_json_formats(client: Client, payload: Any, expected: list[int]) -> None:
    assert client.invoke(payload) == (200, {"predictions": expected})


def test_csv_and_content_type_parameters(client: Client, expected: list[int]) -> None:
    csv_body = ",".join(COLUMNS) + "\n" + "\n".join(",".join(map(str, r)) for r in ROWS) + "\n"
    assert client.invoke(csv_body, "text/csv") == (200, {"predictions": expected})
    assert client.invoke(csv_body, "text/csv; charset=utf-8") == (200, {"predictions": expected})
    payload = json.dumps({"inputs": ROWS})
    assert client.invoke(payload, "application/json; charset=UTF-8")[0] == 200


@pytest.mark.parametrize(
    ("payload", "ctype", "status", "words"),
    [
        ('{"inputs": [[1, 2', "application/json", 400, "valid JSON"),
        ("[[1, 2, 3, 4]]", "application/json", 400, "Received a list"),
        ('"text"', "application/json", 400, "exactly one of the input fields"),
        (json.dumps({"inputs": ROWS, "instances": ROWS}), "application/json", 400, "exactly one"),
        (json.dumps({"data": ROWS}), "application/json", 400, "exactly one"),
        (
            json.dumps(
                {"dataframe_split": {"columns": COLUMNS[:3], "data": [r[:3] for r in ROWS]}}
            ),
            "application/json",
            400,
            "missing inputs ['pw']",
        ),
        (
            json.dumps({"dataframe_records": [{"sl": 1, "sw": 2, "pl": 3, "pw": "wide"}]}),
            "application/json",
            400,
            "Incompatible input types for column pw",
        ),
        (json.dumps({"inputs": [[1, 2, 3]]}), "application/json", 400, "expecting 4 features"),
        (json.dumps({"dataframe_split": [[1, 2]]}), "application/json", 400, "must be a dict"),
        (json.dumps({"dataframe_records": {"a": 1}}), "application/json", 400, "list of records"),
        (json.dumps({"inputs": 5}), "application/json", 400, "list or a mapping"),
        (b"\xff\xfe{", "application/json", 400, "UTF-8"),
        ("sl,sw\n1,2\n", "text/csv", 400, "missing inputs"),
        ("x", "text/plain", 415, "only supports the following content types"),
        ("x", "application/json; charset=latin-1", 415, "only supports UTF-8"),
        ("x", "application/json; format=pandas-split", 415, "Unrecognized content type"),
        ("x", None, 415, "content types"),
    ],
)
def test_bad_requests_get_mlflow_errors(
    client: Client, payload: Any, ctype: str | None, status: int, words: str
) -> None:
    got_status, body = client.invoke(payload, ctype)  # type: ignore[arg-type]
    assert got_status == status
    assert body["error_code"] == "BAD_REQUEST"
    assert words in body["message"]
    assert client.request("GET", "/ping")[0] == 200  # the server carries on


def test_unknown_paths_are_404(client: Client) -> None:
    status, body = client.request("GET", "/nope")
    assert status == 404 and body["error_code"] == "ENDPOINT_NOT_FOUND"
    status, body = client.request("POST", "/predict", "{}", "application/json")
    assert status == 404 and body["error_code"] == "ENDPOINT_NOT_FOUND"


def test_too_large_body_is_413_and_the_server_carries_on(client: Client) -> None:
    big = b'{"inputs": [' + b"[1.0, 2.0, 3.0, 4.0], " * 100_000 + b"[1, 2, 3, 4]]}"
    assert len(big) > 1024 * 1024
    status, body = client.invoke(big)
    assert status == 413
    assert body["error_code"] == "REQUEST_TOO_LARGE"
    assert "smaller batches" in body["message"]
    assert client.invoke({"inputs": ROWS})[0] == 200


def test_chunked_bodies(client: Client, expected: list[int]) -> None:
    def chunks(data: bytes, size: int) -> Iterator[bytes]:
        for start in range(0, len(data), size):
            yield data[start : start + size]

    def send(body: bytes) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", client.port, timeout=30)
        conn.request(
            "POST",
            "/invocations",
            body=chunks(body, 7),
            headers={"Content-Type": "application/json"},
            encode_chunked=True,
        )
        response = conn.getresponse()
        result = response.status, json.loads(response.read())
        conn.close()
        return result

    assert send(json.dumps({"inputs": ROWS}).encode()) == (200, {"predictions": expected})
    status, body = send(b'{"inputs": [' + b"[1, 2, 3, 4], " * 120_000 + b"[1, 2, 3, 4]]}")
    assert status == 413 and body["error_code"] == "REQUEST_TOO_LARGE"


def test_a_failing_model_is_a_400_not_a_crash(tmp_path: Path) -> None:
    save_model(Exploding(), tmp_path / "m")
    for client in _serve(tmp_path / "m"):
        status, body = client.invoke({"inputs": ROWS})
        assert status == 400
        assert body["error_code"] == "BAD_REQUEST"
        assert "RuntimeError: the model broke" in body["message"]
        assert client.request("GET", "/ping")[0] == 200


def test_unloadable_models_say_why(tmp_path: Path) -> None:
    with pytest.raises(scoring.ModelLoadError, match="No MLmodel file"):
        scoring.Model(tmp_path)
    crate = tmp_path / "crate"
    crate.mkdir()
    (crate / "MLmodel").write_text(json.dumps({"flavors": {"crate": {"version": "0.0.1"}}}))
    with pytest.raises(scoring.ModelLoadError, match="Cannot load the R model"):
        scoring.Model(crate)  # no crate.bin: Rscript's own error, named
    other = tmp_path / "other"
    other.mkdir()
    (other / "MLmodel").write_text(
        "flavors:\n  python_function:\n    loader_module: mlflow.pytorch\n"
    )
    with pytest.raises(scoring.ModelLoadError, match="--env-manager uv"):
        scoring.Model(other)


# -- batch scoring ----------------------------------------------------------------------------
def _write_csv(path: Path, rows: int, block: int = 10_000) -> None:
    rng = np.random.default_rng(0)
    with path.open("w") as fh:
        fh.write(",".join(COLUMNS[::-1]) + "\n")  # another column order than the model's
        for start in range(0, rows, block):
            chunk = rng.uniform(0.1, 7.0, size=(min(block, rows - start), 4)).round(4)
            fh.write("\n".join(",".join(map(str, r)) for r in chunk) + "\n")


@pytest.mark.parametrize("out_format", ["csv", "json", "jsonl"])
def test_predict_file_formats(
    model_dir: Path, classifier: LogisticRegression, tmp_path: Path, out_format: str
) -> None:
    source = tmp_path / "in.csv"
    _write_csv(source, 2_345)
    target = tmp_path / f"out.{out_format}"
    model = scoring.Model(model_dir)
    assert scoring.predict_file(model, source, target, rows=500) == 2_345
    data = np.loadtxt(source, delimiter=",", skiprows=1)[:, ::-1]
    want = [int(v) for v in classifier.predict(data)]
    text = target.read_text()
    if out_format == "csv":
        lines = text.splitlines()
        assert lines[0] == "prediction" and [int(v) for v in lines[1:]] == want
    elif out_format == "json":
        assert json.loads(text) == {"predictions": want}
    else:
        assert [json.loads(line) for line in text.splitlines()] == want
    assert not (tmp_path / f"out.{out_format}.partial").exists()


def test_predict_json_inputs(model_dir: Path, tmp_path: Path, expected: list[int]) -> None:
    model = scoring.Model(model_dir)
    records = [dict(zip(COLUMNS, r, strict=True)) for r in ROWS]
    cases = {
        "records.json": json.dumps(records * 3, indent=1),
        "request.json": json.dumps({"dataframe_split": {"columns": COLUMNS, "data": ROWS * 3}}),
        "lines.jsonl": "\n".join(json.dumps(r) for r in records * 3) + "\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        target = tmp_path / f"{name}.out.json"
        assert scoring.predict_file(model, tmp_path / name, target, rows=2) == 9
        assert json.loads(target.read_text()) == {"predictions": expected * 3}


def test_predict_bad_files_say_where(model_dir: Path, tmp_path: Path) -> None:
    model = scoring.Model(model_dir)
    (tmp_path / "bad.json").write_text('[{"sl": 1, "sw": 2, "pl": 3, "pw": 4}, {"sl": ')
    with pytest.raises(scoring.ScoringError, match="malformed JSON"):
        scoring.predict_file(model, tmp_path / "bad.json", tmp_path / "o.json")
    assert not (tmp_path / "o.json").exists()
    (tmp_path / "in.xlsx").write_text("")
    with pytest.raises(scoring.ScoringError, match="unknown format 'xlsx'"):
        scoring.predict_file(model, tmp_path / "in.xlsx", tmp_path / "o.json")
    (tmp_path / "wide.csv").write_text("sl,sw,pl,pw\n1,2,3,four\n")
    with pytest.raises(scoring.ScoringError, match="column pw"):
        scoring.predict_file(model, tmp_path / "wide.csv", tmp_path / "o.csv")


def test_predict_streams_a_file_larger_than_its_memory(model_dir: Path, tmp_path: Path) -> None:
    """A ~4 MB CSV scored with a traced peak of Python memory far below the file's size
    (tracemalloc slows Python ten times: the file is kept small, the batches smaller)."""
    source = tmp_path / "big.csv"
    _write_csv(source, 150_000)
    size = source.stat().st_size
    assert size > 4_000_000
    model = scoring.Model(model_dir)
    target = tmp_path / "big.out.csv"
    # a small file first: whatever predicting imports is not memory held for the file's rows
    with source.open() as fh:
        (tmp_path / "warm.csv").write_text("".join(next(fh) for _ in range(100)))
    scoring.predict_file(model, tmp_path / "warm.csv", tmp_path / "warm.out.csv", rows=10)
    tracemalloc.start()
    try:
        count = scoring.predict_file(model, source, target, rows=250)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 150_000
    with target.open() as fh:
        assert sum(1 for _ in fh) == 150_001
    assert peak < size / 4, f"peak {peak} bytes for a {size}-byte file"


def test_parquet_bodies_need_pyarrow(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    from reprorun.clients.scoring import protocol

    real = protocol.optional
    monkeypatch.setattr(protocol, "optional", lambda n: None if "pyarrow" in n else real(n))
    status, body = client.invoke(b"PAR1", "application/vnd.apache.parquet")
    assert status == 400 and body["error_code"] == "BAD_REQUEST"
    assert "needs pyarrow" in body["message"]
