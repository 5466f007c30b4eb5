"""The kubernetes backend's pure parts: options, the Job manifest, the image, the status.

No cluster runs here: manifests are compared with what MLflow's template must become, the
status mapping is fed the client's own model objects (V1Job, V1Pod), and the docker commands
run against a fake `docker` on PATH that records them. tests/integration/ drives submission,
following and cancelling against a fake API server through the real kubernetes client.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import stat
import sys
from pathlib import Path
from typing import Any

import kubernetes.client as k8s
import pytest
import yaml

from reprorun.backends.job import JobState
from reprorun.backends.kubernetes.backend import KubernetesBackend, with_deadline
from reprorun.backends.kubernetes.job import job_state
from reprorun.backends.kubernetes.manifest import dns_label, job_manifest, job_name
from reprorun.backends.kubernetes.options import KubernetesBackendConfig
from reprorun.backends.registry import get_backend
from reprorun.envs.image import (
    Image,
    build_argv,
    build_image,
    dockerfile,
    image_tag,
    inspect_argv,
    push_argv,
    repo_digest,
    write_build_context,
)
from reprorun.errors import ExecutionError, UserInputError
from reprorun.tracking.entities import ExitReason, RunStatus, SystemTags
from tests.conftest import REPO_ROOT

DOCS = REPO_ROOT / "docs" / "backends"
RUN_ID = "0123456789abcdef0123456789abcdef"

# MLflow's example Job template, as its documentation ("Run an MLflow Project on Kubernetes")
# shows it, placeholder strings and all.
MLFLOW_TEMPLATE = """\
apiVersion: batch/v1
kind: Job
metadata:
  name: "{replaced with MLflow Project name}"
  namespace: mlflow
spec:
  ttlSecondsAfterFinished: 100
  backoffLimit: 0
  template:
    spec:
      containers:
      - name: "{replaced with MLflow Project name}"
        image: "{replaced with URI of Docker image created during Project execution}"
        command: ["{replaced with MLflow Project entry point command}"]
        env: ["{appended with MLFLOW_TRACKING_URI, MLFLOW_RUN_ID and MLFLOW_EXPERIMENT_ID}"]
        resources:
          limits:
            memory: 512Mi
          requests:
            memory: 256Mi
      restartPolicy: Never
"""


# --- helpers shared with tests/integration/test_kubernetes_backend.py ----------------------


def write_kubeconfig(path: Path, server: str, *, other: str = "http://127.0.0.1:9") -> Path:
    """A kubeconfig whose context ``fake`` reaches ``server`` (namespace from-context) and
    whose current context ``elsewhere`` does not: using ``fake`` proves kube-context works."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "fake", "cluster": {"server": server}},
                    {"name": "elsewhere", "cluster": {"server": other}},
                ],
                "users": [{"name": "tester", "user": {"token": "k8s-test-token"}}],
                "contexts": [
                    {
                        "name": "fake",
                        "context": {
                            "cluster": "fake",
                            "user": "tester",
                            "namespace": "from-context",
                        },
                    },
                    {"name": "elsewhere", "context": {"cluster": "elsewhere", "user": "tester"}},
                ],
                "current-context": "elsewhere",
            }
        )
    )
    return path


FAKE_DOCKER = r'''#!{python}
"""A stand-in for the docker command: records each call, answers like docker 20.10."""
import hashlib, json, os, sys
from pathlib import Path

args = sys.argv[1:]
record = {{"argv": args}}
fail = os.environ.get("FAKE_DOCKER_FAIL", "")

def digest(text):
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

if args[:1] == ["build"]:
    context = Path(args[-1])
    record["dockerfile"] = (context / "Dockerfile").read_text()
    record["files"] = sorted(
        str(p.relative_to(context)) for p in context.rglob("*") if p.is_file()
    )
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(record) + "\n")
if fail and args[:1] == [fail]:
    sys.stderr.write("denied: requested access to the resource is denied\n")
    sys.exit(1)
if args[:1] == ["version"]:
    print("20.10.24")
elif args[:2] == ["image", "inspect"]:
    fmt, image = args[3], args[4]
    if fmt == "{{{{.Id}}}}":
        print(digest("id " + image))
    else:
        repo = image.rsplit(":", 1)[0]
        print(json.dumps([repo + "@" + digest("pushed " + image)]))
elif args[:1] == ["build"]:
    print("Successfully built 0123456789ab")
elif args[:1] == ["push"]:
    print(args[1].rsplit(":", 1)[1] + ": digest: " + digest("pushed " + args[1]) + " size: 1234")
'''


class FakeDocker:
    """`docker` on PATH for this test: a script that records its calls in a log."""

    def __init__(self, folder: Path, monkeypatch: pytest.MonkeyPatch):
        folder.mkdir(parents=True, exist_ok=True)
        script = folder / "docker"
        script.write_text(FAKE_DOCKER.format(python=sys.executable))
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
        self.log = folder / "calls.jsonl"
        self.log.touch()
        self.folder = folder
        monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("FAKE_DOCKER_LOG", str(self.log))

    def calls(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def argvs(self) -> list[list[str]]:
        return [c["argv"] for c in self.calls()]

    @staticmethod
    def digest(text: str) -> str:
        import hashlib

        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeDocker:
    return FakeDocker(tmp_path / "fake-docker", monkeypatch)


@pytest.fixture
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = write_kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:9")
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


def template_file(folder: Path, text: str = MLFLOW_TEMPLATE, name: str = "job.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def config(template: Path | str, **more: Any) -> dict[str, Any]:
    return {
        "kube-context": "fake",
        "repository-uri": "registry.example.com/team/proj",
        "kube-job-template-path": str(template),
        **more,
    }


# --- the manifest ----------------------------------------------------------------------------


def test_manifest_from_mlflows_example_template() -> None:
    template = yaml.safe_load(MLFLOW_TEMPLATE)
    manifest = job_manifest(
        template,
        name="my-project-" + RUN_ID,
        container="my-project",
        image="registry.example.com/team/proj:" + RUN_ID + "@sha256:abc",
        command="python train.py --alpha 0.5 --name 'a b'",
        workdir="/mlflow/projects/code/sub",
        env={"REPRORUN_RUN_ID": RUN_ID, "MLFLOW_TRACKING_URI": "http://tracking:5000", "X": "1"},
        namespace="mlflow",
    )
    assert manifest == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "my-project-" + RUN_ID, "namespace": "mlflow"},
        "spec": {
            "ttlSecondsAfterFinished": 100,
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "my-project",
                            "image": "registry.example.com/team/proj:" + RUN_ID + "@sha256:abc",
                            "command": [
                                "bash",
                                "-c",
                                "python train.py --alpha 0.5 --name 'a b'",
                            ],
                            # MLflow's placeholder string is dropped; the run's variables appended
                            "env": [
                                {"name": "REPRORUN_RUN_ID", "value": RUN_ID},
                                {"name": "MLFLOW_TRACKING_URI", "value": "http://tracking:5000"},
                                {"name": "X", "value": "1"},
                            ],
                            "resources": {
                                "limits": {"memory": "512Mi"},
                                "requests": {"memory": "256Mi"},
                            },
                            "workingDir": "/mlflow/projects/code/sub",
                        }
                    ],
                    "restartPolicy": "Never",
                }
            },
        },
    }
    assert template == yaml.safe_load(MLFLOW_TEMPLATE)  # the template itself is left alone


def test_manifest_keeps_template_variables_and_other_containers() -> None:
    template = yaml.safe_load(MLFLOW_TEMPLATE)
    pod = template["spec"]["template"]["spec"]
    del pod["restartPolicy"]
    del template["metadata"]["namespace"]
    pod["containers"][0]["env"] = [
        {"name": "DATA_DIR", "value": "/data"},
        {"name": "MLFLOW_RUN_ID", "value": "stale"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
    ]
    pod["containers"].append({"name": "sidecar", "image": "proxy:1"})
    manifest = job_manifest(
        template,
        name="n",
        container="c",
        image="i",
        command="true",
        workdir="/mlflow/projects/code",
        env={"MLFLOW_RUN_ID": RUN_ID},
        namespace="from-context",
    )
    pod = manifest["spec"]["template"]["spec"]
    assert manifest["metadata"] == {"name": "n", "namespace": "from-context"}
    assert pod["restartPolicy"] == "Never"  # a Job's pod must not restart forever
    assert pod["containers"][0]["env"] == [
        {"name": "DATA_DIR", "value": "/data"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
        {"name": "MLFLOW_RUN_ID", "value": RUN_ID},
    ]
    assert pod["containers"][1] == {"name": "sidecar", "image": "proxy:1"}


def test_names_are_dns_labels_of_at_most_63_characters() -> None:
    assert job_name("My_Project.v2", RUN_ID) == "my-project-v2-" + RUN_ID
    long = job_name("a-very-long-project-name-" * 5, RUN_ID)
    assert len(long) <= 63 and long.endswith("-" + RUN_ID)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", long)
    assert job_name("___", RUN_ID) == "reprorun-" + RUN_ID
    assert dns_label("Iris Classifier!") == "iris-classifier"
    assert image_tag("registry:5000/team/proj", RUN_ID) == f"registry:5000/team/proj:{RUN_ID}"


# --- options ---------------------------------------------------------------------------------


def test_valid_config_gives_the_backend(tmp_path: Path, kubeconfig: Path) -> None:
    backend = get_backend("kubernetes", config(template_file(tmp_path)))
    assert isinstance(backend, KubernetesBackend)
    assert backend.remote and backend.shares_filesystem is False
    assert backend.cluster.host == "http://127.0.0.1:9"
    assert backend.cluster.namespace == "from-context"
    assert backend.config.kube_job_template == yaml.safe_load(MLFLOW_TEMPLATE)
    assert backend.tracking_uri is None


def test_unknown_option_is_named(tmp_path: Path) -> None:
    with pytest.raises(UserInputError) as err:
        get_backend("kubernetes", config(template_file(tmp_path), **{"kube-contxt": "x"}))
    message = str(err.value)
    assert "'kube-contxt' is not an option of the kubernetes backend" in message
    assert "Did you mean 'kube-context'?" in message


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("push", "no", "true or false"),
        ("kube-context", 3, "a string"),
        ("env_vars", {"A": 1}, "a mapping of names to strings"),
        ("repository-uri", ["x"], "a string"),
    ],
)
def test_wrong_type_is_named(tmp_path: Path, key: str, value: Any, expected: str) -> None:
    with pytest.raises(UserInputError) as err:
        get_backend("kubernetes", config(template_file(tmp_path), **{key: value}), "cfg.json")
    message = str(err.value)
    assert message.startswith("Backend config cfg.json: ")
    assert f"option {key!r} of the kubernetes backend must be {expected}" in message


def test_required_options(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="needs option\\(s\\) 'repository-uri'"):
        get_backend("kubernetes", {"kube-job-template-path": str(template_file(tmp_path))})
    with pytest.raises(UserInputError, match="needs option 'kube-job-template-path'"):
        get_backend("kubernetes", {"repository-uri": "r/p"})


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("registry.example.com/team/proj:v1", "a tag or digest"),
        ("team/proj@sha256:abc", "a tag or digest"),
        ("Team/Proj", "capital letters"),
        ("", "an empty name"),
    ],
)
def test_repository_uri_is_checked(tmp_path: Path, uri: str, problem: str) -> None:
    with pytest.raises(UserInputError, match=f"repository-uri must be .*{problem}"):
        get_backend("kubernetes", config(template_file(tmp_path), **{"repository-uri": uri}))


def test_registry_port_is_not_a_tag(tmp_path: Path, kubeconfig: Path) -> None:
    options = config(template_file(tmp_path), **{"repository-uri": "localhost:5000/proj"})
    assert get_backend("kubernetes", options).config.repository_uri == "localhost:5000/proj"


def test_missing_template_file_is_named_with_its_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf").mkdir()
    with pytest.raises(UserInputError) as err:
        get_backend("kubernetes", config("nope/job.yaml"), str(tmp_path / "conf" / "k.json"))
    message = str(err.value)
    assert "kube-job-template-path 'nope/job.yaml': no such file" in message
    assert str(tmp_path / "nope" / "job.yaml") in message
    assert str(tmp_path / "conf" / "nope" / "job.yaml") in message


def test_relative_template_path_current_folder_first_then_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kubeconfig: Path
) -> None:
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    beside = template_file(tmp_path / "conf")
    source = str(tmp_path / "conf" / "k.json")
    backend = get_backend("kubernetes", config("job.yaml"), source)
    assert backend.config.kube_job_template_path == str(beside)
    # MLflow reads the path from the current folder: a template there comes first
    here = template_file(
        tmp_path / "work", MLFLOW_TEMPLATE.replace("namespace: mlflow", "namespace: here")
    )
    backend = get_backend("kubernetes", config("job.yaml"), source)
    assert backend.config.kube_job_template_path == str(here)
    assert backend.config.kube_job_template["metadata"]["namespace"] == "here"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda t: t.replace("kind: Job", "kind: Deployment"),
            "expected a Kubernetes Job (apiVersion: batch/v1, kind: Job), got apiVersion: "
            "batch/v1, kind: Deployment",
        ),
        (lambda t: "- just\n- a list\n", "expected a Kubernetes Job (a mapping), got list"),
        (lambda t: "kind: [\n", "cannot be read as YAML"),
        (
            lambda t: t.replace("containers:", "initContainers:"),
            "spec.template.spec.containers must list at least one container",
        ),
        (
            lambda t: t.replace("restartPolicy: Never", "restartPolicy: Always"),
            "restartPolicy must be Never or OnFailure",
        ),
        (
            lambda t: t.replace("        resources:", "        args: [--x]\n        resources:"),
            "has args",
        ),
    ],
    ids=["deployment", "list", "yaml", "no-containers", "restart", "args"],
)
def test_template_that_is_not_a_usable_job_is_refused(
    tmp_path: Path, kubeconfig: Path, change: Any, message: str
) -> None:
    path = template_file(tmp_path, change(MLFLOW_TEMPLATE))
    with pytest.raises(UserInputError) as err:
        get_backend("kubernetes", config(path))
    assert str(path) in str(err.value)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("        resources:", "        resource:"),
            "spec.template.spec.containers.0.resource: Extra inputs are not permitted",
        ),
        (
            ("backoffLimit: 0", "backoffLimit: none"),
            "spec.backoffLimit: Input should be a valid integer",
        ),
    ],
    ids=["typo", "type"],
)
def test_template_fields_the_client_refuses(
    tmp_path: Path, kubeconfig: Path, change: tuple[str, str], message: str
) -> None:
    path = template_file(tmp_path, MLFLOW_TEMPLATE.replace(*change))
    if hasattr(k8s.V1Job, "model_validate"):
        # Clients with pydantic models (kubernetes 37) check requests: refused at once.
        with pytest.raises(UserInputError) as err:
            get_backend("kubernetes", config(path))
        assert str(err.value) == (
            f"Job template {path}: the kubernetes client refuses this Job: {message}"
        )
    else:
        # Older clients send the Job as it is: the API server refuses it (strict field
        # validation, as kubectl) in the dry run made before the image is built.
        assert get_backend("kubernetes", config(path)).config.kube_job_template_path == str(path)


def test_inline_template_is_used_without_a_file(kubeconfig: Path) -> None:
    template = yaml.safe_load(MLFLOW_TEMPLATE)
    backend = get_backend(
        "kubernetes",
        {"repository-uri": "r/p", "kube-job-template": template, "kube-context": "fake"},
    )
    assert backend.config.kube_job_template == template
    with pytest.raises(UserInputError, match="kube-job-template: expected a Kubernetes Job"):
        get_backend("kubernetes", {"repository-uri": "r/p", "kube-job-template": {"kind": "Pod"}})


def test_recorded_options_rebuild_the_backend_without_the_template_file(
    tmp_path: Path, kubeconfig: Path
) -> None:
    path = template_file(tmp_path)
    backend = get_backend(
        "kubernetes",
        config(path, push=False, tracking_uri="http://t:5000", env_vars={"A": "1"}),
    )
    recorded = json.loads(backend.options_json())
    assert recorded == {
        "repository-uri": "registry.example.com/team/proj",
        "kube-job-template-path": str(path),
        "kube-context": "fake",
        "kube-job-template": yaml.safe_load(MLFLOW_TEMPLATE),
        "push": False,
        "tracking_uri": "http://t:5000",
        "env_vars": {"A": "1"},
    }
    path.unlink()
    again = get_backend("kubernetes", recorded)
    assert again.options_json() == backend.options_json()


def test_kube_context_must_exist(tmp_path: Path, kubeconfig: Path) -> None:
    with pytest.raises(UserInputError) as err:
        get_backend("kubernetes", config(template_file(tmp_path), **{"kube-context": "prod"}))
    assert f"The kubeconfig {kubeconfig} has no kube-context 'prod'" in str(err.value)
    assert "its contexts: fake, elsewhere" in str(err.value)


def test_current_context_is_used_without_kube_context(tmp_path: Path, kubeconfig: Path) -> None:
    options = config(template_file(tmp_path))
    del options["kube-context"]
    backend = get_backend("kubernetes", options)
    assert backend.cluster.where == "kube-context elsewhere"
    assert backend.cluster.namespace == "default"


def test_without_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    for var in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(UserInputError, match="kube-context 'fake' needs a kubeconfig"):
        get_backend("kubernetes", config(template_file(tmp_path)))
    options = config(template_file(tmp_path))
    del options["kube-context"]
    with pytest.raises(UserInputError) as err:  # then MLflow's fallback, in-cluster
        get_backend("kubernetes", options)
    assert "No Kubernetes cluster to submit to: no kubeconfig at" in str(err.value)
    assert "not a pod with a service account" in str(err.value)


def test_missing_client_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "kubernetes.client", None)
    with pytest.raises(UserInputError, match=r"pip install 'reprorun\[kubernetes\]'"):
        get_backend("kubernetes", config(template_file(tmp_path)))


def test_only_docker_env_projects(tmp_path: Path, kubeconfig: Path) -> None:
    backend = get_backend("kubernetes", config(template_file(tmp_path)))
    backend.check_env("docker")
    for other in ("local", "uv", "conda"):
        with pytest.raises(UserInputError, match=f"docker_env.*--env-manager docker.*not {other}"):
            backend.check_env(other)


def test_kube_mlflow_tracking_uri_as_in_mlflow(
    tmp_path: Path, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBE_MLFLOW_TRACKING_URI", "http://from-env:5000")
    backend = get_backend("kubernetes", config(template_file(tmp_path)))
    assert backend.tracking_uri == "http://from-env:5000"
    backend = get_backend("kubernetes", config(template_file(tmp_path), tracking_uri="http://c:1"))
    assert backend.tracking_uri == "http://c:1"


# --- the image -------------------------------------------------------------------------------


def test_dockerfile_puts_project_and_client_where_mlflow_does() -> None:
    assert dockerfile("python:3.11-slim").splitlines()[1:] == [
        "FROM python:3.11-slim",
        "COPY reprorun-client/ /opt/reprorun-client/",
        "COPY project/ /mlflow/projects/code/",
        "WORKDIR /mlflow/projects/code",
        "ENV PYTHONPATH=/opt/reprorun-client${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1",
    ]


def test_build_context_ships_the_tree_without_git(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / ".git" / "objects").mkdir(parents=True)
    (root / ".git" / "HEAD").write_text("ref")
    (root / "sub").mkdir()
    (root / "sub" / "MLproject").write_text("name: p\n")
    (root / "data.csv").write_text("1,2\n")
    (root / "link").symlink_to("data.csv")
    client = tmp_path / "client"
    (client / "reprorun" / "__pycache__").mkdir(parents=True)
    (client / "reprorun" / "__init__.py").write_text("")
    (client / "reprorun" / "__pycache__" / "x.pyc").write_text("")
    ctx = write_build_context(tmp_path / "ctx", root, "base:1", client)
    files = sorted(str(p.relative_to(ctx)) for p in ctx.rglob("*") if not p.is_dir())
    assert files == [
        "Dockerfile",
        "project/data.csv",
        "project/link",
        "project/sub/MLproject",
        "reprorun-client/reprorun/__init__.py",
    ]
    assert (ctx / "project" / "link").is_symlink()
    assert (ctx / "Dockerfile").read_text() == dockerfile("base:1")


def test_docker_commands() -> None:
    assert build_argv(Path("/tmp/ctx"), "r/p:1") == [
        "docker",
        "build",
        "--tag",
        "r/p:1",
        "/tmp/ctx",
    ]
    assert push_argv("r/p:1") == ["docker", "push", "r/p:1"]
    assert inspect_argv("r/p:1", "{{.Id}}") == [
        "docker",
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        "r/p:1",
    ]


def test_repo_digest() -> None:
    assert (
        repo_digest(["r.example/t/p@sha256:1", "other/p@sha256:2"], "r.example/t/p") == "sha256:1"
    )
    assert repo_digest(["user/p@sha256:3"], "docker.io/user/p") == "sha256:3"
    assert repo_digest(["p@sha256:4", "x/y@sha256:5"], "docker.io/library/p") == "sha256:4"
    assert repo_digest(["some/where@sha256:6"], "else/where") == "sha256:6"
    assert repo_digest(["a/b@sha256:7", "c/d@sha256:8"], "e/f") is None
    assert repo_digest([], "e/f") is None


def test_build_and_push_pin_the_image_by_digest(tmp_path: Path, docker: FakeDocker) -> None:
    root = tmp_path / "project"
    root.mkdir()
    (root / "train.py").write_text("print(1)\n")
    image = build_image(root, "base:1", "registry.example.com/team/proj", RUN_ID, push=True)
    tag = f"registry.example.com/team/proj:{RUN_ID}"
    digest = docker.digest("pushed " + tag)
    assert image == Image(tag, f"{tag}@{digest}", digest)
    calls = docker.calls()
    assert [c["argv"][:3] for c in calls] == [
        ["build", "--tag", tag],
        ["push", tag],
        ["image", "inspect", "--format"],
    ]
    assert calls[2]["argv"][3:] == ["{{json .RepoDigests}}", tag]
    assert calls[0]["dockerfile"] == dockerfile("base:1")
    assert "project/train.py" in calls[0]["files"]
    assert "reprorun-client/reprorun/__init__.py" in calls[0]["files"]
    assert not Path(calls[0]["argv"][-1]).exists()  # the build context is removed


def test_without_push_the_local_image_is_used(tmp_path: Path, docker: FakeDocker) -> None:
    image = build_image(tmp_path, "base:1", "proj", RUN_ID, push=False)
    tag = f"proj:{RUN_ID}"
    assert image == Image(tag, tag, docker.digest("id " + tag))
    assert [a[0] for a in docker.argvs()] == ["build", "image"]


def test_push_failure_says_what_to_do(
    tmp_path: Path, docker: FakeDocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_DOCKER_FAIL", "push")
    with pytest.raises(ExecutionError) as err:
        build_image(tmp_path, "base:1", "proj", RUN_ID, push=True)
    message = str(err.value)
    assert (
        f"Could not push the job's image proj:{RUN_ID}: `docker push proj:{RUN_ID}` exited"
        in message
    )
    assert "denied: requested access to the resource is denied" in message
    assert "docker login" in message and "push: false" in message


def test_build_failure_and_missing_docker(
    tmp_path: Path, docker: FakeDocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_DOCKER_FAIL", "build")
    with pytest.raises(
        ExecutionError, match=r"Could not build the job's image proj:\w+ from base:1"
    ):
        build_image(tmp_path, "base:1", "proj", RUN_ID, push=True)
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(ExecutionError, match="docker command, which is not installed"):
        build_image(tmp_path, "base:1", "proj", RUN_ID, push=True)


# --- the status ------------------------------------------------------------------------------

NOW = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc)


def job(status: dict[str, Any], deleting: bool = False) -> Any:
    return k8s.V1Job(
        metadata=k8s.V1ObjectMeta(
            name="p-1", namespace="ns", deletion_timestamp=NOW if deleting else None
        ),
        status=k8s.V1JobStatus(**status),
    )


def condition(kind: str, reason: str | None = None, message: str | None = None) -> Any:
    return k8s.V1JobCondition(type=kind, status="True", reason=reason, message=message)


def pod(
    phase: str,
    *,
    exit_code: int | None = None,
    reason: str | None = None,
    pod_reason: str | None = None,
    message: str | None = None,
) -> Any:
    state = (
        k8s.V1ContainerState(
            terminated=k8s.V1ContainerStateTerminated(exit_code=exit_code, reason=reason)
        )
        if exit_code is not None
        else k8s.V1ContainerState(waiting=k8s.V1ContainerStateWaiting(reason="ContainerCreating"))
    )
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name="p-1-abcde", creation_timestamp=NOW),
        spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="p"), k8s.V1Container(name="sidecar")]),
        status=k8s.V1PodStatus(
            phase=phase,
            container_statuses=[
                k8s.V1ContainerStatus(
                    name="sidecar",
                    image="s",
                    image_id="",
                    ready=True,
                    restart_count=0,
                    state=k8s.V1ContainerState(
                        terminated=k8s.V1ContainerStateTerminated(exit_code=0)
                    ),
                ),
                k8s.V1ContainerStatus(
                    name="p", image="i", image_id="", ready=False, restart_count=0, state=state
                ),
            ],
            reason=pod_reason,
            message=message,
        ),
    )


def test_status_pending_pods_are_scheduled() -> None:
    assert job_state(job({"active": 1, "ready": 0}), [pod("Pending")]) == JobState(
        RunStatus.SCHEDULED
    )
    assert job_state(job({}), []).status is RunStatus.SCHEDULED  # no pod yet
    suspended = job({"conditions": [condition("Suspended", "JobSuspended")]})
    assert job_state(suspended, []).status is RunStatus.SCHEDULED


def test_status_running() -> None:
    assert job_state(job({"active": 1, "ready": 1}), []).status is RunStatus.RUNNING
    # clusters without the ready count: a running pod tells
    assert job_state(job({"active": 1}), [pod("Running")]).status is RunStatus.RUNNING


def test_status_finished_with_exit_code() -> None:
    done = job(
        {"succeeded": 1, "conditions": [condition("SuccessCriteriaMet"), condition("Complete")]}
    )
    assert job_state(done, [pod("Succeeded", exit_code=0, reason="Completed")]) == JobState(
        RunStatus.FINISHED, None, 0, ExitReason.SUCCEEDED, "Complete"
    )


def test_status_failed_with_reasons() -> None:
    failed = job(
        {
            "failed": 1,
            "conditions": [
                condition("FailureTarget", "BackoffLimitExceeded"),
                condition(
                    "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"
                ),
            ],
        }
    )
    state = job_state(failed, [pod("Failed", exit_code=137, reason="OOMKilled")])
    assert state == JobState(
        RunStatus.FAILED,
        "Kubernetes job ns/p-1 failed: BackoffLimitExceeded (Job has reached the specified "
        "backoff limit); pod p-1-abcde: exit code 137 (OOMKilled)",
        137,
        ExitReason.OUT_OF_MEMORY,
        "Job Failed: BackoffLimitExceeded (Job has reached the specified backoff limit); "
        "container OOMKilled, exit code 137",
        9,
    )
    deadline = job(
        {"conditions": [condition("Failed", "DeadlineExceeded", "Job was active longer")]}
    )
    evicted = pod("Failed", pod_reason="DeadlineExceeded", message="Pod was active too long")
    state = job_state(deadline, [evicted])
    assert state.status is RunStatus.FAILED and state.exit_code is None
    assert "failed: DeadlineExceeded (Job was active longer)" in (state.reason or "")
    assert "pod p-1-abcde: DeadlineExceeded (Pod was active too long)" in (state.reason or "")


def test_status_conditions_that_are_not_true_do_not_count() -> None:
    not_yet = job(
        {"active": 1, "ready": 1, "conditions": [k8s.V1JobCondition(type="Failed", status="False")]}
    )
    assert job_state(not_yet, []).status is RunStatus.RUNNING


def test_status_job_being_deleted_is_killed() -> None:
    state = job_state(job({"active": 1}, deleting=True), [pod("Running")])
    assert state == JobState(
        RunStatus.KILLED,
        "Kubernetes job ns/p-1 is being deleted",
        exit_reason=ExitReason.CANCELLED,
        detail="the Job is being deleted",
    )
    # a job that ended keeps its status while the TTL controller deletes it
    done = job({"conditions": [condition("Complete")]}, deleting=True)
    assert job_state(done, []).status is RunStatus.FINISHED


def from_json(data: dict[str, Any], kind: str) -> Any:
    """A Job or pod as the API server sends it (kubectl get -o json), read by the client."""
    return k8s.ApiClient().deserialize(json.dumps(data), kind, "application/json")


def failed_job(reason: str, message: str) -> Any:
    return from_json(
        {
            "metadata": {"name": "train-0123", "namespace": "ml"},
            "status": {
                "failed": 1,
                "conditions": [
                    {"type": "FailureTarget", "status": "True", "reason": reason},
                    {"type": "Failed", "status": "True", "reason": reason, "message": message},
                ],
            },
        },
        "V1Job",
    )


def failed_pod(status: dict[str, Any]) -> Any:
    return from_json(
        {
            "metadata": {"name": "train-0123-x7k2p"},
            "spec": {"containers": [{"name": "train", "image": "i"}]},
            "status": {"phase": "Failed", **status},
        },
        "V1Pod",
    )


def terminated(reason: str, code: int, message: str | None = None) -> dict[str, Any]:
    ended = {"exitCode": code, "reason": reason, "message": message}
    return {
        "containerStatuses": [
            {
                "name": "train",
                "image": "i",
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {"terminated": {k: v for k, v in ended.items() if v is not None}},
            }
        ]
    }


BACKOFF = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")


@pytest.mark.parametrize(
    ("job_condition", "pod_status", "reason", "words"),
    [
        (BACKOFF, terminated("OOMKilled", 137), ExitReason.OUT_OF_MEMORY, "OOMKilled"),
        (BACKOFF, terminated("Error", 3), ExitReason.CODE_ERROR, "container Error, exit code 3"),
        (
            ("DeadlineExceeded", "Job was active longer than specified deadline"),
            terminated("Error", 143),
            ExitReason.TIMEOUT,
            "Job Failed: DeadlineExceeded (Job was active longer than specified deadline)",
        ),
        (
            BACKOFF,
            {
                "reason": "Evicted",
                "message": "The node was low on resource: memory. Threshold quantity: 100Mi.",
            },
            ExitReason.PREEMPTED,
            "pod Evicted (The node was low on resource: memory.",
        ),
        (
            BACKOFF,
            {
                "conditions": [
                    {
                        "type": "DisruptionTarget",
                        "status": "True",
                        "reason": "PreemptionByScheduler",
                        "message": "Preempted in order to admit critical pod",
                    }
                ],
                **terminated("Error", 137),
            },
            ExitReason.PREEMPTED,
            "DisruptionTarget: PreemptionByScheduler",
        ),
        (
            BACKOFF,
            {
                "conditions": [
                    {
                        "type": "DisruptionTarget",
                        "status": "True",
                        "reason": "DeletionByTaintManager",
                        "message": "Taint manager: deleting due to NoExecute taint",
                    }
                ]
            },
            ExitReason.NODE_LOST,
            "DeletionByTaintManager",
        ),
        (
            BACKOFF,
            terminated(
                "ContainerStatusUnknown",
                137,
                "The container could not be located when the pod was terminated",
            ),
            ExitReason.NODE_LOST,
            "container ContainerStatusUnknown, exit code 137",
        ),
        (
            BACKOFF,
            {
                "reason": "Terminated",
                "message": "Pod was terminated in response to imminent node shutdown.",
            },
            ExitReason.NODE_LOST,
            "pod Terminated",
        ),
    ],
)
def test_each_kubernetes_end_is_classified_with_kubernetes_words(
    job_condition: tuple[str, str], pod_status: dict[str, Any], reason: ExitReason, words: str
) -> None:
    state = job_state(failed_job(*job_condition), [failed_pod(pod_status)])
    assert state.status is RunStatus.FAILED
    tags = state.end_tags()
    assert tags[SystemTags.EXIT_REASON] == reason.value
    assert words in tags[SystemTags.EXIT_DETAIL]
    assert tags[SystemTags.EXIT_DETAIL].startswith(f"Job Failed: {job_condition[0]}")


def test_timeout_becomes_the_jobs_active_deadline_when_shorter() -> None:
    assert with_deadline({"spec": {}}, None) == {"spec": {}}
    assert with_deadline({"spec": {}}, 90.5) == {"spec": {"activeDeadlineSeconds": 91}}
    own = {"spec": {"activeDeadlineSeconds": 60}}
    assert with_deadline(own, 600) == {"spec": {"activeDeadlineSeconds": 60}}
    assert with_deadline(own, 30) == {"spec": {"activeDeadlineSeconds": 30}}


# --- the documentation ---------------------------------------------------------------------


def test_docs_list_every_option_and_the_examples_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    text = (DOCS / "kubernetes.md").read_text()
    for f in dataclasses.fields(KubernetesBackendConfig):
        assert f"| `{f.metadata.get('key', f.name)}` |" in text, f.name
    write_kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:9")
    kube = yaml.safe_load((tmp_path / "kubeconfig").read_text())
    kube["contexts"][0]["name"] = "docker-desktop"  # the example's context
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(kube))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.chdir(tmp_path)
    example = DOCS / "kubernetes" / "kubernetes_config.json"
    backend = get_backend("kubernetes", json.loads(example.read_text()), str(example))
    assert backend.config.kube_job_template_path == str(
        DOCS / "kubernetes" / "kubernetes_job_template.yaml"
    )
    assert backend.tracking_uri == "http://tracking.example.com:5000"


def test_dollar_signs_reach_bash_unexpanded_by_kubernetes() -> None:
    """Kubernetes expands $(VAR) and $$ in a container's command and env values: the
    manifest writes each $ as $$, so bash gets the command as the run rendered it."""
    template = yaml.safe_load(MLFLOW_TEMPLATE)
    manifest = job_manifest(
        template,
        name="p-" + RUN_ID,
        container="p",
        namespace="default",
        image="registry.example/p:1",
        command="echo $$ $(MLFLOW_RUN_ID) 'a$b'",
        workdir="/mlflow/projects/code",
        env={"PRICE": "$5"},
    )
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["bash", "-c", "echo $$$$ $$(MLFLOW_RUN_ID) 'a$$b'"]
    assert {"name": "PRICE", "value": "$$5"} in container["env"]
