"""``reprorun run`` with ``REPRORUN_ARTIFACT_ROOT=s3://bucket/prefix`` (the embedded store),
against moto's real S3 API server on 127.0.0.1 (tests/s3.py): the run's code logs files and a
model straight into the bucket, reprorun's own artifacts (log, environment lock) are staged and
uploaded when the run ends, the CLI reads them back; a bucket that is missing or a storage that
cannot be reached fails the run (never FINISHED without its model) with a clear message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from reprorun.tracking.store import open_store
from tests.conftest import make_project, reprorun_cli
from tests.s3 import S3, free_port, moto_server, s3_bucket  # noqa: F401 - fixtures

MLPROJECT = """
name: s3-demo
entry_points:
  main:
    command: "python train.py"
"""

TRAIN = """
import pathlib
import reprorun

pathlib.Path("metrics.json").write_text('{"acc": 0.9}')
reprorun.log_metric("acc", 0.9)
reprorun.log_artifact("metrics.json", "eval")
reprorun.log_text("hello", "notes/readme.txt")
reprorun.log_model({"weights": [1, 2, 3]}, "model")
print("trained")
"""


def env_for(s3: S3, home: Path, root: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPRORUN_", "MLFLOW_"))}
    env.update(s3.env)
    env.update(REPRORUN_HOME=str(home), REPRORUN_ARTIFACT_ROOT=root, REPRORUN_PROGRESS="plain")
    return env


def only_run(home: Path) -> tuple[str, str, dict[str, str]]:
    store = open_store(f"sqlite:///{home / 'store.db'}")
    try:
        (run,) = store.search_runs(["0"])
        return run.info.status.value, run.info.artifact_uri, run.data.tags
    finally:
        store.close()


def test_run_logs_straight_into_the_bucket(
    s3_bucket: S3,  # noqa: F811 - the fixture
    home: Path,
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path / "p", MLPROJECT, {"train.py": TRAIN})
    env = env_for(s3_bucket, home, f"s3://{s3_bucket.bucket}/team/")
    result = reprorun_cli("run", str(project), "--env-manager", "local", env=env)
    assert result.returncode == 0, result.stderr
    assert "trained" in result.stdout

    status, artifact_uri, _ = only_run(home)
    assert status == "FINISHED"
    assert artifact_uri.startswith(f"s3://{s3_bucket.bucket}/team/0/")
    prefix = artifact_uri[len(f"s3://{s3_bucket.bucket}/") :]
    keys = s3_bucket.keys(prefix)
    assert keys[f"{prefix}/eval/metrics.json"] == b'{"acc": 0.9}'
    assert keys[f"{prefix}/notes/readme.txt"] == b"hello"
    assert f"{prefix}/model/MLmodel" in keys
    assert b"trained" in keys[f"{prefix}/logs/run.log"]  # staged here, uploaded at the end
    # Nothing of the run went to a folder named after the URI (the old behaviour: ./s3:/...).
    assert not (tmp_path / "s3:").exists() and not Path("s3:").exists()
    assert not list(home.glob("staging/*/*"))  # uploaded, then removed

    run_id = artifact_uri.split("/")[-2]
    shown = reprorun_cli("runs", "show", run_id, env=env)
    assert shown.returncode == 0, shown.stderr
    assert "eval/metrics.json" in shown.stdout and "model/MLmodel" in shown.stdout
    logs = reprorun_cli("runs", "logs", run_id, env=env)
    assert logs.returncode == 0 and "trained" in logs.stdout, logs.stderr
    out = tmp_path / "out"
    out.mkdir()
    got = reprorun_cli(
        "mlflow-cli", "artifacts", "download", "-r", run_id, "-a", "eval", "-d", str(out), env=env
    )
    assert got.returncode == 0, got.stderr
    assert (out / "eval" / "metrics.json").read_text() == '{"acc": 0.9}'
    # The model loads back from the bucket.
    load = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import reprorun; print(reprorun.load_model('runs:/{run_id}/model'))",
        ],
        env={**env, "REPRORUN_TRACKING_URI": f"sqlite:///{home / 'store.db'}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert load.returncode == 0, load.stderr
    assert json.loads(load.stdout.strip().replace("'", '"')) == {"weights": [1, 2, 3]}


def test_missing_bucket_fails_the_run_with_a_clear_error(
    s3_bucket: S3,  # noqa: F811 - the fixture
    home: Path,
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path / "p", MLPROJECT, {"train.py": TRAIN})
    env = env_for(s3_bucket, home, "s3://no-such-bucket-here/team")
    result = reprorun_cli("run", str(project), "--env-manager", "local", env=env)
    assert result.returncode != 0
    status, _, tags = only_run(home)
    assert status == "FAILED"  # its model could not be stored: never FINISHED without it
    log = home / "staging"
    text = "\n".join(p.read_text(errors="replace") for p in log.rglob("run.log"))
    assert "bucket 'no-such-bucket-here' does not exist" in text
    # The staged files could not go up either: kept here, and the run says where.
    assert "does not exist" in tags["reprorun.artifactUploadError"]
    assert "kept in" in tags["reprorun.artifactUploadError"]


def test_unreachable_storage_fails_the_run(
    s3_bucket: S3,  # noqa: F811 - the fixture
    home: Path,
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path / "p", MLPROJECT, {"train.py": TRAIN})
    env = env_for(s3_bucket, home, f"s3://{s3_bucket.bucket}/team")
    env["MLFLOW_S3_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"
    result = reprorun_cli("run", str(project), "--env-manager", "local", env=env)
    assert result.returncode != 0
    status, _, _ = only_run(home)
    assert status == "FAILED"
    assert s3_bucket.keys() == {}


def test_unsupported_artifact_root_stops_before_any_run(home: Path, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", MLPROJECT, {"train.py": TRAIN})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPRORUN_", "MLFLOW_"))}
    env.update(REPRORUN_HOME=str(home), REPRORUN_ARTIFACT_ROOT="gs://bucket/team")
    result = reprorun_cli("run", str(project), "--env-manager", "local", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "REPRORUN_ARTIFACT_ROOT='gs://bucket/team'" in result.stderr
    assert "s3://BUCKET/PREFIX" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "gs:").exists()


def test_boto3_is_not_imported_unless_the_artifacts_are_in_s3(tmp_path: Path) -> None:
    code = (
        "import sys, reprorun.cli, reprorun.projects.launch, reprorun.tracking.artifacts, "
        "reprorun.tracking.fluent, reprorun.server.app; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
