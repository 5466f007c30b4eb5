"""The ray backend: its options and mappings, then real runs on a Ray head on 127.0.0.1 (the
``ray_address`` fixture starts it with ray-up.sh, or CI gives REPRORUN_TEST_RAY_ADDRESS).

The worker has no ``reprorun`` command: the test projects print, and the tests read what they
printed in the run's stored log. Every wait is bounded: a watchdog stops the test's Ray jobs
if they outlive it, so a stuck job fails the test instead of hanging it.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import reprorun.projects
from reprorun.backends.base import CONFIG_TAG, FAILURE_TAG, JOB_ID_TAG, JOB_URL_TAG
from reprorun.backends.ray.api import JobsApi, zip_tree
from reprorun.backends.ray.backend import entrypoint, lock_requirements
from reprorun.backends.ray.job import job_state, overtime
from reprorun.backends.ray.options import TIMEOUT_KEY
from reprorun.backends.registry import get_backend
from reprorun.backends.status import attach
from reprorun.errors import ExecutionError, RunFailed, UserInputError
from reprorun.tracking.artifacts import local_dir
from reprorun.tracking.entities import ExitReason, RunStatus, SystemTags
from reprorun.tracking.store import open_store
from tests.conftest import make_project, reprorun_cli

PRINT = (
    "entry_points:\n  main:\n    parameters:\n      n: {type: int, default: 1}\n"
    '    command: \'echo "n={n} run=$REPRORUN_RUN_ID"; echo "greeting=$GREETING '
    "threads=$OMP_NUM_THREADS\"; exit ${EXIT_WITH:-0}'\n"
)
SLEEP = "entry_points:\n  main:\n    command: 'echo started; sleep 60'\n"
# No environment declared: the job runs the node's own `python`, which has no reprorun.
LOGS_A_METRIC = "entry_points:\n  main:\n    command: 'python train.py'\n"
TRAIN = """\
import sys
import reprorun

print("python=" + sys.executable)
print("client=" + reprorun.__file__)
reprorun.log_metric("loss", 0.25)
"""


# --- helpers --------------------------------------------------------------------------------


@contextmanager
def bounded(address: str, seconds: float) -> Iterator[None]:
    """Fail (after stopping them) if this test's Ray jobs still run after ``seconds``."""
    fired: list[str] = []
    api = JobsApi(address)

    def stop_ours() -> None:
        status, data = api.request("GET", "/api/jobs/")
        for job in json.loads(data) if status == 200 else []:
            sid = job.get("submission_id") or ""
            if sid.startswith("reprorun-") and job.get("status") in ("PENDING", "RUNNING"):
                api.request("POST", f"/api/jobs/{sid}/stop")
                fired.append(sid)

    timer = threading.Timer(seconds, stop_ours)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
    assert not fired, f"jobs still running after {seconds} s were stopped: {fired}"


def wait_until(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out after {seconds} s waiting for {what}"
        time.sleep(0.2)


def stored_log(run_id: str) -> str:
    run = open_store().get_run(run_id)
    return (local_dir(run.info.artifact_uri) / "logs" / "run.log").read_text()


def only_run() -> Any:
    store = open_store()
    runs = store.search_runs([e.experiment_id for e in store.list_experiments()])
    assert len(runs) == 1, runs
    return runs[0]


def git_project(root: Path) -> str:
    """A git repository whose project is in ``sub`` and reads a file above it."""
    make_project(root / "sub", PRINT.replace("exit", "cat ../data.txt; exit"))
    (root / "data.txt").write_text("data-from-the-top\n")
    (root / "run.sh").write_text("#!/bin/sh\necho script-ran\n")
    (root / "run.sh").chmod(0o755)
    for argv in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "p"],
    ):
        subprocess.run(argv, cwd=root, check=True, timeout=30)
    return f"file://{root}#sub"


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- options, mappings, packaging (no cluster) ----------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"address": "http://h:8265", "num_cpu": 1}, "'num_cpu' is not an option.*'num_cpus'"),
        ({"address": "http://h:8265", "num_gpus": "1"}, "'num_gpus'.*must be a number"),
        ({"address": "http://h:8265", "memory": 1.5}, "'memory'.*must be an integer"),
        ({"address": "http://h:8265", "env_vars": {"A": 1}}, "'env_vars'.*strings"),
        ({"address": "http://h:8265", "num_cpus": -1}, "'num_cpus'.*>= 0"),
        ({"address": "ray://h:10001"}, "option 'address'.*Jobs API.*not a ray://"),
        ({"address": "http://h:8265", "tracking_uri": "h:5000"}, "tracking_uri must be a URI"),
        ({}, "'address' in the backend config or the RAY_ADDRESS"),
    ],
)
def test_bad_options_are_named(
    config: dict[str, Any], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(UserInputError, match=message):
        get_backend("ray", config)


def test_address_from_ray_address_is_kept_with_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "10.1.2.3:8265/")
    backend = get_backend("ray", {"num_cpus": 0.5})
    assert json.loads(backend.options_json())["address"] == "http://10.1.2.3:8265"
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    with pytest.raises(UserInputError, match="RAY_ADDRESS is 'auto'"):
        get_backend("ray", {})


def test_conda_and_docker_environments_are_refused_before_the_run() -> None:
    backend = get_backend("ray", {"address": "http://h:8265"})
    with pytest.raises(UserInputError, match="--env-manager uv or virtualenv"):
        backend.check_env("conda")
    with pytest.raises(UserInputError, match="does not run docker_env projects"):
        backend.check_env("docker")
    backend.check_env("uv")


@pytest.mark.parametrize(
    ("info", "status", "reason", "exit_code"),
    [
        ({"status": "PENDING"}, RunStatus.SCHEDULED, None, None),
        ({"status": "RUNNING"}, RunStatus.RUNNING, None, None),
        ({"status": "SUCCEEDED", "driver_exit_code": 0}, RunStatus.FINISHED, None, 0),
        (
            {
                "status": "FAILED",
                "error_type": "JOB_ENTRYPOINT_COMMAND_ERROR",
                "message": "Job entrypoint command failed with exit code 3, last available "
                "logs (truncated to 20,000 chars):\nlots of log",
                "driver_exit_code": 3,
            },
            RunStatus.FAILED,
            "Job entrypoint command failed with exit code 3",
            3,
        ),
        (
            {"status": "FAILED", "error_type": "RUNTIME_ENV_SETUP_FAILURE", "message": "pip: x"},
            RunStatus.FAILED,
            "RUNTIME_ENV_SETUP_FAILURE: pip: x",
            None,
        ),
        (
            {"status": "STOPPED", "message": "Job was intentionally stopped."},
            RunStatus.KILLED,
            "Job was intentionally stopped.",
            None,
        ),
    ],
)
def test_ray_status_mapping(
    info: dict[str, Any], status: RunStatus, reason: str | None, exit_code: int | None
) -> None:
    state = job_state(info)
    assert (state.status, state.reason, state.exit_code) == (status, reason, exit_code)


# GET /api/jobs/<id> answers of ended jobs, as Ray 2.x's job supervisor and manager write them.
_FAILED = "Job entrypoint command failed with exit code {}, last available logs (truncated to "
_OOM_TAIL = (
    "20,000 chars):\nray.exceptions.OutOfMemoryError: Task was killed due to the node running "
    "low on memory.\nMemory on the node (IP: 127.0.0.1) was 1.90GB / 2.00GB (0.95)"
)


@pytest.mark.parametrize(
    ("info", "reason", "signal", "detail"),
    [
        ({"status": "SUCCEEDED", "driver_exit_code": 0}, ExitReason.SUCCEEDED, None, "SUCCEEDED"),
        (
            {
                "status": "FAILED",
                "error_type": "JOB_ENTRYPOINT_COMMAND_ERROR",
                "message": _FAILED.format(3) + "20,000 chars):\nboom",
                "driver_exit_code": 3,
            },
            ExitReason.CODE_ERROR,
            None,
            "FAILED: JOB_ENTRYPOINT_COMMAND_ERROR: Job entrypoint command failed with exit code 3",
        ),
        (  # the driver killed from outside (kill -9): Popen's -9
            {
                "status": "FAILED",
                "error_type": "JOB_ENTRYPOINT_COMMAND_ERROR",
                "message": "Job entrypoint command failed with exit code -9. No logs available.",
                "driver_exit_code": -9,
            },
            ExitReason.CODE_ERROR,
            "SIGKILL",
            "FAILED: JOB_ENTRYPOINT_COMMAND_ERROR: Job entrypoint command failed with exit code "
            "-9. No logs available.",
        ),
        (  # kill -TERM from outside, through bash: 128 + 15
            {
                "status": "FAILED",
                "error_type": "JOB_ENTRYPOINT_COMMAND_ERROR",
                "message": "Job entrypoint command failed with exit code 143. No logs available.",
                "driver_exit_code": 143,
            },
            ExitReason.CANCELLED,
            "SIGTERM",
            None,
        ),
        (
            {
                "status": "FAILED",
                "error_type": "JOB_ENTRYPOINT_COMMAND_ERROR",
                "message": _FAILED.format(1) + _OOM_TAIL,
                "driver_exit_code": 1,
            },
            ExitReason.OUT_OF_MEMORY,
            None,
            None,
        ),
        (
            {"status": "FAILED", "error_type": "RUNTIME_ENV_SETUP_FAILURE", "message": "pip: x"},
            ExitReason.LAUNCH_ERROR,
            None,
            "FAILED: RUNTIME_ENV_SETUP_FAILURE: pip: x",
        ),
        (
            {
                "status": "FAILED",
                "error_type": "JOB_SUPERVISOR_ACTOR_DIED",
                "message": "Job supervisor actor died: The actor died because its node has died.",
            },
            ExitReason.NODE_LOST,
            None,
            None,
        ),
        (
            {"status": "STOPPED", "message": "Job was intentionally stopped."},
            ExitReason.CANCELLED,
            None,
            "STOPPED: Job was intentionally stopped.",
        ),
    ],
)
def test_each_ray_end_is_classified_with_rays_words(
    info: dict[str, Any], reason: ExitReason, signal: str | None, detail: str | None
) -> None:
    tags = job_state(info).end_tags()
    assert tags[SystemTags.EXIT_REASON] == reason.value
    assert tags.get(SystemTags.EXIT_SIGNAL) == signal
    if detail is not None:
        assert tags[SystemTags.EXIT_DETAIL] == detail
    assert "last available logs" not in tags[SystemTags.EXIT_DETAIL]


def test_a_job_past_its_timeout_is_to_be_stopped_counting_from_its_submission() -> None:
    info = {"status": "RUNNING", "start_time": 1_000_000, "metadata": {TIMEOUT_KEY: "30"}}
    assert overtime(info, 1_000 + 29) is None
    said = overtime(info, 1_000 + 31)
    assert said and "--timeout 30 s" in said and "Ray has no time limit" in said
    assert overtime({"status": "RUNNING", "start_time": 1_000_000}, 10**9) is None


def test_a_failed_environment_build_keeps_rays_words_and_the_tools_last_lines() -> None:
    message = (
        "runtime_env setup failed: Failed to set up runtime environment.\n"
        "[Node 127.0.0.1] Traceback (most recent call last):\n"
        + "".join(f'  File "x.py", line {i}, in f\n' for i in range(40))
        + "ERROR: No matching distribution found for nope==1.0\n"
    )
    state = job_state(
        {"status": "FAILED", "error_type": "RUNTIME_ENV_SETUP_FAILURE", "message": message}
    )
    assert state.reason is not None
    assert state.reason.startswith("RUNTIME_ENV_SETUP_FAILURE: runtime_env setup failed")
    assert state.reason.endswith("ERROR: No matching distribution found for nope==1.0")
    assert "line 10," not in state.reason and len(state.reason.splitlines()) < 20


def test_http_errors_say_rays_last_exception_line() -> None:
    relayed = (
        b"Traceback (most recent call last):\n  File ...\nRuntimeError: Request failed with "
        b"status code 400: Traceback (most recent call last):\n  File ...\nValueError: Job "
        b"with submission_id x already exists.\n.\n"
    )
    error = JobsApi("http://h:8265").error(500, relayed, "POST /api/jobs/")
    assert str(error) == (
        "Ray at http://h:8265 refused POST /api/jobs/: HTTP 500: ValueError: Job with "
        "submission_id x already exists."
    )


def test_unknown_ray_status_is_an_error() -> None:
    with pytest.raises(ExecutionError, match="'SUSPENDED'"):
        job_state({"status": "SUSPENDED", "submission_id": "x"})


def test_lock_lines_become_pip_requirements() -> None:
    lock = "# reprorun lock: python 3.11.7, uv\n\nsix==1.16.0\nrequests==2.32.3  # via x\n"
    assert lock_requirements(lock) == ["six==1.16.0", "requests==2.32.3"]
    assert lock_requirements(None) == []
    with pytest.raises(ExecutionError, match="mypkg @ file:///home/me/mypkg"):
        lock_requirements("six==1.16.0\nmypkg @ file:///home/me/mypkg\n")


def test_entrypoint_runs_the_command_with_bash_in_the_subdirectory(tmp_path: Path) -> None:
    (tmp_path / "sub dir").mkdir()
    command = 'echo "it\'s $((1+1))" $(basename "$PWD")'
    done = subprocess.run(
        ["sh", "-c", entrypoint(command, "sub dir")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert done.stdout == "it's 2 sub dir\n"


def test_package_is_stable_skips_git_and_keeps_modes(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref")
    (tmp_path / "empty").mkdir()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "run.sh").write_text("echo hi\n")
    (tmp_path / "a" / "run.sh").chmod(0o755)
    (tmp_path / "a" / "__pycache__").mkdir()  # Python's caches are not shipped
    (tmp_path / "a" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    first, second = io.BytesIO(), io.BytesIO()
    zip_tree(tmp_path, first)
    (tmp_path / "a" / "run.sh").touch()  # a new mtime: same package
    zip_tree(tmp_path, second)
    assert first.getvalue() == second.getvalue()
    with zipfile.ZipFile(first) as archive:
        assert archive.namelist() == ["a/run.sh", "empty/"]
        assert archive.getinfo("a/run.sh").external_attr >> 16 & 0o777 == 0o755


# --- real runs ------------------------------------------------------------------------------


def test_unknown_option_is_rejected_before_any_run_exists(home: Path, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", PRINT)
    with pytest.raises(UserInputError, match="'cpus' is not an option of the ray backend"):
        reprorun.projects.run(
            str(project), backend="ray", backend_config={"address": "http://x:1", "cpus": 1}
        )
    assert open_store().search_runs(["0"]) == []


def test_unreachable_address_fails_the_run_with_the_reason(home: Path, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", PRINT)
    address = f"http://127.0.0.1:{unused_port()}"
    with pytest.raises(ExecutionError, match=f"Could not reach the Ray Jobs API at {address}"):
        reprorun.projects.run(
            str(project),
            backend="ray",
            backend_config={"address": address},
            env_manager="local",
            echo=False,
        )
    run = only_run()
    assert run.info.status is RunStatus.FAILED
    assert address in run.data.tags[FAILURE_TAG]
    assert "ray status" in run.data.tags[FAILURE_TAG]


def test_an_address_that_is_not_http_fails_the_run_with_the_reason(
    home: Path, tmp_path: Path
) -> None:
    """The GCS port instead of the dashboard's: something answers, but not HTTP."""
    project = make_project(tmp_path / "p", PRINT)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def answer_garbage() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"\x00\x01 not http\r\n")

    thread = threading.Thread(target=answer_garbage, daemon=True)
    thread.start()
    address = f"http://127.0.0.1:{server.getsockname()[1]}"
    try:
        with pytest.raises(ExecutionError, match="not the GCS port"):
            reprorun.projects.run(
                str(project),
                backend="ray",
                backend_config={"address": address},
                env_manager="local",
                echo=False,
            )
    finally:
        thread.join(10)
        server.close()
    assert only_run().info.status is RunStatus.FAILED


def test_synchronous_run_ships_the_tree_and_stores_the_log(
    home: Path, tmp_path: Path, ray_address: str
) -> None:
    uri = git_project(tmp_path / "repo")
    echoed: list[bytes] = []
    with bounded(ray_address, 60):
        submitted = reprorun.projects.run(
            uri,
            parameters={"n": 7},
            backend="ray",
            backend_config={"address": ray_address},
            env_manager="local",
            echo=echoed.append,
        )
    assert submitted.get_status() is RunStatus.FINISHED
    run = open_store().get_run(submitted.run_id)
    assert run.info.status is RunStatus.FINISHED
    tags = run.data.tags
    assert tags[JOB_ID_TAG] == f"reprorun-{submitted.run_id}"
    assert tags[JOB_URL_TAG] == f"{ray_address}/#/jobs/reprorun-{submitted.run_id}"
    assert tags[SystemTags.EXIT_CODE] == "0"
    log = stored_log(submitted.run_id)
    assert f"n=7 run={submitted.run_id}" in log  # the run's variables reached the job
    assert "data-from-the-top" in log  # the tree above the project's subdirectory was shipped
    assert f"n=7 run={submitted.run_id}".encode() in b"".join(echoed)  # followed as it ran


def test_exit_code_3_fails_the_run_with_rays_reason(
    home: Path, tmp_path: Path, ray_address: str
) -> None:
    project = make_project(tmp_path / "p", PRINT)
    with bounded(ray_address, 60), pytest.raises(RunFailed):
        reprorun.projects.run(
            str(project),
            backend="ray",
            backend_config={"address": ray_address, "env_vars": {"EXIT_WITH": "3"}},
            env_manager="local",
            echo=False,
        )
    run = only_run()
    assert run.info.status is RunStatus.FAILED
    assert run.data.tags[FAILURE_TAG] == "Job entrypoint command failed with exit code 3"
    assert run.data.tags[SystemTags.EXIT_CODE] == "3"
    assert f"run={run.info.run_id}" in stored_log(run.info.run_id)


def test_asynchronous_run_then_wait(home: Path, tmp_path: Path, ray_address: str) -> None:
    project = make_project(tmp_path / "p", PRINT)
    with bounded(ray_address, 60):
        submitted = reprorun.projects.run(
            str(project),
            backend="ray",
            backend_config={"address": ray_address},
            env_manager="local",
            synchronous=False,
            echo=False,
        )
        assert submitted.get_status() in (RunStatus.SCHEDULED, RunStatus.RUNNING)
        assert submitted.wait() is True
    assert submitted.get_status() is RunStatus.FINISHED
    assert b"n=1 run=" in submitted.logs()
    assert "n=1 run=" in stored_log(submitted.run_id)


def test_cli_config_file_env_vars_and_resources_reach_the_job(
    home: Path, tmp_path: Path, ray_address: str
) -> None:
    project = make_project(tmp_path / "p", PRINT)
    config = tmp_path / "ray.yaml"
    config.write_text(
        f"address: {ray_address}\nnum_cpus: 1\nmemory: 100000000\n"
        "env_vars:\n  GREETING: hello there\n"
    )
    with bounded(ray_address, 60):
        done = reprorun_cli(
            "run", str(project), "--backend", "ray", "--backend-config", str(config),
            "--env-manager", "local", timeout=90,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # Ray sets OMP_NUM_THREADS from the command's CPUs: num_cpus reached the job.
    assert "greeting=hello there threads=1" in done.stdout
    run = only_run()
    # Ray's scheduler reserved them for the job's supervisor actor (state API, to check only).
    api = JobsApi(ray_address)
    name = f"_ray_internal_job_actor_{run.data.tags[JOB_ID_TAG]}"
    _, data = api.request("GET", "/api/v0/actors?detail=1&limit=10000")
    actors = json.loads(data)["data"]["result"]["result"]
    (actor,) = [a for a in actors if a["name"] == name]
    assert actor["required_resources"] == {"CPU": 1.0, "memory": 100000000.0}
    logs = reprorun_cli("runs", "logs", run.info.run_id, timeout=60)
    assert "greeting=hello there" in logs.stdout


def test_pending_job_is_scheduled_and_its_cancel_is_recorded(
    home: Path, tmp_path: Path, ray_address: str
) -> None:
    project = make_project(tmp_path / "p", SLEEP)
    with bounded(ray_address, 60):
        # The head has 2 CPUs: this run holds them, the next one waits for them.
        blocker = reprorun.projects.run(
            str(project),
            backend="ray",
            backend_config={"address": ray_address, "num_cpus": 2},
            env_manager="local",
            synchronous=False,
            echo=False,
        )
        wait_until(lambda: blocker.get_status() is RunStatus.RUNNING, 30, "the blocker to run")
        waiting = reprorun.projects.run(
            str(project),
            backend="ray",
            backend_config={"address": ray_address, "num_cpus": 1},
            env_manager="local",
            synchronous=False,
            echo=False,
        )
        time.sleep(2)
        assert waiting.get_status() is RunStatus.SCHEDULED  # Ray's PENDING
        started = time.monotonic()
        waiting.cancel()  # Ray stops a PENDING job only once it starts
        assert (
            time.monotonic() - started < 45
        )  # stop_timeout_seconds is 15; a loaded machine adds its share
        assert waiting.get_status() is RunStatus.KILLED
        run = open_store().get_run(waiting.run_id)
        assert "asked ray to stop job" in run.data.tags[FAILURE_TAG]
        blocker.cancel()
        assert blocker.get_status() is RunStatus.KILLED
        # Once the CPUs are free the waiting job starts, and Ray's queued stop ends it.
        api = JobsApi(ray_address)
        path = f"/api/jobs/{waiting.job_id}"
        wait_until(
            lambda: json.loads(api.request("GET", path)[1])["status"] == "STOPPED", 30, "STOPPED"
        )


def test_attached_handle_follows_and_cancels_a_running_job(
    home: Path, tmp_path: Path, ray_address: str
) -> None:
    project = make_project(tmp_path / "p", SLEEP)
    with bounded(ray_address, 60):
        submitted = reprorun.projects.run(
            str(project),
            backend="ray",
            backend_config={"address": ray_address},
            env_manager="local",
            synchronous=False,
            echo=False,
        )
        wait_until(lambda: submitted.get_status() is RunStatus.RUNNING, 30, "RUNNING")
        wait_until(lambda: b"started" in submitted.logs(), 10, "the job's first line")
        # What `reprorun runs kill` does in another process: rebuild the handle from the tags.
        store = open_store()
        handle = attach(store, store.get_run(submitted.run_id))
        assert handle.get_status() is RunStatus.RUNNING
        started = time.monotonic()
        handle.cancel()
        assert time.monotonic() - started < 15
    assert handle.get_status() is RunStatus.KILLED
    assert submitted.get_status() is RunStatus.KILLED
    run = open_store().get_run(submitted.run_id)
    assert run.data.tags[FAILURE_TAG] == "Job was intentionally stopped."
    assert "started" in stored_log(submitted.run_id)


def test_a_job_ray_no_longer_knows_fails_the_run(home: Path, ray_address: str) -> None:
    store = open_store()
    created = store.create_run(
        store.get_or_create_experiment("ray"),
        tags={
            SystemTags.BACKEND: "ray",
            JOB_ID_TAG: "reprorun-no-such-job",
            CONFIG_TAG: json.dumps({"address": ray_address}),
        },
    )
    handle = attach(store, store.get_run(created.info.run_id))
    assert handle.get_status() is RunStatus.FAILED
    run = store.get_run(created.info.run_id)
    assert "no longer knows job reprorun-no-such-job" in run.data.tags[FAILURE_TAG]
    assert "could not be read" in stored_log(created.info.run_id)


def test_lock_builds_the_environment_on_the_worker(
    home: Path, tmp_path: Path, ray_address: str
) -> None:
    project = make_project(
        tmp_path / "p",
        "python_env: python_env.yaml\nentry_points:\n  main:\n    command: "
        '\'python -c "import six, sys; print(\\"six\\", six.__version__, sys.prefix)"\'\n',
        {"python_env.yaml": "dependencies: [six==1.16.0]\n"},
    )
    # The Ray venv has six 1.17.0: 1.16.0 can only come from the environment Ray built.
    with bounded(ray_address, 120):
        submitted = reprorun.projects.run(
            str(project),
            backend="ray",
            backend_config={"address": ray_address},
            env_manager="uv",
            echo=False,
        )
    log = stored_log(submitted.run_id)
    assert "six 1.16.0" in log
    assert "runtime_resources/pip/" in log


def test_the_clusters_python_has_no_reprorun(ray_address: str) -> None:
    """The head runs from Ray's own venv, as a real cluster's Python, without reprorun: what
    the next test imports can only be the client each job ships."""
    api = JobsApi(ray_address)
    sid = api.call("POST", "/api/jobs/", {"entrypoint": "python -c 'import reprorun'"})[
        "submission_id"
    ]
    path = f"/api/jobs/{sid}"
    wait_until(
        lambda: json.loads(api.request("GET", path)[1])["status"] in ("SUCCEEDED", "FAILED"),
        60,
        "the job to end",
    )
    logs = json.loads(api.request("GET", f"{path}/logs")[1])["logs"]
    assert "No module named 'reprorun'" in logs, (
        "the Ray head's python has reprorun: start it with its own venv first on PATH "
        f"(PATH=/tmp/ray-ci-venv/bin:$PATH ray-up.sh, as .ci/run does). Its log: {logs}"
    )


def test_a_project_without_an_environment_logs_with_the_shipped_client(
    home: Path, tmp_path: Path, ray_address: str
) -> None:
    project = make_project(tmp_path / "p", LOGS_A_METRIC, {"train.py": TRAIN})
    with bounded(ray_address, 60):
        submitted = reprorun.projects.run(
            str(project), backend="ray", backend_config={"address": ray_address}, echo=False
        )
    log = stored_log(submitted.run_id)
    assert submitted.get_status() is RunStatus.FINISHED, log
    run = open_store().get_run(submitted.run_id)
    assert run.data.metrics["loss"] == 0.25  # logged by the job into this very run
    # The client Ray unpacked from the job's py_modules, not this machine's reprorun.
    assert "/runtime_resources/py_modules_files/" in log, log
    assert str(Path(reprorun.__file__).parent) not in log


def test_a_driver_killed_from_outside_is_classified_with_its_signal(
    home: Path, tmp_path: Path, ray_address: str
) -> None:
    """kill -9 of the job's command, from outside Ray (as an admin or the kernel would): the
    run ends FAILED with the signal kept; nothing says it was the OOM killer, so the class is
    the command's (code-error), as for a local run."""
    pid_file = tmp_path / "pid"
    project = make_project(
        tmp_path / "p",
        "entry_points:\n  main:\n    command: "
        + json.dumps(f"echo $$ > {pid_file}; echo started; sleep 120")
        + "\n",
    )
    with bounded(ray_address, 90):
        submitted = reprorun.projects.run(
            str(project),
            backend="ray",
            backend_config={"address": ray_address},
            env_manager="local",
            synchronous=False,
            echo=False,
        )
        wait_until(lambda: pid_file.is_file() and pid_file.read_text().strip() != "", 60, "pid")
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        assert submitted.wait() is False
    run = open_store().get_run(submitted.run_id)
    tags = run.data.tags
    assert run.info.status is RunStatus.FAILED
    assert tags[SystemTags.EXIT_REASON] == "code-error"
    assert tags[SystemTags.EXIT_SIGNAL] == "SIGKILL"
    assert tags[SystemTags.EXIT_CODE] in ("137", "-9")
    assert tags[SystemTags.EXIT_DETAIL].startswith("FAILED: JOB_ENTRYPOINT_COMMAND_ERROR: ")


def test_timeout_stops_the_ray_job_and_ends_the_run_timeout(
    home: Path, tmp_path: Path, ray_address: str
) -> None:
    """Ray has no time limit for a job: reprorun, following it, stops it past --timeout."""
    project = make_project(
        tmp_path / "p", 'entry_points:\n  main:\n    command: "echo started; sleep 120"\n'
    )
    began = time.monotonic()
    with bounded(ray_address, 90), pytest.raises(RunFailed) as excinfo:
        reprorun.projects.run(
            str(project),
            backend="ray",
            backend_config={"address": ray_address},
            env_manager="local",
            timeout=4,
            echo=False,
        )
    assert time.monotonic() - began < 60
    run = open_store().get_run(excinfo.value.run_id)
    tags = run.data.tags
    assert run.info.status is RunStatus.FAILED
    assert tags[SystemTags.EXIT_REASON] == "timeout"
    assert "--timeout 4 s passed" in tags[FAILURE_TAG]
    api = JobsApi(ray_address)
    job = tags[JOB_ID_TAG]
    wait_until(
        lambda: api.json_of(*api.request("GET", f"/api/jobs/{job}"), job)["status"] == "STOPPED",
        30,
        "Ray to stop the job",
    )
