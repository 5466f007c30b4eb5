"""Remote jobs (Ray, Slurm, Kubernetes, Databricks) with artifacts in S3 need no shared file
system: the job's wrapper stores the live log straight into the bucket, the submitter reads it
back from there, and the job's variables say where the storage is (never its credentials).
Against moto's real S3 API server on 127.0.0.1 (tests/s3.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reprorun.backends.job import stored_log
from reprorun.projects.lifecycle import run_job_env
from reprorun.tracking.heartbeat import reporter_for_run
from reprorun.tracking.store import open_store
from tests.s3 import S3, moto_server, s3_bucket  # noqa: F401 - fixtures


def test_job_wrapper_stores_the_log_in_the_bucket(
    s3_bucket: S3,  # noqa: F811 - the fixture
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    store = open_store(uri)
    exp = store.create_experiment("cluster", f"s3://{s3_bucket.bucket}/cluster")
    run = store.create_run(exp)
    artifact_uri = run.info.artifact_uri
    assert artifact_uri.startswith(f"s3://{s3_bucket.bucket}/cluster/")
    # What the job's node has: the run's variables (no artifact folder of the submitter's).
    monkeypatch.setenv("REPRORUN_RUN_ID", run.info.run_id)
    monkeypatch.setenv("REPRORUN_TRACKING_URI", uri)
    reporter = reporter_for_run()
    assert reporter is not None
    spool = tmp_path / "spool.log"
    spool.write_bytes(b"epoch 1\nepoch 2\n")
    reporter.beat(spool, spool.stat().st_size, last=True)
    key = artifact_uri[len(f"s3://{s3_bucket.bucket}/") :] + "/logs/run.log"
    assert s3_bucket.keys(key) == {key: b"epoch 1\nepoch 2\n"}
    # The submitter (or `runs logs` hours later) reads it from the bucket.
    assert stored_log(artifact_uri, uri) == b"epoch 1\nepoch 2\n"
    assert store.get_run(run.info.run_id).info.status.value == "RUNNING"


def test_job_variables_say_where_the_storage_is_not_its_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://storage.internal:9000")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA-SECRET")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret")
    env = run_job_env({}, "run-1", "0", "http://tracking:5000")
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://storage.internal:9000"
    assert env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert "AWS_ACCESS_KEY_ID" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert "very-secret" not in "".join(env.values())
