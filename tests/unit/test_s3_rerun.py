"""``reprorun rerun`` of a run whose artifacts are in S3: its stored uncommitted changes and
environment lock are fetched from the bucket (no local folder is assumed). Against moto's real
S3 API server on 127.0.0.1 (tests/s3.py)."""

from __future__ import annotations

from pathlib import Path

from reprorun.projects.rerun import rerun_spec
from reprorun.tracking import artifacts
from reprorun.tracking.entities import SystemTags
from reprorun.tracking.store import open_store
from tests.s3 import S3, moto_server, s3_bucket  # noqa: F401 - fixtures


def test_rerun_fetches_the_diff_and_lock_from_the_bucket(
    s3_bucket: S3,  # noqa: F811 - the fixture
    home: Path,
    tmp_path: Path,
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    exp = store.create_experiment("e", f"s3://{s3_bucket.bucket}/team")
    project = tmp_path / "project"
    project.mkdir()
    run = store.create_run(
        exp,
        tags={
            SystemTags.SOURCE_KIND: "local",
            SystemTags.PROJECT_DIR: str(project),
            SystemTags.GIT_DIFF: "reprorun/uncommitted.diff",
            SystemTags.ENV: "uv",
            SystemTags.ENV_LOCK: "environment/requirements.lock",
        },
    )
    uri = run.info.artifact_uri
    artifacts.write_text(uri, "reprorun/uncommitted.diff", "--- a/x\n+++ b/x\n")
    artifacts.write_text(uri, "environment/requirements.lock", "numpy==2.0.0\n")

    spec = rerun_spec(store.get_run(run.info.run_id))
    assert spec.patch is not None and spec.patch.read_text() == "--- a/x\n+++ b/x\n"
    assert spec.env_lock is not None and spec.env_lock.read_text() == "numpy==2.0.0\n"
    assert spec.patch.is_relative_to(home / "staging")


def test_rerun_says_a_missing_lock_is_missing(
    s3_bucket: S3,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    exp = store.create_experiment("e", f"s3://{s3_bucket.bucket}/team")
    run = store.create_run(
        exp,
        tags={
            SystemTags.SOURCE_KIND: "local",
            SystemTags.PROJECT_DIR: str(tmp_path),
            SystemTags.ENV: "uv",
            SystemTags.ENV_LOCK: "environment/requirements.lock",
        },
    )
    spec = rerun_spec(store.get_run(run.info.run_id))
    assert spec.env_lock is None
    assert any("environment lock" in w and "missing" in w for w in spec.warnings)
