"""``reprorun server --artifacts-destination s3://bucket/prefix`` against moto's real S3 API
server on 127.0.0.1 (tests/s3.py): the artifact proxy over the bucket, MLflow's multipart
uploads and presigned URLs (the server signs, the bytes go straight to the bucket), the UI's
and MLflow's single-file endpoints, the failures, and the real ``mlflow`` client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.mlflow_env import MLFLOW_VERSION, client_python
from tests.integration.server_proc import ServerProcess, server_process
from tests.s3 import S3, MotoServer, moto_server, s3_bucket  # noqa: F401 - fixtures

PREFIX = "mlruns"


def call(
    server: ServerProcess,
    method: str,
    path: str,
    body: Any = None,
    data: bytes | None = None,
) -> tuple[int, Any]:
    """One request; (status, JSON or bytes)."""
    headers = {}
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if data is not None and not headers:
        headers["Content-Type"] = "application/octet-stream"
    request = urllib.request.Request(server.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            status, raw, kind = answer.status, answer.read(), answer.headers.get("Content-Type")
    except urllib.error.HTTPError as exc:
        status, raw, kind = exc.code, exc.read(), exc.headers.get("Content-Type")
    return status, json.loads(raw) if kind == "application/json" else raw


def fetch(url: str, method: str = "GET", data: bytes | None = None, **headers: str) -> Any:
    # Bytes, not urllib's default form type (which an S3 server may try to parse as a form).
    if data is not None:
        headers = {"Content-Type": "application/octet-stream", **headers}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    return urllib.request.urlopen(request, timeout=60)


@pytest.fixture
def served(
    s3_bucket: S3,  # noqa: F811 - the fixture
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[ServerProcess]:
    """A server whose artifacts live in the test's bucket; the endpoint reaches it through
    boto3's own AWS_ENDPOINT_URL_S3 (the server's environment has no MLFLOW_* variables)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_bucket.endpoint)
    work = tmp_path / "srv"
    with server_process(
        work,
        "--backend-store-uri",
        f"sqlite:///{work / 'store.db'}",
        "--artifacts-destination",
        f"s3://{s3_bucket.bucket}/{PREFIX}",
        store=False,
    ) as server:
        yield server


def new_run(server: ServerProcess) -> tuple[str, str]:
    """(run_id, its artifact path under the proxy) of a new run in a new experiment."""
    status, exp = call(server, "POST", "/api/2.0/mlflow/experiments/create", {"name": "e"})
    assert status == 200, exp
    status, created = call(
        server, "POST", "/api/2.0/mlflow/runs/create", {"experiment_id": exp["experiment_id"]}
    )
    assert status == 200, created
    info = created["run"]["info"]
    assert info["artifact_uri"].startswith("mlflow-artifacts:/")
    return info["run_id"], info["artifact_uri"][len("mlflow-artifacts:/") :]


ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
MPU = "/api/2.0/mlflow-artifacts/mpu"


def test_proxy_stores_lists_serves_and_deletes_in_the_bucket(
    served: ServerProcess,
    s3_bucket: S3,  # noqa: F811
) -> None:
    run_id, rel = new_run(served)
    status, _ = call(served, "PUT", f"{ARTIFACTS}/{rel}/model/weights.bin", data=b"w" * 100)
    assert status == 200
    status, _ = call(served, "PUT", f"{ARTIFACTS}/{rel}/notes.txt", data=b"hello")
    assert status == 200
    keys = s3_bucket.keys(PREFIX)
    assert keys[f"{PREFIX}/{rel}/model/weights.bin"] == b"w" * 100

    status, listed = call(served, "GET", f"{ARTIFACTS}?path={rel}")
    assert listed == {
        "files": [
            {"path": "model", "is_dir": True},
            {"path": "notes.txt", "is_dir": False, "file_size": 5},
        ]
    }
    status, one = call(served, "GET", f"{ARTIFACTS}?path={rel}/notes.txt")
    assert one == {"files": [{"path": "notes.txt", "is_dir": False, "file_size": 5}]}
    # MLflow's own listing of a run's artifacts reads the bucket too.
    status, rest = call(served, "GET", f"/api/2.0/mlflow/artifacts/list?run_id={run_id}")
    assert [f["path"] for f in rest["files"]] == ["model", "notes.txt"]

    with fetch(f"{served.url}{ARTIFACTS}/{rel}/notes.txt") as answer:
        assert answer.read() == b"hello"
        assert answer.headers["Content-Type"] == "text/plain"
        assert answer.headers["Content-Disposition"] == "attachment; filename=notes.txt"
    for path in (
        f"/get-artifact?run_id={run_id}&path=notes.txt",
        f"/ui-api/runs/{run_id}/artifact?path=notes.txt",
    ):
        with fetch(served.url + path) as answer:
            assert answer.read() == b"hello"
    status, preview = call(
        served, "GET", f"/ui-api/runs/{run_id}/artifact?path=notes.txt&preview=1"
    )
    assert status == 200 and preview == b"hello"
    status, missing = call(served, "GET", f"{ARTIFACTS}/{rel}/nothing.txt")
    assert status == 404 and missing["error_code"] == "RESOURCE_DOES_NOT_EXIST"

    # MLflow's web UI upload (upload-artifact) writes into the bucket too.
    status, _ = call(
        served, "POST", f"/api/2.0/mlflow/upload-artifact?run_uuid={run_id}&path=ui.txt", data=b"ui"
    )
    assert status == 200
    assert s3_bucket.keys(f"{PREFIX}/{rel}/ui.txt") == {f"{PREFIX}/{rel}/ui.txt": b"ui"}

    status, _ = call(served, "DELETE", f"{ARTIFACTS}/{rel}/model")
    assert status == 200
    assert not any("/model/" in k for k in s3_bucket.keys(PREFIX))
    status, bad = call(served, "GET", f"{ARTIFACTS}?path={rel}/../../x")
    assert status == 400 and bad["error_code"] == "INVALID_PARAMETER_VALUE"


def test_large_upload_streams_in_parts(served: ServerProcess, s3_bucket: S3) -> None:  # noqa: F811
    _, rel = new_run(served)
    body = os.urandom(1024 * 1024) * 20  # 20 MiB: parts of 8 MiB as it arrives
    status, _ = call(served, "PUT", f"{ARTIFACTS}/{rel}/big.bin", data=body)
    assert status == 200
    head = s3_bucket.client().head_object(Bucket=s3_bucket.bucket, Key=f"{PREFIX}/{rel}/big.bin")
    assert head["ContentLength"] == len(body) and head["ETag"].strip('"').endswith("-3")
    with fetch(f"{served.url}{ARTIFACTS}/{rel}/big.bin") as answer:
        assert answer.read() == body
    assert s3_bucket.uploads() == []


def test_multipart_endpoints_sign_and_the_client_sends_the_parts(
    served: ServerProcess,
    s3_bucket: S3,  # noqa: F811
) -> None:
    _, rel = new_run(served)
    part = 5 * 1024 * 1024
    data = os.urandom(part) + os.urandom(1000)
    status, created = call(
        served, "POST", f"{MPU}/create/{rel}/model", {"path": "/tmp/x/big.bin", "num_parts": 2}
    )
    assert status == 200, created
    assert [c["part_number"] for c in created["credentials"]] == [1, 2]
    parts = []
    for cred, chunk in zip(created["credentials"], (data[:part], data[part:]), strict=True):
        with fetch(cred["url"], "PUT", chunk, **cred["headers"]) as answer:
            parts.append({"part_number": cred["part_number"], "etag": answer.headers["ETag"]})
    status, done = call(
        served,
        "POST",
        f"{MPU}/complete/{rel}/model",
        {"path": "/tmp/x/big.bin", "upload_id": created["upload_id"], "parts": parts},
    )
    assert status == 200, done
    assert s3_bucket.keys(f"{PREFIX}/{rel}/model/big.bin")[f"{PREFIX}/{rel}/model/big.bin"] == data

    # Presigned download: the file straight from the bucket, as an attachment.
    status, signed = call(served, "GET", f"/api/2.0/mlflow-artifacts/presigned/{rel}/model/big.bin")
    assert status == 200 and signed["file_size"] == len(data)
    with fetch(signed["url"]) as answer:
        assert answer.read() == data
    # Signed to be saved, not shown (moto ignores it; S3 answers it as Content-Disposition).
    assert "response-content-disposition=attachment" in signed["url"]

    # An aborted upload leaves nothing, listed or pending.
    status, other = call(
        served, "POST", f"{MPU}/create/{rel}", {"path": "gone.bin", "num_parts": 2}
    )
    with fetch(other["credentials"][0]["url"], "PUT", b"x" * part):
        pass
    status, _ = call(
        served, "POST", f"{MPU}/abort/{rel}", {"path": "gone.bin", "upload_id": other["upload_id"]}
    )
    assert status == 200
    assert s3_bucket.uploads() == []
    status, listed = call(served, "GET", f"{ARTIFACTS}?path={rel}")
    assert [f["path"] for f in listed["files"]] == ["model"]
    status, bad = call(served, "POST", f"{MPU}/create/{rel}", {"path": "x", "num_parts": 0})
    assert status == 400 and "num_parts" in bad["message"]


def test_presigned_urls_of_mlflow_3(served: ServerProcess, s3_bucket: S3) -> None:  # noqa: F811
    run_id, rel = new_run(served)
    status, up = call(
        served,
        "POST",
        "/api/2.0/mlflow/artifacts/presigned-upload-url",
        {"run_id": run_id, "path": "data/table.csv"},
    )
    assert status == 200, up
    assert up["headers"] == {"Content-Type": "text/csv"}
    with fetch(up["presigned_url"], "PUT", b"a,b\n1,2\n", **up["headers"]):
        pass
    assert s3_bucket.keys(f"{PREFIX}/{rel}/data/table.csv")
    status, down = call(
        served,
        "POST",
        "/api/2.0/mlflow/artifacts/presigned-download-url",
        {"run_id": run_id, "path": "data/table.csv", "expiration": 60},
    )
    assert status == 200 and down["file_size"] == 8
    with fetch(down["presigned_url"]) as answer:
        assert answer.read() == b"a,b\n1,2\n"
    status, both = call(
        served,
        "POST",
        "/api/2.0/mlflow/artifacts/presigned-upload-url",
        {"path": "x", "run_id": run_id, "model_id": "m-1"},
    )
    assert status == 400 and "Exactly one of run_id and model_id" in both["message"]
    status, long = call(
        served,
        "POST",
        "/api/2.0/mlflow/artifacts/presigned-download-url",
        {"run_id": run_id, "path": "data/table.csv", "expiration": 10**7},
    )
    assert status == 400 and "between 1 and 604800" in long["message"]


def test_a_folder_root_says_multipart_is_not_supported(tmp_path: Path) -> None:
    """Over a folder, MLflow's words: its clients then upload through the proxy."""
    with server_process(tmp_path / "srv") as server:
        status, answer = call(server, "POST", f"{MPU}/create/1/x", {"path": "f", "num_parts": 1})
        assert status == 501
        assert answer["message"].startswith(
            "Multipart upload is not supported for the current artifact repository"
        )
        run_id, _ = new_run(server)
        status, answer = call(
            server,
            "POST",
            "/api/2.0/mlflow/artifacts/presigned-upload-url",
            {"run_id": run_id, "path": "f"},
        )
        assert status == 501 and answer["error_code"] == "NOT_IMPLEMENTED"


def test_missing_bucket_is_a_clear_error(
    s3_bucket: S3,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_bucket.endpoint)
    work = tmp_path / "srv"
    with server_process(
        work,
        "--backend-store-uri",
        f"sqlite:///{work / 'store.db'}",
        "--artifacts-destination",
        "s3://no-such-bucket/prefix",
        store=False,
    ) as server:
        run_id, rel = new_run(server)
        status, answer = call(server, "PUT", f"{ARTIFACTS}/{rel}/f.txt", data=b"x")
        assert status == 503, answer
        assert "bucket 'no-such-bucket' does not exist" in answer["message"]
        status, answer = call(server, "GET", f"/api/2.0/mlflow/artifacts/list?run_id={run_id}")
        assert status == 503 and "does not exist" in answer["message"]


@pytest.mark.parametrize(
    ("destination", "said"),
    [("gs://bucket/p", "gs:// URI"), ("s3://", "names no bucket")],
)
def test_unsupported_destination_stops_the_server_with_a_clear_error(
    tmp_path: Path, destination: str, said: str
) -> None:
    work = tmp_path / "srv"
    work.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "reprorun",
            "server",
            "--port",
            "0",
            "--backend-store-uri",
            f"sqlite:///{work / 'store.db'}",
            "--artifacts-destination",
            destination,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=work,
    )
    assert result.returncode != 0
    assert f"--artifacts-destination={destination!r}" in result.stderr and said in result.stderr
    assert "Traceback" not in result.stderr


# --- the real MLflow client ---------------------------------------------------------------------

CLIENT = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    import mlflow
    from mlflow import MlflowClient

    work = Path(sys.argv[1])
    (work / "tree" / "sub").mkdir(parents=True)
    (work / "tree" / "a.txt").write_text("a")
    (work / "tree" / "sub" / "b.txt").write_text("b")
    big = work / "big.bin"
    big.write_bytes(os.urandom(1024 * 1024) * 12)
    mlflow.set_experiment("s3")
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(work / "tree" / "a.txt"))
        mlflow.log_artifacts(str(work / "tree"), "tree")
        mlflow.log_artifact(str(big), "large")
        from sklearn.linear_model import LinearRegression
        model = LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0])
        info = mlflow.sklearn.log_model(model, name="model")
    client = MlflowClient()
    listed = [f.path for f in client.list_artifacts(run.info.run_id)]
    deep = [f.path for f in client.list_artifacts(run.info.run_id, "tree/sub")]
    out = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(work / "dl")))
    loaded = mlflow.sklearn.load_model(info.model_uri)
    json.dump({
        "version": mlflow.__version__,
        "run_id": run.info.run_id,
        "artifact_uri": run.info.artifact_uri,
        "listed": listed,
        "deep": deep,
        "big_same": (out / "large" / "big.bin").read_bytes() == big.read_bytes(),
        "b": (out / "tree" / "sub" / "b.txt").read_text(),
        "model_id": info.model_id,
        "prediction": float(loaded.predict([[2.0]])[0]),
    }, open(work / "report.json", "w"))
    """
)


def test_real_mlflow_client_logs_into_the_bucket(
    served: ServerProcess,
    s3_bucket: S3,  # noqa: F811
    moto_server: MotoServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    python = client_python()
    log_start = len(moto_server.output())
    work = tmp_path / "client"
    work.mkdir()
    script = work / "client.py"
    script.write_text(CLIENT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPRORUN_", "MLFLOW_"))}
    env.update(
        MLFLOW_TRACKING_URI=served.url,
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        # The server's /server-info says it signs multipart uploads and downloads (as MLflow's
        # does over S3): the client then sends large files' parts, and fetches files, straight
        # to and from the bucket, without MLFLOW_ENABLE_PROXY_MULTIPART_* set.
        MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE=str(10 * 1024 * 1024),
        MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE=str(5 * 1024 * 1024),
    )
    result = subprocess.run(
        [str(python), str(script), str(work)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=work,
    )
    assert result.returncode == 0, f"{result.stderr}\n--- server\n{served.log()}"
    report = json.loads((work / "report.json").read_text())
    assert report["artifact_uri"].startswith("mlflow-artifacts:/")
    assert report["listed"] == ["a.txt", "large", "tree"]
    assert report["deep"] == ["tree/sub/b.txt"]
    assert report["big_same"] and report["b"] == "b"
    assert report["prediction"] == pytest.approx(2.0)

    keys = s3_bucket.keys(PREFIX)
    run_keys = [k for k in keys if f"/{report['run_id']}/artifacts/" in k]
    assert any(k.endswith("/artifacts/tree/sub/b.txt") for k in run_keys)
    big_key = next(k for k in run_keys if k.endswith("/large/big.bin"))
    head = s3_bucket.client().head_object(Bucket=s3_bucket.bucket, Key=big_key)
    # Sent by MLflow's client in 3 presigned parts (12 MiB in chunks of 5), not by the proxy.
    assert head["ETag"].strip('"').endswith("-3")
    model_keys = [k for k in keys if f"/models/{report['model_id']}/artifacts/" in k]
    assert any(k.endswith("/MLmodel") for k in model_keys)
    assert len(model_keys) >= 3, model_keys  # MLmodel, the model, its environment
    assert s3_bucket.uploads() == []
    assert report["version"] == MLFLOW_VERSION
    status, info = call(served, "GET", "/api/3.0/mlflow/server-info")
    assert (
        status == 200 and info["multipart_uploads_enabled"] and info["multipart_downloads_enabled"]
    )
    # The S3 server's own request log: presigned requests (signed in the query string, as
    # only presigned URLs are) came from the client, straight to the bucket.
    signed = [
        line
        for line in moto_server.output()[log_start:].splitlines()
        if "X-Amz-Signature=" in line and f"/{s3_bucket.bucket}/" in line
    ]
    assert any('"PUT ' in line and "/large/big.bin?partNumber=" in line for line in signed)
    assert any('"GET ' in line and "/large/big.bin?" in line for line in signed)


def test_ui_follows_a_running_log_staged_on_this_machine_then_the_bucket(
    served: ServerProcess,
    s3_bucket: S3,  # noqa: F811
) -> None:
    """A run of this machine writes its log in its staging folder while it runs (its artifacts
    are in the bucket); the UI reads it there, and from the bucket once it is uploaded."""
    run_id, rel = new_run(served)
    staged = served.workdir / "home" / "staging" / run_id / "logs" / "run.log"
    staged.parent.mkdir(parents=True)
    staged.write_text("epoch 1\n")
    status, log = call(served, "GET", f"/ui-api/runs/{run_id}/log")
    assert status == 200 and log["exists"] and log["text"] == "epoch 1\n"
    staged.unlink()
    status, log = call(served, "GET", f"/ui-api/runs/{run_id}/log")
    assert log["exists"] is False
    key = f"{PREFIX}/{rel}/logs/run.log"
    s3_bucket.client().put_object(Bucket=s3_bucket.bucket, Key=key, Body=b"epoch 1\nepoch 2\n")
    status, log = call(served, "GET", f"/ui-api/runs/{run_id}/log?offset=8")
    assert log["text"] == "epoch 2\n" and log["size"] == 16 and log["start"] == 8


# --- reprorun's own client: large files straight to the bucket in presigned parts ---------------


def test_reprorun_client_sends_large_files_straight_to_the_bucket(
    served: ServerProcess,
    s3_bucket: S3,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from reprorun.tracking import artifacts, s3_presigned

    monkeypatch.setattr(s3_presigned, "DIRECT_BYTES", 1024 * 1024)
    monkeypatch.setattr(s3_presigned, "PART_BYTES", 5 * 1024 * 1024)
    _, rel = new_run(served)
    big = tmp_path / "model.bin"
    big.write_bytes(os.urandom(1024 * 1024) * 12)
    artifacts.log_file(f"mlflow-artifacts:/{rel}", big, "model", tracking_uri=served.url)
    key = f"{PREFIX}/{rel}/model/model.bin"
    head = s3_bucket.client().head_object(Bucket=s3_bucket.bucket, Key=key)
    # 3 parts of 5 MiB sent by the client (the proxy would have sent 2 of 8 MiB).
    assert head["ETag"].strip('"').endswith("-3") and head["ContentLength"] == 12 * 1024 * 1024
    assert s3_bucket.keys(key)[key] == big.read_bytes()
    assert s3_bucket.uploads() == []
    # Switched off as MLflow's client is: through the proxy.
    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD", "false")
    artifacts.log_file(f"mlflow-artifacts:/{rel}", big, "again", tracking_uri=served.url)
    head = s3_bucket.client().head_object(
        Bucket=s3_bucket.bucket, Key=f"{PREFIX}/{rel}/again/model.bin"
    )
    assert head["ETag"].strip('"').endswith("-2")


def test_reprorun_client_falls_back_to_the_proxy_over_a_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reprorun.tracking import artifacts, s3_presigned

    monkeypatch.setattr(s3_presigned, "DIRECT_BYTES", 1024)
    with server_process(tmp_path / "srv") as server:
        _, rel = new_run(server)
        big = tmp_path / "model.bin"
        big.write_bytes(os.urandom(4096))
        artifacts.log_file(f"mlflow-artifacts:/{rel}", big, tracking_uri=server.url)
        assert (server.artifacts / rel / "model.bin").read_bytes() == big.read_bytes()


def test_multipart_uploads_across_workers(
    s3_bucket: S3,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With --workers 2, a multipart upload created by one worker is completed by whichever
    answers next: its state is in the bucket, not in a worker."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_bucket.endpoint)
    work = tmp_path / "srv"
    with server_process(
        work,
        "--backend-store-uri",
        f"sqlite:///{work / 'store.db'}",
        "--artifacts-destination",
        f"s3://{s3_bucket.bucket}/{PREFIX}",
        store=False,
        workers=2,
    ) as server:
        assert len(server.workers()) == 2
        _, rel = new_run(server)
        for i in range(8):
            name = f"f{i}.bin"
            status, created = call(
                server, "POST", f"{MPU}/create/{rel}", {"path": name, "num_parts": 1}
            )
            assert status == 200, created
            with fetch(created["credentials"][0]["url"], "PUT", b"x" * 100) as answer:
                etag = answer.headers["ETag"]
            parts = [{"part_number": 1, "etag": etag}]
            body = {"path": name, "upload_id": created["upload_id"], "parts": parts}
            status, done = call(server, "POST", f"{MPU}/complete/{rel}", body)
            assert status == 200, done
        status, listed = call(server, "GET", f"{ARTIFACTS}?path={rel}")
        assert [f["path"] for f in listed["files"]] == [f"f{i}.bin" for i in range(8)]


def test_experiment_locations_reprorun_cannot_store_to_are_refused(
    served: ServerProcess,
    s3_bucket: S3,  # noqa: F811
) -> None:
    create = "/api/2.0/mlflow/experiments/create"
    status, answer = call(served, "POST", create, {"name": "g", "artifact_location": "gs://b/p"})
    assert status == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "artifact_location='gs://b/p'" in answer["message"]
    assert "s3://BUCKET/PREFIX" in answer["message"]
    # Another bucket is fine: the experiment's runs keep their artifacts there, and the
    # proxy does not show them as its own (clients write there with their credentials).
    location = f"s3://{s3_bucket.bucket}/elsewhere"
    status, answer = call(served, "POST", create, {"name": "s", "artifact_location": location})
    assert status == 200, answer
    status, got = call(
        served, "GET", f"/api/2.0/mlflow/experiments/get?experiment_id={answer['experiment_id']}"
    )
    assert got["experiment"]["artifact_location"] == location


def test_a_client_gone_mid_upload_leaves_nothing_in_the_bucket(
    served: ServerProcess,
    s3_bucket: S3,  # noqa: F811
) -> None:
    """The connection to the server breaks after 12 of 20 MiB (one 8 MiB part already in the
    bucket): the server aborts the multipart upload; nothing is listed, nothing stays open."""
    import socket
    import time

    _, rel = new_run(served)
    with socket.create_connection(("127.0.0.1", served.port)) as sock:
        head = (
            f"PUT {ARTIFACTS}/{rel}/half.bin HTTP/1.1\r\nHost: 127.0.0.1:{served.port}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {20 * 1024 * 1024}\r\n\r\n"
        )
        sock.sendall(head.encode())
        chunk = b"x" * (1024 * 1024)
        for _ in range(12):
            sock.sendall(chunk)
        deadline = time.monotonic() + 30
        while not s3_bucket.uploads() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert s3_bucket.uploads() == [f"{PREFIX}/{rel}/half.bin"]  # a part went up
    deadline = time.monotonic() + 30
    while s3_bucket.uploads() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert s3_bucket.uploads() == []
    status, listed = call(served, "GET", f"{ARTIFACTS}?path={rel}")
    assert status == 200 and listed == {"files": []}
    assert s3_bucket.keys(PREFIX) == {}
