"""`--backend kubernetes` end to end, through `reprorun.projects.run` and the CLI.

No Kubernetes cluster can run here, so the cluster is a fake API server on 127.0.0.1 that
answers the few endpoints the backend calls (create, read and delete a Job; list a Job's pods;
read a pod's log) and plays a scripted life for each Job (pending, running, succeeded...).
The backend talks to it through the real `kubernetes` client, configured by a temporary
kubeconfig (KUBECONFIG) whose `fake` context points at it. `docker` is a fake on PATH that
records its calls (no engine or registry either): the docker_env environment and the image
build/push go through it, except in the last test, which builds the image with the real
Docker engine CI starts (../shared/engines/dockerd-up.sh) and runs it as the Job's pod would.
What is asserted is what a cluster would receive (the posted Job,
the delete with its propagation policy) and what the run records from its answers.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

import reprorun.projects
from reprorun.backends.base import CONFIG_TAG, FAILURE_TAG, JOB_ID_TAG
from reprorun.backends.heartbeat import wrapped
from reprorun.backends.kubernetes.job import KubernetesJob
from reprorun.errors import ExecutionError, RunFailed, UserInputError
from reprorun.tracking.entities import RunStatus, SystemTags
from reprorun.tracking.store import open_store
from tests.conftest import make_project, reprorun_cli
from tests.integration.server_proc import ServerProcess, server_process
from tests.unit.test_kubernetes_backend import MLFLOW_TEMPLATE, FakeDocker, write_kubeconfig

BASE_IMAGE = "local/python:bookworm"
REPOSITORY = "registry.example.com/team/k8s-demo"
TRACKING = "http://tracking.example:5000"
TOKEN = "k8s-test-token"
PARTIAL_LOG = b"epoch 1\n"
FULL_LOG = b"epoch 1\nepoch 2\nscore=0.93 \xe2\x9c\x93\n"

# A Job's life, one step per read of the Job: its status, its pod's phase and container state.
PHASES: dict[str, tuple[dict[str, Any], str, dict[str, Any]]] = {
    "pending": (
        {"active": 1, "ready": 0},
        "Pending",
        {"waiting": {"reason": "ContainerCreating"}},
    ),
    "running": ({"active": 1, "ready": 1}, "Running", {"running": {}}),
    "succeeded": (
        {
            "succeeded": 1,
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True"},
                {"type": "Complete", "status": "True"},
            ],
        },
        "Succeeded",
        {"terminated": {"exitCode": 0, "reason": "Completed"}},
    ),
    "failed": (
        {
            "failed": 1,
            "conditions": [
                {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded"},
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                },
            ],
        },
        "Failed",
        {"terminated": {"exitCode": 3, "reason": "Error"}},
    ),
}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    auth: str | None


class FakeCluster:
    """A Kubernetes API server for the calls the backend makes, on 127.0.0.1."""

    def __init__(self, phases: tuple[str, ...] = ("pending", "running", "succeeded")):
        self.phases = phases
        self.requests: list[Request] = []
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.reads: dict[tuple[str, str], int] = {}
        self.refuse: tuple[int, str, str] | None = None  # the answer to every create
        self.lock = threading.Lock()
        cluster = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                cluster.handle(self, "GET")

            def do_POST(self) -> None:
                cluster.handle(self, "POST")

            def do_DELETE(self) -> None:
                cluster.handle(self, "DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    # --- what the test looks at --------------------------------------------------------

    def posted(self) -> list[Any]:
        """The jobs created (not the dry runs)."""
        return [r.body for r in self.calls("POST") if "dryRun" not in r.query]

    def calls(self, method: str) -> list[Request]:
        return [r for r in self.requests if r.method == method]

    def forget(self, namespace: str, name: str) -> None:
        """The job vanishes behind reprorun's back (kubectl delete, the TTL controller)."""
        with self.lock:
            del self.jobs[(namespace, name)]

    # --- the API -------------------------------------------------------------------------

    def phase(self, key: tuple[str, str]) -> str:
        return self.phases[min(max(self.reads.get(key, 0) - 1, 0), len(self.phases) - 1)]

    def handle(self, http: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(http.path)
        length = int(http.headers.get("Content-Length") or 0)
        body = json.loads(http.rfile.read(length)) if length else None
        with self.lock:
            self.requests.append(
                Request(method, url.path, parse_qs(url.query), body, http.headers["Authorization"])
            )
            code, answer = self.answer(method, url.path.strip("/").split("/"), url.query, body)
        data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        http.send_response(code)
        http.send_header(
            "Content-Type", "text/plain" if isinstance(answer, bytes) else "application/json"
        )
        http.send_header("Content-Length", str(len(data)))
        http.end_headers()
        http.wfile.write(data)

    def answer(
        self, method: str, parts: list[str], query: str, body: Any
    ) -> tuple[int, dict[str, Any] | bytes]:
        # /apis/batch/v1/namespaces/{ns}/jobs[/{name}]
        if parts[:3] == ["apis", "batch", "v1"] and len(parts) >= 6 and parts[5] == "jobs":
            key = (parts[4], parts[6] if len(parts) > 6 else body["metadata"]["name"])
            if method == "POST":
                if self.refuse:
                    return status(*self.refuse)
                if "dryRun=All" in query:
                    return 201, body
                if key in self.jobs:
                    return status(409, "AlreadyExists", f'jobs.batch "{key[1]}" already exists')
                self.jobs[key] = body
                return 201, body
            if key not in self.jobs:
                return status(404, "NotFound", f'jobs.batch "{key[1]}" not found')
            if method == "DELETE":
                del self.jobs[key]  # Background propagation: the job goes now, its pods after
                return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
            self.reads[key] = self.reads.get(key, 0) + 1
            job_status, _, _ = PHASES[self.phase(key)]
            return 200, {**self.jobs[key], "status": job_status}
        # /api/v1/namespaces/{ns}/pods[/{pod}/log]
        if parts[:2] == ["api", "v1"] and len(parts) >= 5 and parts[4] == "pods":
            namespace = parts[3]
            if len(parts) == 5:
                selector = parse_qs(query)["labelSelector"][0]
                name = selector.removeprefix("job-name=")
                key = (namespace, name)
                pods = [self.pod(key)] if key in self.jobs else []
                return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": pods}
            key = (namespace, parts[5].rsplit("-", 1)[0])
            if key not in self.jobs:
                return status(404, "NotFound", f'pods "{parts[5]}" not found')
            phase = self.phase(key)
            if phase == "pending":
                return status(400, "BadRequest", "container is waiting to start")
            return 200, PARTIAL_LOG if phase == "running" else FULL_LOG
        return status(404, "NotFound", f"the fake cluster has no {'/'.join(parts)}")

    def pod(self, key: tuple[str, str]) -> dict[str, Any]:
        _, pod_phase, state = PHASES[self.phase(key)]
        container = self.jobs[key]["spec"]["template"]["spec"]["containers"][0]
        return {
            "metadata": {
                "name": f"{key[1]}-x7k2p",
                "namespace": key[0],
                "labels": {"job-name": key[1]},
                "creationTimestamp": "2024-05-01T12:00:00Z",
            },
            "spec": {"containers": [{"name": container["name"], "image": container["image"]}]},
            "status": {
                "phase": pod_phase,
                "containerStatuses": [
                    {
                        "name": container["name"],
                        "image": container["image"],
                        "imageID": "",
                        "ready": pod_phase == "Running",
                        "restartCount": 0,
                        "state": state,
                    }
                ],
            },
        }


def status(code: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
    return code, {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    fake = FakeCluster()
    yield fake
    fake.stop()


@pytest.fixture
def docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeDocker:
    return FakeDocker(tmp_path / "fake-docker", monkeypatch)


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(KubernetesJob, "poll_seconds", 0.05)
    monkeypatch.delenv("KUBE_MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cluster: FakeCluster) -> Path:
    """The kubeconfig (KUBECONFIG) and a backend config file next to MLflow's template."""
    write_kubeconfig(tmp_path / "kubeconfig", cluster.url, other=f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "kubernetes_job_template.yaml").write_text(MLFLOW_TEMPLATE)
    path = conf / "kubernetes_config.json"
    path.write_text(
        json.dumps(
            {
                "kube-context": "fake",
                "repository-uri": REPOSITORY,
                "kube-job-template-path": "kubernetes_job_template.yaml",
                "tracking_uri": TRACKING,
                "env_vars": {"MODE": "k8s"},
            }
        )
    )
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def project(root: Path) -> Path:
    return make_project(
        root,
        "name: K8s_Demo\n"
        f"docker_env:\n  image: {BASE_IMAGE}\n"
        "entry_points:\n"
        "  main:\n"
        "    parameters:\n"
        "      alpha: {type: float, default: 0.5}\n"
        "    command: 'python3 train.py --alpha {alpha}'\n",
        {"train.py": "print('training')\n"},
    )


def run_tags(run_id: str) -> dict[str, str]:
    return open_store().get_run(run_id).data.tags


def stored_log(run_id: str) -> bytes:
    uri = open_store().get_run(run_id).info.artifact_uri
    return (Path(uri.removeprefix("file://")) / "logs" / "run.log").read_bytes()


# --- tests -----------------------------------------------------------------------------------


def test_synchronous_run_builds_submits_and_follows_the_job(
    tmp_path: Path, cluster: FakeCluster, docker: FakeDocker, setup: Path
) -> None:
    chunks: list[bytes] = []
    submitted = reprorun.projects.run(
        str(project(tmp_path / "demo")),
        parameters={"alpha": 0.7},
        backend="kubernetes",
        backend_config=setup,
        echo=chunks.append,
    )
    run_id = submitted.run_id
    name = f"k8s-demo-{run_id}"
    tag = f"{REPOSITORY}:{run_id}"
    digest = docker.digest("pushed " + tag)
    assert submitted.get_status() is RunStatus.FINISHED

    # The image: the docker_env image with the project, pushed, then pinned by its digest.
    argvs = docker.argvs()
    assert argvs[-3:] == [
        ["build", "--tag", tag, argvs[-3][-1]],
        ["push", tag],
        ["image", "inspect", "--format", "{{json .RepoDigests}}", tag],
    ]
    build = docker.calls()[-3]
    assert build["dockerfile"].splitlines()[1] == f"FROM {BASE_IMAGE}"
    assert {"project/MLproject", "project/train.py"} <= set(build["files"])

    # The Job: MLflow's template filled in, in the template's namespace, through context fake.
    (posted,) = cluster.posted()
    dry_run, create = cluster.calls("POST")  # the API checked the job before the build
    assert dry_run.path == create.path == "/apis/batch/v1/namespaces/mlflow/jobs"
    assert dry_run.query == {"dryRun": ["All"], "fieldValidation": ["Strict"]}
    assert create.query == {"fieldValidation": ["Strict"]}
    image = dry_run.body["spec"]["template"]["spec"]["containers"][0].pop("image")
    assert image == tag
    assert dry_run.body == {
        **posted,
        "spec": {**posted["spec"], "template": dry_run.body["spec"]["template"]},
    }
    assert {r.auth for r in cluster.requests} == {f"Bearer {TOKEN}"}
    assert posted["metadata"] == {"name": name, "namespace": "mlflow"}
    assert posted["spec"]["backoffLimit"] == 0 and posted["spec"]["ttlSecondsAfterFinished"] == 100
    pod = posted["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["name"] == "k8s-demo"
    assert container["image"] == f"{tag}@{digest}"
    # Under the heartbeat wrapper (issue 18), which runs the command alone without the client.
    # (System metrics are on by default: the wrapper samples every 10 s.)
    command = wrapped("python3 train.py --alpha 0.7", 15, metrics=10)
    assert container["command"] == ["bash", "-c", command]
    assert container["workingDir"] == "/mlflow/projects/code"
    assert container["resources"] == {
        "limits": {"memory": "512Mi"},
        "requests": {"memory": "256Mi"},
    }
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MODE"] == "k8s"  # the config's env_vars
    assert env["REPRORUN_RUN_ID"] == env["MLFLOW_RUN_ID"] == run_id
    assert env["REPRORUN_TRACKING_URI"] == env["MLFLOW_TRACKING_URI"] == TRACKING
    assert env["MLFLOW_EXPERIMENT_ID"] == env["REPRORUN_EXPERIMENT_ID"]
    assert not any(k in env for k in ("PATH", "HOME"))  # nothing of this machine's

    # The run: tags to find the job again, the image, the job's log and its exit code.
    tags = run_tags(run_id)
    assert tags[JOB_ID_TAG] == f"mlflow/{name}"
    assert tags[SystemTags.BACKEND] == "kubernetes" and tags[SystemTags.ENV] == "docker"
    assert tags["mlflow.docker.image.uri"] == tag
    assert tags["mlflow.docker.image.id"] == digest
    assert tags[SystemTags.EXIT_CODE] == "0"
    assert tags[SystemTags.EXIT_REASON] == "succeeded"
    assert "activeDeadlineSeconds" not in posted["spec"]  # no --timeout, none in the template
    assert json.loads(tags[CONFIG_TAG])["kube-context"] == "fake"
    assert stored_log(run_id) == FULL_LOG
    assert b"".join(chunks) == FULL_LOG  # echoed as the job ran
    artifacts = Path(open_store().get_run(run_id).info.artifact_uri.removeprefix("file://"))
    assert yaml.safe_load((artifacts / "kubernetes" / "job.yaml").read_text()) == posted
    # Following: the job, its pods and its pods' log; never a delete.
    assert cluster.calls("DELETE") == []
    assert any(
        r.path == f"/api/v1/namespaces/mlflow/pods/{name}-x7k2p/log" for r in cluster.requests
    )
    pods = [r for r in cluster.requests if r.path == "/api/v1/namespaces/mlflow/pods"]
    assert pods and all(r.query["labelSelector"] == [f"job-name={name}"] for r in pods)


def test_timeout_becomes_the_jobs_active_deadline(
    tmp_path: Path, cluster: FakeCluster, docker: FakeDocker, setup: Path
) -> None:
    reprorun.projects.run(
        str(project(tmp_path / "demo")),
        backend="kubernetes",
        backend_config=setup,
        synchronous=False,
        timeout=90.5,
        echo=False,
    )
    (posted,) = cluster.posted()
    assert posted["spec"]["activeDeadlineSeconds"] == 91  # whole seconds, rounded up
    dry_run = cluster.calls("POST")[0]
    assert dry_run.body["spec"]["activeDeadlineSeconds"] == 91


def test_asynchronous_run_goes_scheduled_running_finished(
    tmp_path: Path, cluster: FakeCluster, docker: FakeDocker, setup: Path
) -> None:
    submitted = reprorun.projects.run(
        str(project(tmp_path / "demo")),
        backend="kubernetes",
        backend_config=setup,
        synchronous=False,
        echo=False,
    )
    store = open_store()
    # Created, not yet looked at: the job waits for a node.
    assert store.get_run(submitted.run_id).info.status is RunStatus.SCHEDULED
    seen = []
    for _ in range(3):
        seen.append(submitted.get_status())
        seen.append(store.get_run(submitted.run_id).info.status)
    assert seen == [
        RunStatus.SCHEDULED,
        RunStatus.SCHEDULED,
        RunStatus.RUNNING,
        RunStatus.RUNNING,
        RunStatus.FINISHED,
        RunStatus.FINISHED,
    ]
    assert submitted.logs() == FULL_LOG
    assert submitted.wait() is True
    assert store.get_run(submitted.run_id).info.end_time is not None


def test_failed_job_fails_the_run_with_the_reason(
    tmp_path: Path, cluster: FakeCluster, docker: FakeDocker, setup: Path
) -> None:
    cluster.phases = ("running", "failed")
    with pytest.raises(RunFailed) as err:
        reprorun.projects.run(
            str(project(tmp_path / "demo")), backend="kubernetes", backend_config=setup, echo=False
        )
    run_id = err.value.run_id
    run = open_store().get_run(run_id)
    assert run.info.status is RunStatus.FAILED
    assert run.data.tags[FAILURE_TAG] == (
        f"Kubernetes job mlflow/k8s-demo-{run_id} failed: BackoffLimitExceeded (Job has reached "
        f"the specified backoff limit); pod k8s-demo-{run_id}-x7k2p: exit code 3 (Error)"
    )
    assert run.data.tags[SystemTags.EXIT_CODE] == "3"
    assert stored_log(run_id) == FULL_LOG


def test_cancel_deletes_the_job_and_keeps_its_log(
    tmp_path: Path, cluster: FakeCluster, docker: FakeDocker, setup: Path
) -> None:
    cluster.phases = ("running",)
    submitted = reprorun.projects.run(
        str(project(tmp_path / "demo")),
        backend="kubernetes",
        backend_config=setup,
        synchronous=False,
        echo=False,
    )
    assert submitted.get_status() is RunStatus.RUNNING
    started = time.monotonic()
    submitted.cancel()
    assert time.monotonic() - started < 10
    (delete,) = cluster.calls("DELETE")
    assert delete.path == f"/apis/batch/v1/namespaces/mlflow/jobs/k8s-demo-{submitted.run_id}"
    assert delete.query == {"propagationPolicy": ["Background"]}
    run = open_store().get_run(submitted.run_id)
    assert run.info.status is RunStatus.KILLED
    assert "stopped by reprorun" in run.data.tags[FAILURE_TAG]
    assert stored_log(submitted.run_id) == PARTIAL_LOG  # read before the pods went
    assert submitted.get_status() is RunStatus.KILLED and submitted.wait() is False


def test_job_that_vanished_fails_the_run(
    tmp_path: Path, cluster: FakeCluster, docker: FakeDocker, setup: Path
) -> None:
    cluster.phases = ("running",)
    submitted = reprorun.projects.run(
        str(project(tmp_path / "demo")),
        backend="kubernetes",
        backend_config=setup,
        synchronous=False,
        echo=False,
    )
    assert submitted.get_status() is RunStatus.RUNNING
    cluster.forget("mlflow", f"k8s-demo-{submitted.run_id}")
    assert submitted.get_status() is RunStatus.FAILED
    reason = run_tags(submitted.run_id)[FAILURE_TAG]
    assert reason.startswith(f"Kubernetes job mlflow/k8s-demo-{submitted.run_id} no longer exists")


def test_unreachable_api_while_following_leaves_the_run_as_it_is(
    tmp_path: Path, cluster: FakeCluster, docker: FakeDocker, setup: Path
) -> None:
    cluster.phases = ("running",)
    submitted = reprorun.projects.run(
        str(project(tmp_path / "demo")),
        backend="kubernetes",
        backend_config=setup,
        synchronous=False,
        echo=False,
    )
    assert submitted.get_status() is RunStatus.RUNNING
    cluster.stop()
    with pytest.raises(ExecutionError, match=f"Cannot reach the Kubernetes API at {cluster.url}"):
        submitted.get_status()
    assert open_store().get_run(submitted.run_id).info.status is RunStatus.RUNNING


def test_unreachable_cluster_at_submission_fails_the_run(
    tmp_path: Path, cluster: FakeCluster, docker: FakeDocker, setup: Path
) -> None:
    options = json.loads(setup.read_text())
    options["kube-context"] = "elsewhere"  # a server nobody listens on
    setup.write_text(json.dumps(options))
    with pytest.raises(ExecutionError) as err:
        reprorun.projects.run(
            str(project(tmp_path / "demo")), backend="kubernetes", backend_config=setup, echo=False
        )
    assert "Cannot reach the Kubernetes API at http://127.0.0.1:" in str(err.value)
    assert "(kube-context elsewhere) to create job k8s-demo-" in str(err.value)
    assert "(a dry run, before building the image)" in str(err.value)
    (run,) = open_store().search_runs(["0"])
    assert run.info.status is RunStatus.FAILED
    assert "Cannot reach the Kubernetes API" in run.data.tags[FAILURE_TAG]
    assert cluster.requests == []
    assert not any(argv[0] == "build" for argv in docker.argvs())


def test_job_the_api_refuses_fails_the_run_before_the_build(
    tmp_path: Path, cluster: FakeCluster, docker: FakeDocker, setup: Path
) -> None:
    cluster.refuse = (
        403,
        "Forbidden",
        'jobs.batch is forbidden: User "tester" cannot create resource "jobs" in API group '
        '"batch" in the namespace "mlflow"',
    )
    with pytest.raises(ExecutionError) as err:
        reprorun.projects.run(
            str(project(tmp_path / "demo")), backend="kubernetes", backend_config=setup, echo=False
        )
    (run,) = open_store().search_runs(["0"])
    assert run.data.tags[FAILURE_TAG] == f"ExecutionError: {err.value}"
    assert str(err.value) == (
        f"The Kubernetes API at {cluster.url} (kube-context fake) refused to create job "
        f"k8s-demo-{run.info.run_id} in namespace mlflow (a dry run, before building the image): "
        '403 Forbidden: jobs.batch is forbidden: User "tester" cannot create resource "jobs" in '
        'API group "batch" in the namespace "mlflow"'
    )
    assert run.info.status is RunStatus.FAILED
    assert not any(argv[0] == "build" for argv in docker.argvs())


def test_refused_before_any_run_exists(
    tmp_path: Path,
    cluster: FakeCluster,
    docker: FakeDocker,
    setup: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    demo = str(project(tmp_path / "demo"))
    with pytest.raises(UserInputError, match=r"--env-manager docker .*not local"):
        reprorun.projects.run(demo, backend="kubernetes", backend_config=setup, env_manager="local")
    options = json.loads(setup.read_text())
    del options["tracking_uri"]
    options["kube-job-template-path"] = str(setup.parent / "kubernetes_job_template.yaml")
    with pytest.raises(UserInputError, match="cannot open this run's store"):
        reprorun.projects.run(demo, backend="kubernetes", backend_config=options)
    with pytest.raises(
        UserInputError, match="'push' of the kubernetes backend must be true or false"
    ):
        reprorun.projects.run(demo, backend="kubernetes", backend_config={**options, "push": "no"})
    assert open_store().search_runs(["0"]) == []
    assert cluster.requests == [] and docker.argvs() == []
    # MLflow's KUBE_MLFLOW_TRACKING_URI gives the job its tracking URI as well
    monkeypatch.setenv("KUBE_MLFLOW_TRACKING_URI", "http://from-env:5000")
    submitted = reprorun.projects.run(
        demo, backend="kubernetes", backend_config=options, synchronous=False, echo=False
    )
    env = cluster.posted()[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://from-env:5000"} in env
    assert submitted.wait() is True


def test_git_subdirectory_ships_the_whole_tree_and_runs_in_the_subdirectory(
    tmp_path: Path, cluster: FakeCluster, docker: FakeDocker, setup: Path
) -> None:
    repo = tmp_path / "repo"
    project(repo / "sub")
    (repo / "shared.txt").write_text("used by the project from above its folder\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@e"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    submitted = reprorun.projects.run(
        f"file://{repo}#sub", backend="kubernetes", backend_config=setup, echo=False
    )
    assert submitted.get_status() is RunStatus.FINISHED
    container = cluster.posted()[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["workingDir"] == "/mlflow/projects/code/sub"
    files = docker.calls()[-3]["files"]
    assert {"project/shared.txt", "project/sub/MLproject", "project/sub/train.py"} <= set(files)
    assert not any(f.startswith("project/.git") for f in files)


@pytest.mark.slow  # five reprorun processes, each importing the kubernetes client
def test_cli_run_then_runs_status_logs_and_kill(
    tmp_path: Path, cluster: FakeCluster, docker: FakeDocker, setup: Path
) -> None:
    demo = project(tmp_path / "demo")
    done = reprorun_cli(
        "run", str(demo), "--backend", "kubernetes", "--backend-config", str(setup), timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "score=0.93" in done.stdout
    (finished,) = json.loads(reprorun_cli("runs", "list", "--json").stdout)
    status = reprorun_cli("runs", "status", finished["info"]["run_id"], "--json")
    assert status.returncode == 0, status.stderr
    facts = json.loads(status.stdout)
    assert facts["status"] == "FINISHED" and facts["backend"] == "kubernetes"
    assert facts["job_id"] == f"mlflow/k8s-demo-{finished['info']['run_id']}"

    # A job submitted by another process, followed and stopped from the CLI (attach).
    cluster.phases = ("running",)
    submitted = reprorun.projects.run(
        str(demo), backend="kubernetes", backend_config=setup, synchronous=False, echo=False
    )
    logs = reprorun_cli("runs", "logs", submitted.run_id)
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout.encode() == PARTIAL_LOG
    killed = reprorun_cli("runs", "kill", submitted.run_id)
    assert killed.returncode == 0, killed.stderr
    assert f"Run {submitted.run_id} KILLED." in killed.stdout
    (delete,) = cluster.calls("DELETE")
    assert delete.query == {"propagationPolicy": ["Background"]}
    assert open_store().get_run(submitted.run_id).info.status is RunStatus.KILLED
    assert stored_log(submitted.run_id) == PARTIAL_LOG
    assert os.environ["KUBECONFIG"] == str(tmp_path / "kubeconfig")


ENGINES = "/work/shared/engines"  # or ../shared/engines next to the clone (see .ci/run)

TRAIN_IN_IMAGE = """
import os, sys
import reprorun

print("cwd=" + os.getcwd())
print("args=" + " ".join(sys.argv[1:]))
print("run=" + os.environ["REPRORUN_RUN_ID"])
print("client=" + os.path.dirname(os.path.dirname(reprorun.__file__)))
print("data=" + open("data.txt").read().strip())
reprorun.log_metric("loss", 0.25)  # into the tracking server, through the shipped client
"""


def run_docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def real_docker() -> str:
    """The Docker engine CI starts, with its local base image; fails (never skips) without."""
    host = os.environ.get("DOCKER_HOST")
    if not host:
        pytest.fail(
            f"DOCKER_HOST is not set: this test builds a real image. Start the engine with "
            f"{ENGINES}/dockerd-up.sh, build the image with {ENGINES}/docker-image.sh, then "
            "export DOCKER_HOST=unix:///run/ci-docker/docker.sock (.ci/run does all three).",
            pytrace=False,
        )
    try:
        version = run_docker("version", "--format", "{{.Server.Version}}", timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(
            f"the Docker engine at DOCKER_HOST={host} does not answer: {exc}", pytrace=False
        )
    if version.returncode != 0:
        pytest.fail(
            f"no Docker engine answers at DOCKER_HOST={host}: {version.stderr.strip()}. Start "
            f"it with {ENGINES}/dockerd-up.sh.",
            pytrace=False,
        )
    if run_docker("image", "inspect", BASE_IMAGE).returncode != 0:
        pytest.fail(
            f"the engine at {host} has no image {BASE_IMAGE} (nothing is pulled here): build it "
            f"with {ENGINES}/docker-image.sh.",
            pytrace=False,
        )
    return host


def kubelet(text: str) -> str:
    """What Kubernetes passes on of a manifest string without $(VAR) references."""
    return text.replace("$$", "$")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A real tracking server the job's container reaches (it shares this host's network)."""
    with server_process(tmp_path / "server") as started:
        yield started


def test_real_docker_build_makes_an_image_that_runs_the_job(
    tmp_path: Path, cluster: FakeCluster, real_docker: str, setup: Path, server: ServerProcess
) -> None:
    options = json.loads(setup.read_text())
    options["push"] = False  # no registry here: the pod would run this engine's image
    options["tracking_uri"] = server.url  # the container shares this host's network
    setup.write_text(json.dumps(options))
    demo = project(tmp_path / "demo")
    (demo / "train.py").write_text(TRAIN_IN_IMAGE)
    (demo / "data.txt").write_text("shipped with the project\n")
    started = time.monotonic()
    submitted = reprorun.projects.run(
        str(demo),
        parameters={"alpha": 0.25},
        backend="kubernetes",
        backend_config=setup,
        tracking_uri=server.url,
        synchronous=False,
        echo=False,
    )
    submit_seconds = time.monotonic() - started
    tag = f"{REPOSITORY}:{submitted.run_id}"
    store = open_store(server.url)
    try:
        (posted,) = cluster.posted()
        (container,) = posted["spec"]["template"]["spec"]["containers"]
        assert container["image"] == tag
        image_id = run_docker("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()
        assert store.get_run(submitted.run_id).data.tags["mlflow.docker.image.id"] == image_id
        # The image's Python has no reprorun of its own: only the client shipped in it.
        bare = run_docker(
            "run", "--rm", "-e", "PYTHONPATH=", tag, "python3", "-c", "import reprorun"
        )
        assert "No module named 'reprorun'" in bare.stderr
        # What the pod does with that container: command, folder, variables, nothing else
        # (Kubernetes turns the manifest's "$$" into "$" in command and env values).
        argv = ["run", "--rm", "--network", "host", "-w", container["workingDir"]]
        for var in container["env"]:
            argv += ["-e", f"{var['name']}={kubelet(var['value'])}"]
        command = [kubelet(part) for part in container["command"]]
        argv += ["--entrypoint", command[0], tag, *command[1:]]
        ran = run_docker(*argv)
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.splitlines() == [
            "cwd=/mlflow/projects/code",
            "args=--alpha 0.25",
            f"run={submitted.run_id}",
            "client=/opt/reprorun-client",
            "data=shipped with the project",
        ]
        assert submitted.wait() is True
        assert store.get_run(submitted.run_id).data.metrics["loss"] == 0.25
    finally:
        run_docker("rmi", "--force", tag)
    assert submit_seconds < 600
