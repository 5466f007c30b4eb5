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


def test_missing_bucket_stops_the_run_before_its_code(
    s3_bucket: S3,  # noqa: F811 - the fixture
    home: Path,
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path / "p", MLPROJECT, {"train.py": TRAIN})
    env = env_for(s3_bucket, home, "s3://no-such-bucket-here/team")
    result = reprorun_cli("run", str(project), "--env-manager", "local", env=env)
    assert result.returncode != 0
    assert "FAILED (launch-error)" in result.stderr
    assert "the bucket 'no-such-bucket-here' does not exist" in result.stderr
    assert "trained" not in result.stdout  # hours of training never start without a bucket
    status, _, _ = only_run(home)
    assert status == "FAILED"


GONE = """
import os, boto3
boto3.client("s3", endpoint_url=os.environ["MLFLOW_S3_ENDPOINT_URL"]).delete_bucket(
    Bucket=os.environ["BUCKET"]
)
"""


def test_bucket_gone_mid_run_fails_the_run_with_a_clear_error(
    s3_bucket: S3,  # noqa: F811 - the fixture
    home: Path,
    tmp_path: Path,
) -> None:
    """The bucket disappears while the run runs: its code cannot store its model and fails,
    so the run is never FINISHED without it; the runner's own files stay here, and say so."""
    project = make_project(tmp_path / "p", MLPROJECT, {"train.py": GONE + TRAIN})
    env = env_for(s3_bucket, home, f"s3://{s3_bucket.bucket}/team")
    env["BUCKET"] = s3_bucket.bucket
    result = reprorun_cli("run", str(project), "--env-manager", "local", env=env)
    assert result.returncode != 0
    status, _, tags = only_run(home)
    assert status == "FAILED"
    assert f"the bucket '{s3_bucket.bucket}' does not exist" in result.stdout + result.stderr
    assert "does not exist" in tags["reprorun.artifactUploadError"]
    assert "kept in" in tags["reprorun.artifactUploadError"]
    staged = "\n".join(p.read_text(errors="replace") for p in home.rglob("staging/*/logs/run.log"))
    assert "does not exist" in staged


def test_unreachable_storage_stops_the_run(
    s3_bucket: S3,  # noqa: F811 - the fixture
    home: Path,
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path / "p", MLPROJECT, {"train.py": TRAIN})
    env = env_for(s3_bucket, home, f"s3://{s3_bucket.bucket}/team")
    env["MLFLOW_S3_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"
    result = reprorun_cli("run", str(project), "--env-manager", "local", env=env)
    assert result.returncode != 0
    assert "could not be reached" in result.stderr and "MLFLOW_S3_ENDPOINT_URL" in result.stderr
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


# --- the real MLflow client inside `reprorun run` -----------------------------------------------

MLFLOW_TRAIN = """
import mlflow
from sklearn.linear_model import LinearRegression

open("report.txt", "w").write("r2=1.0")
with mlflow.start_run():  # the run reprorun made (MLFLOW_RUN_ID), through its own endpoint
    mlflow.log_param("alpha", 0.5)
    mlflow.log_artifact("report.txt", "eval")
    model = LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0])
    mlflow.sklearn.log_model(model, name="model")
print("logged with mlflow")
"""


def mlflow_project(root: Path, boto: Path) -> Path:
    """A project whose command runs the real MLflow client (its test virtualenv) with boto3
    from this interpreter, as MLflow's S3 artifacts need (and nothing else added)."""
    from tests.integration.mlflow_env import client_python

    python = client_python()
    return make_project(
        root,
        f'name: mlflow-s3\nentry_points:\n  main:\n    command: "PYTHONPATH={boto} {python} train.py"\n',
        {"train.py": MLFLOW_TRAIN},
    )


def boto_only(tmp_path: Path) -> Path:
    """A folder with boto3 and its own dependencies only (links into this interpreter's)."""
    import boto3

    site = Path(boto3.__file__).parent.parent
    folder = tmp_path / "boto"
    folder.mkdir()
    for name in ("boto3", "botocore", "s3transfer", "jmespath"):
        (folder / name).symlink_to(site / name)
    return folder


def test_mlflow_client_in_a_run_logs_straight_into_the_bucket(
    s3_bucket: S3,  # noqa: F811 - the fixture
    home: Path,
    tmp_path: Path,
) -> None:
    project = mlflow_project(tmp_path / "p", boto_only(tmp_path))
    env = env_for(s3_bucket, home, f"s3://{s3_bucket.bucket}/team")
    env.update(MLFLOW_DISABLE_TELEMETRY="true", MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    result = reprorun_cli("run", str(project), "--env-manager", "local", env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "logged with mlflow" in result.stdout
    status, artifact_uri, _ = only_run(home)
    assert status == "FINISHED"
    prefix = artifact_uri[len(f"s3://{s3_bucket.bucket}/") :]
    keys = s3_bucket.keys("team/")
    assert keys[f"{prefix}/eval/report.txt"] == b"r2=1.0"
    model_files = [k for k in keys if "/models/" in k and k.endswith("/MLmodel")]
    assert len(model_files) == 1  # MLflow 3's logged model, under the experiment's models/
    assert not list(tmp_path.rglob("s3:"))


def test_mlflow_client_in_a_run_fails_it_when_the_bucket_is_gone(
    s3_bucket: S3,  # noqa: F811 - the fixture
    home: Path,
    tmp_path: Path,
) -> None:
    project = mlflow_project(tmp_path / "p", boto_only(tmp_path))
    train = project / "train.py"
    train.write_text(GONE + train.read_text())
    env = env_for(s3_bucket, home, f"s3://{s3_bucket.bucket}/team")
    env["BUCKET"] = s3_bucket.bucket
    env.update(MLFLOW_DISABLE_TELEMETRY="true", MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    result = reprorun_cli("run", str(project), "--env-manager", "local", env=env, timeout=300)
    assert result.returncode != 0
    status, _, _ = only_run(home)
    assert status == "FAILED"  # not FINISHED with its model missing
    assert "NoSuchBucket" in result.stdout + result.stderr


def test_experiments_create_refuses_a_location_it_cannot_store_to(home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPRORUN_", "MLFLOW_"))}
    env["REPRORUN_HOME"] = str(home)
    bad = reprorun_cli("experiments", "create", "e", "--artifact-location", "hdfs://nn/p", env=env)
    assert bad.returncode == 2
    assert "--artifact-location='hdfs://nn/p'" in bad.stderr and "Traceback" not in bad.stderr
    good = reprorun_cli("experiments", "create", "e", "--artifact-location", "s3://b/p/", env=env)
    assert good.returncode == 0, good.stderr
    listed = reprorun_cli("experiments", "list", env=env)
    assert "s3://b/p" in listed.stdout
