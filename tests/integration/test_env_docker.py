"""`--env-manager docker` (MLflow's docker_env) against a real Docker engine.

Nothing is mocked: the engine is the one `../shared/engines/dockerd-up.sh` starts (CI does it,
see .ci/run) and the image is the local one `docker-image.sh` builds; nothing is pulled. These
tests are never skipped: without an engine the module's fixture fails and says what to start.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reprorun.tracking.store import open_store
from tests.conftest import make_project, reprorun_cli

IMAGE = "local/python:bookworm"
MISSING_IMAGE = "local/reprorun-test-no-such-image:never"
ENGINES = "/work/shared/engines"  # or ../shared/engines from the repository's parent

TRAIN = """
import os, sys
import reprorun

alpha = reprorun.param("alpha", 0.1)
reprorun.log_metric("score", alpha * 2, step=0)
reprorun.log_metric("score", alpha * 4, step=1)
reprorun.set_tag("stage", "in-container")
print("NEW_VAR=" + os.environ.get("NEW_VAR", "<unset>"))
print("HOST_VAR=" + os.environ.get("HOST_VAR", "<unset>"))
print("VOLUME=" + open("/data/in.txt").read().strip())
with open("/data/out.txt", "w") as out:
    out.write("written in the container\\n")
print("PID1=" + open("/proc/1/cmdline").read().split("\\0")[0])
print("CLIENT=" + os.path.dirname(os.path.dirname(reprorun.__file__)))
"""


def docker(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module", autouse=True)
def docker_engine() -> str:
    """The engine every test here talks to; fails (never skips) when there is none."""
    host = os.environ.get("DOCKER_HOST")
    if not host:
        pytest.fail(
            f"DOCKER_HOST is not set: these tests need a real Docker engine. Start it with "
            f"{ENGINES}/dockerd-up.sh, build the image with {ENGINES}/docker-image.sh, then "
            "export DOCKER_HOST=unix:///run/ci-docker/docker.sock (.ci/run does all three).",
            pytrace=False,
        )
    if shutil.which("docker") is None:
        pytest.fail(
            f"the docker command is not installed: run {ENGINES}/dockerd-up.sh.", pytrace=False
        )
    try:
        version = docker("version", "--format", "{{.Server.Version}}", timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"the Docker engine at DOCKER_HOST={host} did not answer in 20 s.", pytrace=False
        )
    if version.returncode != 0:
        pytest.fail(
            f"no Docker engine answers at DOCKER_HOST={host}: {version.stderr.strip().rstrip('.')}. Start "
            f"it with {ENGINES}/dockerd-up.sh.",
            pytrace=False,
        )
    if docker("image", "inspect", IMAGE).returncode != 0:
        pytest.fail(
            f"the engine at {host} has no image {IMAGE} (nothing can be pulled here): build it "
            f"with {ENGINES}/docker-image.sh.",
            pytrace=False,
        )
    return host


def all_runs(env: dict[str, str] | None = None) -> list[dict]:
    listing = reprorun_cli("runs", "list", "--json", env=env)
    assert listing.returncode == 0, listing.stderr
    return json.loads(listing.stdout)


def only_run(env: dict[str, str] | None = None) -> dict:
    runs = all_runs(env)
    assert len(runs) == 1, runs
    return runs[0]


def artifacts_of(run: dict) -> Path:
    uri = run["info"]["artifact_uri"]
    assert uri.startswith("file://"), uri
    return Path(uri[len("file://") :])


def docker_project(root: Path, command: str = "python3 train.py", **files: str) -> Path:
    """A project with the full docker_env: image, a volume, a set and a copied variable."""
    volume = root / "volume"
    volume.mkdir(parents=True)
    (volume / "in.txt").write_text("seen through the volume\n")
    mlproject = (
        "name: in-docker\n"
        "docker_env:\n"
        f"  image: {IMAGE}\n"
        f'  volumes: ["{volume}:/data"]\n'
        '  environment: [["NEW_VAR", "v"], "HOST_VAR"]\n'
        "entry_points:\n"
        "  main:\n"
        "    parameters:\n"
        "      alpha: {type: float, default: 0.5}\n"
        f"    command: {json.dumps(command)}\n"
    )
    return make_project(root / "project", mlproject, {"train.py": TRAIN, **files})


def container_names(run_id: str) -> list[str]:
    listing = docker("ps", "-a", "--filter", f"name=reprorun-{run_id}", "--format", "{{.Names}}")
    assert listing.returncode == 0, listing.stderr
    return listing.stdout.split()


@pytest.mark.parametrize(
    ("how", "host_var"),
    [(["--env-manager", "docker"], "from-host"), ([], None)],
    ids=["explicit-docker", "default-for-docker_env"],
)
def test_run_in_container_records_everything(
    home: Path, tmp_path: Path, how: list[str], host_var: str | None
) -> None:
    project = docker_project(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "HOST_VAR"}
    if host_var is not None:
        env["HOST_VAR"] = host_var
    result = reprorun_cli("run", str(project), "-P", "alpha=0.25", *how, env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "PID1=/sbin/docker-init" in out  # it ran in a container (docker run --init)
    assert "NEW_VAR=v" in out  # [NAME, value] from docker_env.environment
    # A bare name is copied from the host, and only when the host has it.
    assert f"HOST_VAR={host_var or '<unset>'}" in out
    assert "VOLUME=seen through the volume" in out  # docker_env.volumes mounted
    assert (tmp_path / "volume" / "out.txt").read_text() == "written in the container\n"
    assert "CLIENT=/opt/reprorun-client" in out  # reprorun's own client, not installed in image
    assert "Traceback" not in out + result.stderr

    run = only_run()
    assert run["info"]["status"] == "FINISHED"
    data = run["data"]
    assert data["params"] == {"alpha": "0.25"}
    assert data["metrics"] == {"score": 1.0}
    tags = data["tags"]
    assert tags["mlflow.project.env"] == "docker"
    assert tags["reprorun.env.image"] == IMAGE
    assert tags["reprorun.exitCode"] == "0"
    assert tags["stage"] == "in-container"
    image_id = docker("image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip()
    assert tags["reprorun.env.hash"] == image_id.removeprefix("sha256:")[:20]
    assert tags["reprorun.env.lock"] == "environment/requirements.lock"

    artifacts = artifacts_of(run)
    lock = (artifacts / "environment" / "requirements.lock").read_text()
    assert lock == f"# reprorun lock: docker image {IMAGE} {image_id}\n"
    assert "NEW_VAR=v" in (artifacts / "logs" / "run.log").read_text()

    history = open_store().get_metric_history(run["info"]["run_id"], "score")
    assert [(m.step, m.value) for m in history] == [(0, 0.5), (1, 1.0)]
    assert container_names(run["info"]["run_id"]) == []  # --rm: nothing left behind


def test_store_outside_home_is_reachable_from_the_container(home: Path, tmp_path: Path) -> None:
    project = docker_project(tmp_path)
    store = tmp_path / "elsewhere" / "store.db"
    store.parent.mkdir()
    uri = f"sqlite:///{store}"
    result = reprorun_cli("run", str(project), "--tracking-uri", uri, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    run = only_run({**os.environ, "REPRORUN_TRACKING_URI": uri})
    assert run["info"]["status"] == "FINISHED"
    assert run["data"]["metrics"] == {"score": 2.0}
    assert not (home / "store.db").exists()


def test_failing_command_in_container_marks_failed(home: Path, tmp_path: Path) -> None:
    project = docker_project(tmp_path, command="echo about to fail; exit 3")
    result = reprorun_cli("run", str(project), "--env-manager", "docker", timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "about to fail" in result.stdout
    assert "FAILED" in result.stderr
    run = only_run()
    assert run["info"]["status"] == "FAILED"
    assert run["data"]["tags"]["reprorun.exitCode"] == "3"
    assert run["data"]["tags"]["mlflow.project.env"] == "docker"
    assert container_names(run["info"]["run_id"]) == []


def test_sigterm_stops_the_container_and_marks_killed(home: Path, tmp_path: Path) -> None:
    project = docker_project(tmp_path, command="echo started; touch started.flag; exec sleep 300")
    flag = project / "started.flag"
    proc = subprocess.Popen(
        [sys.executable, "-m", "reprorun", "run", str(project), "--env-manager", "docker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run_id = None
    try:
        deadline = time.monotonic() + 60
        while not flag.exists():  # written by the container into the mounted project folder
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the container never started"
            time.sleep(0.05)
        run_id = only_run()["info"]["run_id"]
        assert container_names(run_id) == [f"reprorun-{run_id}"]  # the container is running
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signal.SIGTERM, stderr
        assert time.monotonic() - started < 20, "stopping took longer than the grace period"
        assert "KILLED" in stderr
        assert only_run()["info"]["status"] == "KILLED"
        deadline = time.monotonic() + 15  # the engine removes a --rm container right after
        while container_names(run_id):
            assert time.monotonic() < deadline, docker("ps", "-a").stdout
            time.sleep(0.2)
        running = docker("ps", "--format", "{{.Names}}").stdout.split()
        assert f"reprorun-{run_id}" not in running
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
        if run_id is not None:  # never leave this test's container behind
            docker("rm", "-f", f"reprorun-{run_id}")


def test_missing_image_is_exit_2_and_leaves_no_run(home: Path, tmp_path: Path) -> None:
    project = make_project(
        tmp_path / "p",
        f"docker_env:\n  image: {MISSING_IMAGE}\nentry_points:\n  main:\n    command: 'true'\n",
    )
    result = reprorun_cli("run", str(project), "--env-manager", "docker", timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"Docker image '{MISSING_IMAGE}' is not on this machine" in result.stderr
    assert "Traceback" not in result.stderr
    assert all_runs() == []


def test_env_manager_docker_needs_a_docker_env(home: Path, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", "entry_points:\n  main:\n    command: 'true'\n")
    result = reprorun_cli("run", str(project), "--env-manager", "docker", timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "needs a docker_env" in result.stderr
    assert all_runs() == []


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path: unix socket paths are limited to ~107 bytes."""
    folder = Path(tempfile.mkdtemp(prefix="rr-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    "kind",
    [
        "missing-socket",
        "stale-socket",
        "closed-tcp-port",
        pytest.param("silent-socket", marks=pytest.mark.slow),
    ],
)
def test_no_engine_answering_is_exit_2_and_leaves_no_run(
    home: Path, tmp_path: Path, short_dir: Path, kind: str
) -> None:
    project = docker_project(tmp_path)
    listener: socket.socket | None = None
    if kind == "missing-socket":
        host = f"unix://{short_dir / 'none.sock'}"
    elif kind == "closed-tcp-port":
        host = f"tcp://127.0.0.1:{_free_port()}"
    else:
        path = short_dir / "docker.sock"
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(path))
        if kind == "stale-socket":  # what a crashed engine leaves: the file, no listener
            listener.close()
            listener = None
        else:  # something accepts connections but never replies (a hung engine)
            listener.listen(16)
        host = f"unix://{path}"
    try:
        env = {**os.environ, "DOCKER_HOST": host}
        result = reprorun_cli("run", str(project), "--env-manager", "docker", env=env, timeout=90)
    finally:
        if listener is not None:
            listener.close()
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"No Docker engine answers at {host}" in result.stderr
    assert "Traceback" not in result.stderr
    assert all_runs() == []


def test_pythonpath_set_by_docker_env_keeps_the_reprorun_client(home: Path, tmp_path: Path) -> None:
    # A project that puts its own folder on PYTHONPATH must still be able to `import reprorun`:
    # the client's mount has to stay on the path next to the project's entries.
    root = tmp_path / "p"
    lib = root / "lib"  # inside the project folder, which the container sees at the same path
    lib.mkdir(parents=True)
    (lib / "mymod.py").write_text("X = 42\n")
    project = make_project(
        root,
        f"docker_env:\n  image: {IMAGE}\n"
        f'  environment: [["PYTHONPATH", "{lib}"]]\n'
        "entry_points:\n  main:\n    command: 'python3 use_both.py'\n",
        {"use_both.py": "import mymod, reprorun\nreprorun.log_metric('x', mymod.X)\n"},
    )
    result = reprorun_cli("run", str(project), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    run = only_run()
    assert run["info"]["status"] == "FINISHED"
    assert run["data"]["metrics"] == {"x": 42.0}


def test_a_path_parameter_given_a_url_is_read_in_the_container(home: Path, tmp_path: Path) -> None:
    """The file is downloaded on the host; the container reads it at the path it is given."""
    import threading
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    served = tmp_path / "served"
    served.mkdir()
    (served / "rows.csv").write_text("a,b\n1,2\n")

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    mlproject = (
        "name: url-in-docker\n"
        f"docker_env:\n  image: {IMAGE}\n"
        "entry_points:\n  main:\n    parameters:\n      data: path\n"
        '    command: "cat {data} && touch {data}.written || echo read-only"\n'
    )
    project = make_project(tmp_path / "project", mlproject)
    url = f"http://127.0.0.1:{server.server_address[1]}/rows.csv"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    try:
        result = reprorun_cli("run", str(project), "-P", f"data={url}", env=env, timeout=120)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "a,b\n1,2\n" in result.stdout
    assert "read-only" in result.stdout  # the container cannot change the downloads cache


def test_docker_args_limit_the_container_and_its_oom_kill_is_out_of_memory(
    home: Path, tmp_path: Path
) -> None:
    """MLflow's -A/--docker-args reach `docker run`; a container killed by the OOM killer at
    its memory limit ends the run with reason out-of-memory (the engine's oom event), and a
    rerun keeps the options."""
    grab = "python3 -c 'x = bytearray(400 * 1024 * 1024); print(len(x))'"
    project = docker_project(
        tmp_path,
        command=f"echo limit $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max); {grab}",
    )
    args = ("-A", "memory=64m", "--docker-args", "memory-swap=64m")
    result = reprorun_cli("run", str(project), *args, timeout=180)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"limit {64 * 1024 * 1024}" in result.stdout  # the container got the limit
    run = only_run()
    tags = run["data"]["tags"]
    assert run["info"]["status"] == "FAILED"
    assert tags["reprorun.exitReason"] == "out-of-memory", tags
    assert "OOM kill of container" in tags["reprorun.exitDetail"]
    assert json.loads(tags["reprorun.docker.args"]) == ["memory=64m", "memory-swap=64m"]
    assert container_names(run["info"]["run_id"]) == []
    # A rerun runs with the same options (and ends the same way).
    again = reprorun_cli("rerun", run["info"]["run_id"], timeout=180)
    assert again.returncode == 1, again.stdout + again.stderr
    assert f"limit {64 * 1024 * 1024}" in again.stdout
    # A command that fails on its own with 137 is not taken for an OOM kill.
    plain = docker_project(tmp_path / "plain", command="exit 137")
    ended = reprorun_cli("run", str(plain), *args, timeout=180)
    assert ended.returncode == 1, ended.stdout + ended.stderr
    (latest, *_rest) = all_runs()
    assert latest["data"]["tags"]["reprorun.exitReason"] == "code-error"


def test_docker_args_are_checked_before_anything_runs(home: Path, tmp_path: Path) -> None:
    project = docker_project(tmp_path)
    bad = reprorun_cli("run", str(project), "-A", "--privileged", timeout=60)
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert "expected NAME=VALUE or NAME" in bad.stderr
    local = make_project(tmp_path / "local", "entry_points:\n  main:\n    command: 'true'\n")
    refused = reprorun_cli("run", str(local), "-A", "memory=1g", timeout=60)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "apply to docker_env projects only" in refused.stderr
    assert all_runs() == []


def test_an_out_of_memory_container_is_retried_with_more_memory(home: Path, tmp_path: Path) -> None:
    """--retries with --retry-memory on a docker_env run: the first attempt is OOM-killed at
    its --docker-args limit, the retry gets the limit raised and finishes, a linked run."""
    grab = "python3 -c 'x = bytearray(150 * 1024 * 1024); print(\"got\", len(x))'"
    project = docker_project(tmp_path, command=grab)
    result = reprorun_cli(
        "run",
        str(project),
        *("-A", "memory=64m", "-A", "memory-swap=64m"),
        *("--retries", "1", "--retry-on", "out-of-memory", "--retry-memory", "x4"),
        *("--retry-backoff", "0"),
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "docker memory 64m -> 256m, docker memory-swap 64m -> 256m" in result.stderr
    assert "got 157286400" in result.stdout
    (second,) = all_runs()  # runs list shows the attempts as one line: the last
    first = open_store().get_run(second["data"]["tags"]["reprorun.attemptOf"])
    assert first.data.tags["reprorun.exitReason"] == "out-of-memory"
    assert second["info"]["status"] == "FINISHED"
    assert json.loads(second["data"]["tags"]["reprorun.docker.args"]) == [
        "memory=256m",
        "memory-swap=256m",
    ]
