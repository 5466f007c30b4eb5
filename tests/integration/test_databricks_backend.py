"""The databricks backend end to end, against a fake workspace (tests/integration/
fake_databricks.py: a local HTTP server following the documented Jobs and DBFS APIs; no real
workspace is reachable from here). Runs go through reprorun.projects.run and the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import reprorun.projects
from reprorun.backends.base import (
    CONFIG_TAG,
    FAILURE_TAG,
    JOB_ID_TAG,
    JOB_URL_TAG,
    LaunchSpec,
)
from reprorun.backends.databricks.job import DatabricksJob
from reprorun.backends.databricks.payload import LAUNCHER
from reprorun.backends.registry import get_backend
from reprorun.backends.status import attach
from reprorun.errors import ExecutionError, RunFailed, UserInputError
from reprorun.tracking.entities import RunStatus, SystemTags
from reprorun.tracking.store import open_store
from tests.conftest import make_project, reprorun_cli
from tests.integration.fake_databricks import FakeWorkspace
from tests.integration.server_proc import free_port, server_process

SPEC = {"spark_version": "15.4.x-scala2.12", "num_workers": 1, "node_type_id": "i3.xlarge"}
TRACKING = "http://tracking.invalid:5000"  # where the job would log (the fake runs nothing here)
MLPROJECT = """\
name: demo
entry_points:
  main:
    parameters:
      alpha: {type: float, default: 0.5}
    command: "python train.py --alpha {alpha}"
"""


@pytest.fixture(autouse=True)
def no_databricks_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No DATABRICKS_* from the outside, and a home without ~/.databrickscfg."""
    for key in list(os.environ):
        if key.startswith("DATABRICKS_"):
            monkeypatch.delenv(key)
    home = tmp_path / "user-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(DatabricksJob, "poll_seconds", 0.05)
    return home


@pytest.fixture
def workspace(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeWorkspace]:
    with FakeWorkspace() as ws:
        monkeypatch.setenv("DATABRICKS_HOST", ws.url)
        monkeypatch.setenv("DATABRICKS_TOKEN", ws.token)
        yield ws


@pytest.fixture
def executing(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeWorkspace]:
    """A fake workspace that runs the submitted task itself, as a cluster's driver would."""
    with FakeWorkspace(execute=True) as ws:
        monkeypatch.setenv("DATABRICKS_HOST", ws.url)
        monkeypatch.setenv("DATABRICKS_TOKEN", ws.token)
        yield ws


def cluster_spec(tmp_path: Path, **extra: Any) -> Path:
    path = tmp_path / "cluster-spec.json"
    path.write_text(json.dumps({**SPEC, "tracking_uri": TRACKING, **extra}))
    return path


def git_project(root: Path, files: dict[str, str] | None = None) -> Path:
    make_project(root, MLPROJECT, {"train.py": "print('training')\n", **(files or {})})
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    subprocess.run(
        ["git", "-C", str(root), "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qm", "x"],
        check=True,
    )
    return root


def submit(project: Path, spec: Path, **kwargs: Any) -> Any:
    return reprorun.projects.run(
        str(project),
        backend="databricks",
        backend_config=str(spec),
        synchronous=False,
        echo=False,
        env_manager="local",
        **kwargs,
    )


def launcher_args(body: dict[str, Any]) -> dict[str, str]:
    params = body["tasks"][0]["spark_python_task"]["parameters"]
    return dict(p.split("=", 1) for p in params)


def dbfs_path(fuse: str) -> str:
    assert fuse.startswith("/dbfs/")
    return fuse[len("/dbfs") :]


# --- submission ----------------------------------------------------------------------------


def test_submission_ships_the_snapshot_and_submits_the_spec(
    workspace: FakeWorkspace, tmp_path: Path
) -> None:
    project = git_project(tmp_path / "proj", {"data.csv": "a,b\n"})
    spec = cluster_spec(tmp_path, env_vars={"DATA": "s3://bucket/data"}, timeout_seconds=3600)
    submitted = submit(project, spec, parameters={"alpha": 0.1})

    assert len(workspace.submitted) == 1
    body = workspace.submitted[0]
    db_run = next(iter(workspace.runs.values()))
    assert submitted.job_id == str(db_run.run_id)
    assert body["idempotency_token"] == submitted.run_id
    assert body["run_name"] == f"reprorun {submitted.run_id}"
    assert body["timeout_seconds"] == 3600
    (task,) = body["tasks"]
    assert task["new_cluster"] == SPEC
    assert "libraries" not in task  # --env-manager local: the cluster's own packages
    launcher = task["spark_python_task"]["python_file"]
    assert launcher.startswith("dbfs:/reprorun/launcher/") and launcher.endswith(".py")
    assert workspace.dbfs[launcher[len("dbfs:") :]] == LAUNCHER.read_bytes()

    args = launcher_args(body)
    assert args["--command"] == "python train.py --alpha 0.1"
    assert args["--subdirectory"] == ""
    env = json.loads(args["--env"])
    assert env["DATA"] == "s3://bucket/data"
    assert env["REPRORUN_RUN_ID"] == env["MLFLOW_RUN_ID"] == submitted.run_id
    assert env["REPRORUN_TRACKING_URI"] == env["MLFLOW_TRACKING_URI"] == TRACKING
    assert set(env) <= {
        "DATA", "REPRORUN_RUN_ID", "REPRORUN_EXPERIMENT_ID", "REPRORUN_TRACKING_URI",
        "PYTHONUNBUFFERED", "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID",
    }  # fmt: skip

    # The project: where MLflow keeps it, named by its content's SHA-256, without .git.
    run = open_store().get_run(submitted.run_id)
    tarball = dbfs_path(args["--project"])
    assert tarball.startswith(f"/mlflow-experiments/{run.info.experiment_id}/projects-code/")
    assert tarball.endswith(f"/{hashlib.sha256(workspace.dbfs[tarball]).hexdigest()}.tar.gz")
    members = workspace.archive(tarball)
    assert members["mlflow-project/MLproject"] == MLPROJECT.encode()
    assert members["mlflow-project/data.csv"] == b"a,b\n"
    assert not [name for name in members if ".git" in name.split("/")]
    assert "client/reprorun/__init__.py" in workspace.archive(dbfs_path(args["--client"]))

    # The run: waiting for its cluster, with MLflow's Databricks tags and the job's page.
    assert run.info.status is RunStatus.SCHEDULED
    tags = run.data.tags
    page = f"{workspace.url}/?o=1234567890#job/{db_run.job_id}/run/{db_run.run_id}"
    assert tags[JOB_URL_TAG] == tags["mlflow.databricks.runURL"] == page == submitted.job_url
    assert tags[JOB_ID_TAG] == tags["mlflow.databricks.shellJobRunID"] == str(db_run.run_id)
    assert tags["mlflow.databricks.shellJobID"] == str(db_run.job_id)
    assert tags["mlflow.databricks.webappURL"] == workspace.url
    assert tags[SystemTags.BACKEND] == "databricks"
    assert json.loads(tags[CONFIG_TAG])["node_type_id"] == "i3.xlarge"
    # The token went in every request's header and nowhere else.
    assert set(workspace.tokens_seen) == {workspace.token}
    assert not [k for k, v in tags.items() if workspace.token in v]


def test_status_follows_the_workspace_and_the_log_is_kept(
    workspace: FakeWorkspace, tmp_path: Path
) -> None:
    submitted = submit(make_project(tmp_path / "p", MLPROJECT), cluster_spec(tmp_path))
    store = open_store()
    db_run = submitted.job_id
    assert submitted.get_status() is RunStatus.SCHEDULED

    workspace.set_state(db_run, "RUNNING")
    workspace.set_output(db_run, "epoch 1\n")
    assert submitted.get_status() is RunStatus.RUNNING
    assert store.get_run(submitted.run_id).info.status is RunStatus.RUNNING
    # Another process (reprorun runs status|logs) rebuilds the handle from the run's tags.
    other = attach(store, store.get_run(submitted.run_id))
    assert other.get_status() is RunStatus.RUNNING
    assert other.logs() == b"epoch 1\n"
    assert other.job_url == submitted.job_url

    workspace.set_state(db_run, "TERMINATING")
    assert submitted.get_status() is RunStatus.RUNNING
    workspace.set_output(db_run, "epoch 1\nepoch 2\n[reprorun] the command exited with code 0\n")
    workspace.set_state(db_run, "TERMINATED", "SUCCESS")
    assert other.wait() is True
    run = store.get_run(submitted.run_id)
    assert run.info.status is RunStatus.FINISHED
    assert run.data.tags[SystemTags.EXIT_CODE] == "0"
    assert FAILURE_TAG not in run.data.tags
    log = Path(run.info.artifact_uri.removeprefix("file://")) / "logs" / "run.log"
    assert log.read_text().startswith("epoch 1\nepoch 2\n")
    assert submitted.get_status() is RunStatus.FINISHED
    assert submitted.logs() == log.read_bytes()


def test_a_failed_task_keeps_databricks_reason_and_the_exit_code(
    workspace: FakeWorkspace, tmp_path: Path
) -> None:
    submitted = submit(make_project(tmp_path / "p", MLPROJECT), cluster_spec(tmp_path))
    error = "RuntimeError: reprorun: the project's command exited with code 3"
    workspace.set_output(
        submitted.job_id,
        "loading\n[reprorun] the command exited with code 3\n",
        error=error,
        error_trace=f"Traceback (most recent call last):\n  ...\n{error}",
    )
    workspace.set_state(
        submitted.job_id, "TERMINATED", "FAILED", "Workload failed, see run output for details"
    )
    assert submitted.wait() is False
    run = open_store().get_run(submitted.run_id)
    assert run.info.status is RunStatus.FAILED
    assert run.data.tags[FAILURE_TAG] == (
        f"Databricks run {submitted.job_id} ended FAILED: Workload failed, see run output for "
        f"details; {error}"
    )
    assert run.data.tags[SystemTags.EXIT_CODE] == "3"
    assert (
        submitted.logs()
        .decode()
        .endswith(f"code 3\nTraceback (most recent call last):\n  ...\n{error}\n")
    )


@pytest.mark.parametrize(
    ("life_cycle_state", "result_state", "message", "status", "reason"),
    [
        (
            "INTERNAL_ERROR",
            None,
            "Library installation failed for library due to user error for pypi",
            RunStatus.FAILED,
            "ended INTERNAL_ERROR: Library installation failed",
        ),
        (
            "SKIPPED",
            None,
            "Skipping this run because the limit of 1 maximum concurrent runs has been reached",
            RunStatus.FAILED,
            "Databricks skipped run",
        ),
        (
            "TERMINATED",
            "TIMEDOUT",
            "Run timed out",
            RunStatus.FAILED,
            "ended TIMEDOUT (timeout_seconds): Run timed out",
        ),
        (
            "TERMINATED",
            "CANCELED",
            "Run cancelled by a workspace admin",
            RunStatus.KILLED,
            "was CANCELED: Run cancelled by a workspace admin",
        ),
    ],
)
def test_other_endings_map_to_statuses_with_reasons(
    workspace: FakeWorkspace,
    tmp_path: Path,
    life_cycle_state: str,
    result_state: str | None,
    message: str,
    status: RunStatus,
    reason: str,
) -> None:
    submitted = submit(make_project(tmp_path / "p", MLPROJECT), cluster_spec(tmp_path))
    workspace.set_state(submitted.job_id, life_cycle_state, result_state, message)
    assert submitted.get_status() is status
    run = open_store().get_run(submitted.run_id)
    assert run.info.status is status
    assert reason in run.data.tags[FAILURE_TAG]


@pytest.mark.parametrize(
    ("life_cycle_state", "result_state", "message", "termination", "reason"),
    [
        (
            "TERMINATED",
            "TIMEDOUT",
            "Run timed out",
            {"code": "CANCELED", "type": "SUCCESS", "message": "Run timed out"},
            "timeout",
        ),
        (
            "INTERNAL_ERROR",
            None,
            "Cluster 0507-101112-abc was terminated. Reason: DRIVER_OUT_OF_MEMORY (CLIENT_ERROR).",
            {"code": "CLUSTER_ERROR", "type": "CLIENT_ERROR", "message": "Cluster terminated"},
            "out-of-memory",
        ),
        (
            "TERMINATED",
            "CANCELED",
            "Run cancelled.",
            {"code": "USER_CANCELED", "type": "SUCCESS", "message": "Run cancelled."},
            "cancelled",
        ),
    ],
)
def test_why_a_run_ended_is_recorded_in_databricks_words(
    workspace: FakeWorkspace,
    tmp_path: Path,
    life_cycle_state: str,
    result_state: str | None,
    message: str,
    termination: dict[str, Any],
    reason: str,
) -> None:
    submitted = submit(make_project(tmp_path / "p", MLPROJECT), cluster_spec(tmp_path))
    workspace.set_state(submitted.job_id, life_cycle_state, result_state, message, termination)
    assert submitted.get_status().is_terminal
    tags = open_store().get_run(submitted.run_id).data.tags
    assert tags[SystemTags.EXIT_REASON] == reason
    assert termination["code"] in tags[SystemTags.EXIT_DETAIL]


def test_timeout_becomes_the_runs_timeout_seconds(workspace: FakeWorkspace, tmp_path: Path) -> None:
    spec = cluster_spec(tmp_path, timeout_seconds=3600)
    submit(make_project(tmp_path / "p", MLPROJECT), spec, timeout=90)
    assert workspace.submitted[0]["timeout_seconds"] == 90


def test_cancel_asks_databricks_to_cancel_and_marks_the_run_killed(
    workspace: FakeWorkspace, tmp_path: Path
) -> None:
    submitted = submit(make_project(tmp_path / "p", MLPROJECT), cluster_spec(tmp_path))
    workspace.set_state(submitted.job_id, "RUNNING")
    assert submitted.get_status() is RunStatus.RUNNING
    store = open_store()
    attach(store, store.get_run(submitted.run_id)).cancel()  # as `reprorun runs kill` does
    assert workspace.calls("/api/2.1/jobs/runs/cancel") == 1
    assert workspace.runs[int(submitted.job_id)].state["result_state"] == "CANCELED"
    run = store.get_run(submitted.run_id)
    assert run.info.status is RunStatus.KILLED
    assert "was CANCELED: Run cancelled." in run.data.tags[FAILURE_TAG]
    assert submitted.get_status() is RunStatus.KILLED


def test_a_run_the_workspace_no_longer_knows_fails_with_the_reason(
    workspace: FakeWorkspace, tmp_path: Path
) -> None:
    submitted = submit(make_project(tmp_path / "p", MLPROJECT), cluster_spec(tmp_path))
    workspace.forget(submitted.job_id)
    assert submitted.get_status() is RunStatus.FAILED
    reason = open_store().get_run(submitted.run_id).data.tags[FAILURE_TAG]
    assert f"{workspace.url} no longer knows run {submitted.job_id}" in reason


def test_a_busy_workspace_is_asked_again(workspace: FakeWorkspace, tmp_path: Path) -> None:
    submitted = submit(make_project(tmp_path / "p", MLPROJECT), cluster_spec(tmp_path))
    workspace.set_state(submitted.job_id, "RUNNING")
    before = workspace.calls("/api/2.1/jobs/runs/get")
    workspace.fail_next(
        "/api/2.1/jobs/runs/get",
        429,
        "REQUEST_LIMIT_EXCEEDED",
        times=2,
        headers={"Retry-After": "0"},
    )
    assert submitted.get_status() is RunStatus.RUNNING
    assert workspace.calls("/api/2.1/jobs/runs/get") == before + 3
    # A workspace that keeps failing is an error of the look, not of the run.
    workspace.fail_next("/api/2.1/jobs/runs/get", 503, times=5, headers={"Retry-After": "0"})
    with pytest.raises(ExecutionError, match="HTTP 503 TEMPORARILY_UNAVAILABLE: try again"):
        submitted.get_status()
    assert open_store().get_run(submitted.run_id).info.status is RunStatus.RUNNING


# --- failures before and at submission -----------------------------------------------------


def test_unreachable_workspace_fails_the_run_naming_the_host(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    host = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("DATABRICKS_HOST", host)
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-x")
    started = time.monotonic()
    with pytest.raises(ExecutionError, match=f"Could not reach the Databricks workspace {host}"):
        submit(make_project(tmp_path / "p", MLPROJECT), cluster_spec(tmp_path))
    assert time.monotonic() - started < 30
    (run,) = open_store().search_runs(["0"])
    assert run.info.status is RunStatus.FAILED
    reason = run.data.tags[FAILURE_TAG]
    assert reason.startswith(f"ExecutionError: Could not reach the Databricks workspace {host}")
    assert "Check the host (from DATABRICKS_HOST and DATABRICKS_TOKEN)" in reason


def test_a_refused_token_fails_the_run_saying_so(
    workspace: FakeWorkspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-revoked")
    with pytest.raises(
        ExecutionError, match="refused the token from DATABRICKS_HOST and DATABRICKS_TOKEN"
    ):
        submit(make_project(tmp_path / "p", MLPROJECT), cluster_spec(tmp_path))
    (run,) = open_store().search_runs(["0"])
    assert run.info.status is RunStatus.FAILED
    reason = run.data.tags[FAILURE_TAG]
    assert "HTTP 403 403: Invalid access token." in reason
    assert "create a personal access token" in reason
    assert "dapi-revoked" not in reason
    assert workspace.submitted == []


def test_missing_credentials_fail_before_any_run_exists(tmp_path: Path) -> None:
    with pytest.raises(
        UserInputError, match="No Databricks credentials for the databricks backend"
    ):
        submit(make_project(tmp_path / "p", MLPROJECT), cluster_spec(tmp_path))
    assert open_store().search_runs(["0"]) == []


def test_a_local_store_without_tracking_uri_is_refused_before_any_run_exists(
    workspace: FakeWorkspace, tmp_path: Path
) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    with pytest.raises(UserInputError, match="cannot open this run's store"):
        submit(make_project(tmp_path / "p", MLPROJECT), spec)
    assert open_store().search_runs(["0"]) == []


# --- credentials from ~/.databrickscfg -----------------------------------------------------


def test_credentials_from_a_profile_of_databrickscfg(
    workspace: FakeWorkspace,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_databricks_environment: Path,
) -> None:
    monkeypatch.delenv("DATABRICKS_HOST")
    monkeypatch.delenv("DATABRICKS_TOKEN")
    (no_databricks_environment / ".databrickscfg").write_text(
        f"[DEFAULT]\nhost = {workspace.url}\ntoken = dapi-stale\n\n"
        f"[work]\nhost = {workspace.url}\ntoken = {workspace.token}\n"
    )
    submitted = submit(
        make_project(tmp_path / "p", MLPROJECT), cluster_spec(tmp_path, profile="work")
    )
    assert set(workspace.tokens_seen) == {workspace.token}
    # The profile is kept with the run: another shell follows the job with the same one.
    store = open_store()
    workspace.set_state(submitted.job_id, "TERMINATED", "SUCCESS")
    assert attach(store, store.get_run(submitted.run_id)).get_status() is RunStatus.FINISHED


def test_credentials_from_databricks_config_file_default_profile(
    workspace: FakeWorkspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABRICKS_TOKEN")  # the host still comes from DATABRICKS_HOST
    cfg = tmp_path / "databricks.cfg"
    cfg.write_text(f"[DEFAULT]\nhost = https://elsewhere.example\ntoken = {workspace.token}\n")
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(cfg))
    submitted = submit(make_project(tmp_path / "p", MLPROJECT), cluster_spec(tmp_path))
    assert submitted.job_id in {str(r) for r in workspace.runs}
    tags = open_store().get_run(submitted.run_id).data.tags
    assert tags["mlflow.databricks.webappURL"] == workspace.url


def test_following_a_run_with_credentials_for_another_workspace_is_refused(
    workspace: FakeWorkspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    submitted = submit(make_project(tmp_path / "p", MLPROJECT), cluster_spec(tmp_path))
    monkeypatch.setenv("DATABRICKS_HOST", "https://other.cloud.databricks.com")
    store = open_store()
    with pytest.raises(
        UserInputError, match=f"runs in the Databricks workspace {workspace.url}, but"
    ):
        attach(store, store.get_run(submitted.run_id))


# --- uploads -------------------------------------------------------------------------------


def test_a_large_project_is_streamed_in_blocks_and_uploaded_once(
    workspace: FakeWorkspace, tmp_path: Path
) -> None:
    project = make_project(tmp_path / "p", MLPROJECT)
    (project / "weights.bin").write_bytes(os.urandom(2_500_000))  # does not compress
    first = submit(project, cluster_spec(tmp_path))
    assert workspace.calls("/api/2.0/dbfs/create") == 1
    assert workspace.calls("/api/2.0/dbfs/add-block") == 3  # 1 MB + 1 MB + the rest
    assert workspace.calls("/api/2.0/dbfs/close") == 1
    assert workspace.calls("/api/2.0/dbfs/put") == 2  # the client and the launcher: small
    tarball = dbfs_path(launcher_args(workspace.submitted[0])["--project"])
    assert (
        workspace.archive(tarball)["mlflow-project/weights.bin"]
        == (project / "weights.bin").read_bytes()
    )

    second = submit(project, cluster_spec(tmp_path))  # the same tree: nothing is sent again
    assert second.run_id != first.run_id
    assert launcher_args(workspace.submitted[1])["--project"] == f"/dbfs{tarball}"
    assert workspace.calls("/api/2.0/dbfs/create") == 1
    assert workspace.calls("/api/2.0/dbfs/put") == 2
    assert workspace.calls("/api/2.0/dbfs/get-status") == 6


def test_the_lock_and_configured_libraries_are_the_tasks_libraries(
    workspace: FakeWorkspace, tmp_path: Path
) -> None:
    backend = get_backend(
        "databricks",
        {"new_cluster": SPEC, "libraries": [{"jar": "dbfs:/jars/x.jar"}], "tracking_uri": TRACKING},
    )
    store = open_store()
    run = store.create_run(store.get_or_create_experiment("lock"))
    project = make_project(tmp_path / "p", MLPROJECT)
    spec = LaunchSpec(
        run_id=run.info.run_id,
        command="python train.py",
        cwd=project,
        env={},
        store=store,
        artifact_dir=tmp_path / "artifacts",
        experiment_id=run.info.experiment_id,
        artifact_uri=run.info.artifact_uri,
        tracking_uri=TRACKING,
        job_env={"REPRORUN_RUN_ID": run.info.run_id},
        lock_text="# reprorun lock: python 3.11.9, uv\nscikit-learn==1.5.2\npyspark==3.5.1\n",
    )
    backend.submit(spec)
    assert workspace.submitted[0]["tasks"][0]["libraries"] == [
        {"jar": "dbfs:/jars/x.jar"},
        {"pypi": {"package": "scikit-learn==1.5.2"}},
    ]


# --- the job, run by the fake's own driver -------------------------------------------------

TRAIN = """\
import os, sys
import reprorun

print("client:", reprorun.__file__)
print("python:", sys.executable)
print("top:", open("../top.txt").read().strip())
print("data:", os.environ.get("DATA"), "home:", os.environ.get("REPRORUN_HOME"))
with reprorun.start_run():
    reprorun.log_metric("alpha", float(sys.argv[2]))
sys.exit(int(os.environ.get("EXIT", "0")))
"""


def repo_with_subproject(tmp_path: Path) -> str:
    repo = tmp_path / "repo"
    make_project(repo / "proj", MLPROJECT, {"train.py": TRAIN})
    (repo / "top.txt").write_text("from the top of the tree\n")
    git_project(repo)  # commits it all (and adds a top-level MLproject of its own)
    return f"file://{repo}#proj"


def test_the_job_runs_in_the_shipped_tree_and_logs_into_the_tracking_server(
    executing: FakeWorkspace, tmp_path: Path
) -> None:
    uri = repo_with_subproject(tmp_path)
    spec = tmp_path / "cluster-spec.json"
    spec.write_text(json.dumps({**SPEC, "env_vars": {"DATA": "dbfs:/data"}}))
    chunks: list[bytes] = []
    with server_process(tmp_path / "server") as server:
        submitted = reprorun.projects.run(
            uri,
            parameters={"alpha": 0.25},
            backend="databricks",
            backend_config=str(spec),
            env_manager="local",
            tracking_uri=server.url,
            echo=chunks.append,
        )
        assert submitted.get_status() is RunStatus.FINISHED
        run = open_store(server.url).get_run(submitted.run_id)
        assert run.data.metrics["alpha"] == 0.25  # the job's code logged into this very run
        assert run.data.tags[SystemTags.EXIT_CODE] == "0"
        assert launcher_args(executing.submitted[0])["--subdirectory"] == "proj"
        assert b"[reprorun] the command exited with code 0" in submitted.logs()
        # The command ran under the heartbeat wrapper (issue 18), which reached the server.
        assert launcher_args(executing.submitted[0])["--heartbeat"] == "15"
        assert run.data.tags[SystemTags.HEARTBEAT].isdigit()
    out = b"".join(chunks).decode()
    assert "client: " in out and "/client/reprorun/__init__.py" in out  # the shipped client
    assert "-python/bin/python" in out  # the driver's own Python, which has no reprorun
    assert "top: from the top of the tree" in out  # the whole tree, run from its subdirectory
    assert "data: dbfs:/data home: None" in out  # the run's variables, not this process's


def test_a_failing_command_fails_the_run_with_its_exit_code(
    executing: FakeWorkspace, tmp_path: Path
) -> None:
    uri = repo_with_subproject(tmp_path)
    spec = tmp_path / "cluster-spec.json"
    spec.write_text(json.dumps({**SPEC, "env_vars": {"EXIT": "3"}}))  # logs into the server
    with server_process(tmp_path / "server") as server:
        with pytest.raises(RunFailed):
            reprorun.projects.run(
                uri,
                backend="databricks",
                backend_config=str(spec),
                env_manager="local",
                tracking_uri=server.url,
                echo=False,
            )
        (run,) = open_store(server.url).search_runs(["0"])
    assert run.info.status is RunStatus.FAILED
    assert run.data.tags[SystemTags.EXIT_CODE] == "3"
    assert run.data.tags[FAILURE_TAG].endswith(
        "Workload failed, see run output for details; "
        "RuntimeError: reprorun: the project's command exited with code 3"
    )


def test_cancel_stops_the_running_job(executing: FakeWorkspace, tmp_path: Path) -> None:
    project = make_project(
        tmp_path / "p", "entry_points:\n  main:\n    command: 'echo started; sleep 300'\n"
    )
    submitted = submit(project, cluster_spec(tmp_path))
    executing.wait_for(submitted.job_id, "RUNNING")
    deadline = time.monotonic() + 30
    while b"started" not in submitted.logs():
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)
    started = time.monotonic()
    submitted.cancel()
    assert time.monotonic() - started < 20
    assert submitted.get_status() is RunStatus.KILLED
    assert executing.runs[int(submitted.job_id)].process.poll() is not None  # type: ignore[union-attr]
    assert b"started" in submitted.logs()


# --- the command line ----------------------------------------------------------------------


def test_cli_run_with_a_cluster_spec_file(executing: FakeWorkspace, tmp_path: Path) -> None:
    project = make_project(
        tmp_path / "p", "entry_points:\n  main:\n    command: 'echo hello from $REPRORUN_RUN_ID'\n"
    )
    spec = cluster_spec(tmp_path)
    done = reprorun_cli(
        "run",
        str(project),
        "--backend",
        "databricks",
        "--backend-config",
        str(spec),
        "--env-manager",
        "local",
    )
    assert done.returncode == 0, done.stderr
    (run,) = open_store().search_runs(["0"])
    assert f"hello from {run.info.run_id}" in done.stdout
    assert run.info.status is RunStatus.FINISHED
    assert run.data.tags[JOB_URL_TAG].startswith(f"{executing.url}/?o=")

    status = reprorun_cli("runs", "status", run.info.run_id, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["job_url"] == run.data.tags[JOB_URL_TAG]


def test_cli_refuses_a_bad_cluster_spec_naming_the_key(
    workspace: FakeWorkspace, tmp_path: Path
) -> None:
    project = make_project(tmp_path / "p", MLPROJECT)
    spec = cluster_spec(tmp_path, num_workers="two")
    done = reprorun_cli(
        "run", str(project), "--backend", "databricks", "--backend-config", str(spec)
    )
    assert done.returncode == 2
    assert (
        f"Backend config {spec}: option 'num_workers' of the databricks backend must be an integer"
        in done.stderr
    )
    assert workspace.requests == []
