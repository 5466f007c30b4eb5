"""Artifacts at s3:// locations (tracking/artifacts.py over tracking/s3.py), against moto's real
S3 API server on 127.0.0.1 (tests/s3.py): writes, listings, downloads, multipart uploads of
large files, and the failures a user must be able to act on."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from reprorun.config import artifact_location, resolve_tracking
from reprorun.errors import ArtifactStorageError, UnsupportedArtifactLocation, UserInputError
from reprorun.tracking import artifacts, s3, s3_multipart
from tests.s3 import (  # noqa: F401 - fixtures
    S3,
    CutProxy,
    MotoServer,
    free_port,
    moto_auth_server,
    moto_server,
    s3_bucket,
    s3_environment,
)

RUN = "1/abc/artifacts"


@pytest.fixture
def bucket(s3_bucket: S3) -> S3:  # noqa: F811 - the fixture
    return s3_bucket


def uri(bucket: S3) -> str:
    return f"{bucket.root}/{RUN}"


def test_log_file_list_and_download(bucket: S3, tmp_path: Path) -> None:
    src = tmp_path / "model.pkl"
    src.write_bytes(b"weights")
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "a.txt").write_text("a")
    (tmp_path / "tree" / "sub" / "b.json").write_text("{}")

    assert artifacts.log_file(uri(bucket), src, "model") == "model/model.pkl"
    artifacts.log_dir(uri(bucket), tmp_path / "tree", "data")
    artifacts.write_text(uri(bucket), "notes/readme.md", "héllo")

    keys = bucket.keys("root/")
    assert keys[f"root/{RUN}/model/model.pkl"] == b"weights"
    assert keys[f"root/{RUN}/data/sub/b.json"] == b"{}"
    assert keys[f"root/{RUN}/notes/readme.md"] == "héllo".encode()

    top = artifacts.list_artifacts(uri(bucket))
    assert [(f.path, f.is_dir) for f in top] == [
        ("data", True),
        ("model", True),
        ("notes", True),
    ]
    assert [(f.path, f.file_size) for f in artifacts.list_artifacts(uri(bucket), "data")] == [
        ("data/a.txt", 1),
        ("data/sub", None),
    ]
    every = artifacts.list_artifacts(uri(bucket), recursive=True)
    assert [f.path for f in every if not f.is_dir] == [
        "data/a.txt",
        "data/sub/b.json",
        "model/model.pkl",
        "notes/readme.md",
    ]
    assert {f.path for f in every if f.is_dir} == {"data", "data/sub", "model", "notes"}
    # A file's own listing is empty, as a folder's file is in a local store.
    assert artifacts.list_artifacts(uri(bucket), "model/model.pkl") == []

    one = artifacts.download(uri(bucket), "model/model.pkl", tmp_path / "out")
    assert one.read_bytes() == b"weights"
    folder = artifacts.download(uri(bucket), "data", tmp_path / "out")
    assert (folder / "sub" / "b.json").read_text() == "{}"
    assert not list((tmp_path / "out").rglob("*.part"))
    with pytest.raises(UserInputError, match="No artifact 'nothing'"):
        artifacts.download(uri(bucket), "nothing", tmp_path / "out")


def test_folder_markers_and_unsafe_paths(bucket: S3) -> None:
    bucket.client().put_object(Bucket=bucket.bucket, Key=f"root/{RUN}/empty/", Body=b"")
    listed = artifacts.list_artifacts(uri(bucket), recursive=True)
    assert [(f.path, f.is_dir) for f in listed] == [("empty", True)]
    with pytest.raises(UserInputError, match="must not contain"):
        artifacts.list_artifacts(uri(bucket), "../other-run")
    with pytest.raises(UserInputError, match="must not contain"):
        artifacts.write_text(uri(bucket), "../../escape.txt", "x")


def test_large_file_goes_up_in_parts(bucket: S3, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    block = os.urandom(1024 * 1024)
    big.write_bytes(block * 20)  # 20 MiB: three parts of 8 MiB
    artifacts.log_file(uri(bucket), big)
    head = bucket.client().head_object(Bucket=bucket.bucket, Key=f"root/{RUN}/big.bin")
    assert head["ContentLength"] == 20 * 1024 * 1024
    assert head["ETag"].strip('"').endswith("-3")  # a multipart object's ETag counts its parts
    back = artifacts.download(uri(bucket), "big.bin", tmp_path / "back")
    assert back.read_bytes() == block * 20


def test_streaming_upload_parts_and_abort(bucket: S3) -> None:
    where = s3.Location.parse(uri(bucket)).join("stream.bin")
    up = s3_multipart.StreamingUpload(where)
    for _ in range(5):
        up.write(b"x" * (3 * 1024 * 1024))  # 15 MiB in chunks that do not match a part
    up.close()
    assert bucket.keys(where.key)[where.key] == b"x" * (15 * 1024 * 1024)

    aborted = s3_multipart.StreamingUpload(s3.Location.parse(uri(bucket)).join("aborted.bin"))
    aborted.write(b"y" * (9 * 1024 * 1024))  # one part sent
    assert bucket.uploads() == [f"root/{RUN}/aborted.bin"]
    aborted.abort()
    assert bucket.uploads() == []
    assert f"root/{RUN}/aborted.bin" not in bucket.keys("root/")


# --- settings -----------------------------------------------------------------------------------


def test_artifact_root_setting_takes_s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REPRORUN_ARTIFACT_ROOT", "s3://bucket/some/prefix/")
    assert resolve_tracking(f"sqlite:///{tmp_path}/x.db").artifact_root == "s3://bucket/some/prefix"


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("gs://bucket/p", "gs:// URI"),
        ("wasbs://c@acct.blob.core.windows.net/p", "wasbs:// URI"),
        ("hdfs://nn/p", "hdfs:// URI"),
        ("s3://", "names no bucket"),
        ("mlflow-artifacts:/x", "mlflow-artifacts:// URI"),
    ],
)
def test_unsupported_artifact_root_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str, said: str
) -> None:
    monkeypatch.setenv("REPRORUN_ARTIFACT_ROOT", value)
    with pytest.raises(UnsupportedArtifactLocation) as caught:
        resolve_tracking(f"sqlite:///{tmp_path}/x.db")
    message = str(caught.value)
    assert "REPRORUN_ARTIFACT_ROOT" in message and repr(value) in message and said in message
    if "bucket" not in said:
        assert "s3://BUCKET/PREFIX" in message and "folder" in message


def test_experiment_locations_may_be_proxied() -> None:
    assert artifact_location("mlflow-artifacts:/x/", "--artifact-location", proxied=True) == (
        "mlflow-artifacts:/x"
    )
    with pytest.raises(UnsupportedArtifactLocation, match="--artifact-location='ftp://h/p'"):
        artifact_location("ftp://h/p", "--artifact-location", proxied=True)


def test_a_location_of_another_scheme_says_it_cannot_be_read() -> None:
    """An experiment MLflow recorded elsewhere (gs://): a clear error, not a folder 'gs:'."""
    with pytest.raises(Exception, match=r"reprorun cannot read gs: locations"):
        artifacts.list_artifacts("gs://bucket/1/run/artifacts")


def test_s3_is_not_a_local_folder() -> None:
    assert artifacts.is_remote("s3://b/p") and not artifacts.is_remote("file:///tmp/x")
    with pytest.raises(Exception, match="in object storage"):
        artifacts.local_dir("s3://b/p/1/r/artifacts")


# --- failures -----------------------------------------------------------------------------------


def test_missing_bucket_says_so(bucket: S3, tmp_path: Path) -> None:
    src = tmp_path / "f.txt"
    src.write_text("x")
    missing = f"s3://no-such-bucket-{bucket.bucket}/p"
    with pytest.raises(ArtifactStorageError, match=r"bucket 'no-such-bucket-.*' does not exist"):
        artifacts.log_file(missing, src)
    with pytest.raises(ArtifactStorageError, match="does not exist"):
        artifacts.list_artifacts(missing)
    with pytest.raises(ArtifactStorageError, match="does not exist"):
        artifacts.download(missing, "f.txt", tmp_path / "out")


def test_wrong_credentials_say_which_variables(
    moto_auth_server: MotoServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    for key, value in s3_environment(moto_auth_server.url).items():
        monkeypatch.setenv(key, value)
    src = tmp_path / "f.txt"
    src.write_text("x")
    with pytest.raises(ArtifactStorageError) as caught:
        artifacts.log_file("s3://bucket/p", src)
    message = str(caught.value)
    assert "credentials were refused" in message and "InvalidAccessKeyId" in message
    assert "AWS_ACCESS_KEY_ID" in message and moto_auth_server.url in message


def test_no_credentials_say_where_they_come_from(
    bucket: S3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(ArtifactStorageError, match=r"no AWS credentials found.*AWS_PROFILE"):
        artifacts.list_artifacts(uri(bucket))


def test_unreachable_endpoint_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key, value in s3_environment(f"http://127.0.0.1:{free_port()}").items():
        monkeypatch.setenv(key, value)
    src = tmp_path / "f.txt"
    src.write_text("x")
    started = time.monotonic()
    with pytest.raises(ArtifactStorageError, match=r"could not be reached.*MLFLOW_S3_ENDPOINT_URL"):
        artifacts.log_file("s3://bucket/p", src)
    assert time.monotonic() - started < 30


def test_network_cut_mid_upload_leaves_nothing_listed(
    bucket: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The network to the storage breaks while a large file goes up in parts: a clear error,
    and the server (still up, with the parts it got) lists nothing of the file."""
    proxy = CutProxy(int(bucket.endpoint.rsplit(":", 1)[1]))
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", proxy.url)
    big = tmp_path / "model.bin"
    big.write_bytes(os.urandom(1024 * 1024) * 64)  # 64 MiB: 8 parts
    direct = bucket.client()

    def cut_once_parts_arrive() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if direct.list_multipart_uploads(Bucket=bucket.bucket).get("Uploads"):
                proxy.cut()
                return
            time.sleep(0.005)

    cutter = threading.Thread(target=cut_once_parts_arrive)
    cutter.start()
    try:
        with pytest.raises(ArtifactStorageError, match=r"could not be reached|broke the conn"):
            artifacts.log_file(uri(bucket), big, "model")
    finally:
        cutter.join()
        proxy.close()
    assert proxy.cut_off.is_set()  # the cut came mid-upload, not after it
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", bucket.endpoint)
    assert artifacts.list_artifacts(uri(bucket), recursive=True) == []
    assert bucket.keys("root/") == {}


def test_server_killed_mid_upload_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The storage server itself dies while a large file goes up: a clear error."""
    server = MotoServer(tmp_path / "moto.log")
    server.start()
    try:
        for key, value in s3_environment(server.url).items():
            monkeypatch.setenv(key, value)
        client = s3.client()
        client.create_bucket(Bucket="killed")
        big = tmp_path / "model.bin"
        big.write_bytes(os.urandom(1024 * 1024) * 64)

        def kill_when_parts_arrive() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if client.list_multipart_uploads(Bucket="killed").get("Uploads"):
                    server.kill()
                    return
                time.sleep(0.005)

        killer = threading.Thread(target=kill_when_parts_arrive)
        killer.start()
        try:
            with pytest.raises(ArtifactStorageError, match=r"could not be reached|broke the conn"):
                artifacts.log_file("s3://killed/run/artifacts", big)
        finally:
            killer.join()
    finally:
        server.stop()


def test_without_boto3_the_error_says_what_to_install(
    bucket: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's own environment without boto3 (a venv the project declared): a clear error,
    not an ImportError from deep inside."""
    import sys

    monkeypatch.setattr(s3, "_CLIENTS", {})
    monkeypatch.setitem(sys.modules, "boto3", None)
    src = tmp_path / "f.txt"
    src.write_text("x")
    with pytest.raises(ArtifactStorageError) as caught:
        artifacts.log_file(uri(bucket), src)
    message = str(caught.value)
    assert "need boto3" in message and "reprorun[s3]" in message
    assert "add boto3 to its dependencies" in message
