"""The per-run MLflow endpoint against the people it must keep out, and `reprorun server` on
loopback against web pages.

The endpoint of a real, running `reprorun run` is probed as another local user (``setpriv`` to
nobody: 401 for everything, the store untouched), as a web page would (cross-site text/plain
POST, foreign Origin, DNS-rebinding Host), with the run's token but outside the run's scope
(403), and with malformed requests (400/413, never a traceback in the run's output, never a
thread held forever); the real ``mlflow`` client inside the run still logs params, metrics, a
scikit-learn model and a nested child run.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reprorun.tracking.entities import RunStatus
from tests.conftest import reprorun_cli
from tests.integration.server_proc import server_process

API = "/api/2.0/mlflow"
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
SYSTEM_PYTHON = "/usr/bin/python3"  # readable by nobody (the test's Python may not be)
WAIT = 60.0  # seconds any one step may take before the test fails

HOLD = """\
import json, os, sys, time
from pathlib import Path
folder = Path(os.environ["HOLD_DIR"])
names = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID",
         "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
(folder / "endpoint.tmp").write_text(json.dumps({n: os.environ.get(n) for n in names}))
(folder / "endpoint.tmp").rename(folder / "endpoint.json")
deadline = time.monotonic() + 120
while not (folder / "release").exists() and time.monotonic() < deadline:
    time.sleep(0.05)
print("held and released")
"""

NESTED = """\
import os, mlflow
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

X, y = load_iris(return_X_y=True)
with mlflow.start_run() as run:
    assert run.info.run_id == os.environ["REPRORUN_RUN_ID"]
    mlflow.log_param("lr", "0.1")
    mlflow.log_metrics({"loss": 0.5, "acc": 0.9})
    mlflow.set_tag("stage", "parent")
    mlflow.sklearn.log_model(LogisticRegression(max_iter=200).fit(X, y), name="model")
    with mlflow.start_run(nested=True) as child:
        mlflow.log_param("fold", "1")
        mlflow.log_metric("fold_acc", 0.8, step=1)
        mlflow.sklearn.log_model(LogisticRegression(max_iter=100).fit(X, y), name="fold_model")
    print("CHILD", child.info.run_id)
    try:
        mlflow.set_experiment("somewhere-else")
    except mlflow.exceptions.MlflowException as exc:
        print("REFUSED", exc)
"""

MLPROJECT = """\
name: endpoint-security
entry_points:
  hold:
    command: '"$REPRORUN_TEST_PYTHON" hold.py'
  nested:
    command: '"$MLFLOW_CLIENT_PYTHON" nested.py'
"""


# --- a real run holding its endpoint open ---------------------------------------------------


@dataclass
class HeldRun:
    url: str
    port: int
    token: str | None
    run_id: str
    experiment_id: str
    env: dict[str, Any]
    output: Path

    def text(self) -> str:
        return self.output.read_text(errors="replace")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "MLproject").write_text(MLPROJECT)
    (folder / "hold.py").write_text(HOLD)
    (folder / "nested.py").write_text(NESTED)
    return folder


@contextlib.contextmanager
def held_run(project: Path, tmp_path: Path, **extra_env: str) -> Iterator[HeldRun]:
    """`reprorun run -e hold` in a subprocess, until the block ends; its output (the user's
    terminal) goes to a file the test can read after."""
    hold_dir = tmp_path / "hold"
    hold_dir.mkdir()
    output = tmp_path / "run-output.txt"
    env = {**os.environ, "REPRORUN_TEST_PYTHON": sys.executable, "HOLD_DIR": str(hold_dir)}
    env.update(extra_env)
    command = [sys.executable, "-m", "reprorun", "run", str(project), "-e", "hold"]
    with open(output, "wb") as out:
        proc = subprocess.Popen(
            [*command, "--env-manager", "local"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + WAIT
        while not (hold_dir / "endpoint.json").exists():
            assert proc.poll() is None, output.read_text()
            assert time.monotonic() < deadline, "the run's command did not start"
            time.sleep(0.05)
        seen = json.loads((hold_dir / "endpoint.json").read_text())
        url = seen["MLFLOW_TRACKING_URI"]
        yield HeldRun(
            url=url,
            port=int(url.rsplit(":", 1)[1]),
            token=seen["MLFLOW_TRACKING_TOKEN"],
            run_id=seen["MLFLOW_RUN_ID"],
            experiment_id=seen["MLFLOW_EXPERIMENT_ID"],
            env=seen,
            output=output,
        )
    finally:
        (hold_dir / "release").touch()
        try:
            proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output.read_text()


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def call(
    run: HeldRun, method: str, endpoint: str, body: dict[str, Any] | None = None, **headers: str
) -> tuple[int, dict[str, Any]]:
    """A JSON call with the run's token (MLflow's clients' way)."""
    all_headers = {"Content-Type": "application/json", "Authorization": f"Bearer {run.token}"}
    all_headers.update({k.replace("_", "-"): v for k, v in headers.items()})
    data = None if body is None else json.dumps(body)
    status, _, raw = request(run.port, method, f"{API}/{endpoint}", data, all_headers)
    return status, json.loads(raw) if raw else {}


@pytest.fixture
def victim(home: Path) -> dict[str, str]:
    """Another run and experiment in the same store, that no run's endpoint may touch."""
    from reprorun.tracking.store import open_store

    store = open_store()
    exp_id = store.create_experiment("victim-experiment")
    run = store.create_run(exp_id, run_name="victim")
    model = store.create_logged_model(exp_id, name="victim-model")
    return {"run_id": run.info.run_id, "experiment_id": exp_id, "model_id": model.model_id}


def assert_untouched(victim: dict[str, str]) -> None:
    from reprorun.tracking.store import open_store

    store = open_store()
    run = store.get_run(victim["run_id"])
    assert run.info.status == RunStatus.RUNNING
    assert run.data.metrics == {} and "injected" not in run.data.tags
    assert store.get_logged_model(victim["model_id"]).metrics == []
    names = {e.name for e in store.search_experiments()}
    assert {"Default", "victim-experiment"} <= names
    assert not names & {"renamed", "attacker"}, names


# --- another local user ---------------------------------------------------------------------

PROBE = """\
import http.client, json, sys
port, run_id, victim = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def go(method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return [response.status, response.read().decode()[:300]]
api = "/api/2.0/mlflow/"
js = {"Content-Type": "application/json"}
print(json.dumps([
    go("GET", api + "experiments/search?max_results=100"),
    go("GET", api + "runs/get?run_id=" + victim),
    go("POST", api + "runs/update", json.dumps({"run_id": victim, "status": "KILLED"}), js),
    go("POST", api + "runs/set-tag",
       json.dumps({"run_id": run_id, "key": "injected", "value": "x"}), js),
    go("POST", api + "experiments/update",
       json.dumps({"experiment_id": "0", "new_name": "renamed"}), js),
    go("POST", api + "experiments/create",
       json.dumps({"name": "attacker", "artifact_location": "/tmp/attacker"}), js),
    go("POST", api + "runs/update", json.dumps({"run_id": victim, "status": "KILLED"}),
       {**js, "Authorization": "Bearer guessed-token"}),
]))
"""


@pytest.mark.slow
def test_another_local_user_gets_401_for_everything(
    project: Path, tmp_path: Path, victim: dict[str, str]
) -> None:
    assert Path(SYSTEM_PYTHON).exists()
    with held_run(project, tmp_path) as run:
        probe = subprocess.run(
            [*NOBODY, SYSTEM_PYTHON, "-c", PROBE, str(run.port), run.run_id, victim["run_id"]],
            capture_output=True,
            text=True,
            timeout=WAIT,
            cwd="/",
        )
        assert probe.returncode == 0, probe.stderr
        answers = json.loads(probe.stdout)
        for status, body in answers:
            assert status == 401, answers
            assert json.loads(body)["error_code"] == "UNAUTHENTICATED"
        assert "MLFLOW_TRACKING_TOKEN" in json.loads(answers[0][1])["message"]
        assert_untouched(victim)
        from reprorun.tracking.store import open_store

        assert "injected" not in open_store().get_run(run.run_id).data.tags
    assert "Traceback" not in run.text()


# --- web pages ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_web_page_cannot_drive_the_endpoint(
    project: Path, tmp_path: Path, victim: dict[str, str]
) -> None:
    with held_run(project, tmp_path) as run:
        assert run.token and len(run.token) >= 40
        path = f"{API}/runs/update"
        kill = json.dumps({"run_id": victim["run_id"], "status": "KILLED"})
        plain = {"Content-Type": "text/plain;charset=UTF-8"}
        # A cross-site form-like POST: no token, text/plain, the page's Origin.
        for headers in (
            {**plain, "Origin": "https://evil.example"},
            {**plain, "Origin": "null"},
            {**plain, "Sec-Fetch-Site": "cross-site"},
            {**plain, "Origin": f"http://localhost:{run.port + 1}"},
        ):
            status, reply_headers, body = request(run.port, "POST", path, kill, headers)
            assert status == 403, (headers, body)
            assert json.loads(body)["error_code"] == "PERMISSION_DENIED"
            assert not any(h.lower().startswith("access-control-") for h in reply_headers)
        status, _, _ = request(run.port, "POST", path, kill, plain)
        assert status == 401
        big = json.dumps({"run_id": victim["run_id"], "pad": "x" * 500_000})
        assert request(run.port, "POST", path, big, plain)[0] == 401  # answered, not reset
        # Even with the token, a foreign Origin, a cross-site fetch or a non-JSON body is refused.
        token = {"Authorization": f"Bearer {run.token}"}
        for headers in (
            {**token, "Content-Type": "application/json", "Origin": "https://evil.example"},
            {**token, "Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"},
        ):
            assert request(run.port, "POST", path, kill, headers)[0] == 403, headers
        own = json.dumps({"run_id": run.run_id, "key": "k", "value": "v"})
        for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
            status, _, body = request(
                run.port, "POST", f"{API}/runs/set-tag", own, {**token, "Content-Type": kind}
            )
            assert status == 415, (kind, body)
        status, _, _ = request(run.port, "POST", f"{API}/runs/set-tag", own, token)
        assert status == 415  # no Content-Type at all
        # DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends its own Host.
        for host in (f"evil.example:{run.port}", "127.0.0.1", f"127.0.0.1:{run.port + 1}", ""):
            status, _, body = request(
                run.port,
                "GET",
                f"{API}/runs/get?run_id={run.run_id}",
                None,
                {**token, "Host": host},
            )
            assert status == 403, (host, body)
        # Its own origin and Host, with the token, in JSON: answered, with no CORS header.
        status, reply_headers, _ = request(
            run.port,
            "GET",
            f"{API}/runs/get?run_id={run.run_id}",
            None,
            {**token, "Host": f"localhost:{run.port}", "Origin": f"http://localhost:{run.port}"},
        )
        assert status == 200
        assert not any(h.lower().startswith("access-control-") for h in reply_headers)
        status, reply_headers, _ = request(run.port, "OPTIONS", f"{API}/runs/update")
        assert status >= 400
        assert not any(h.lower().startswith("access-control-") for h in reply_headers)
        assert request(run.port, "GET", "/health")[0] == 200  # no token needed: says nothing
        assert_untouched(victim)
    assert "Traceback" not in run.text()


# --- the run's own code, outside its scope --------------------------------------------------


@pytest.mark.slow
def test_the_token_opens_the_run_not_the_store(
    project: Path, tmp_path: Path, victim: dict[str, str]
) -> None:
    with held_run(project, tmp_path) as run:
        exp = run.experiment_id
        other = victim["run_id"]
        point = {"run_id": run.run_id, "key": "m", "value": 1.0, "timestamp": 1}
        batch = {"run_id": run.run_id}
        refused = [
            ("GET", "experiments/search", None),
            ("POST", "experiments/search", {"max_results": 10}),
            ("GET", f"experiments/get?experiment_id={victim['experiment_id']}", None),
            ("GET", "experiments/get-by-name?experiment_name=victim-experiment", None),
            ("POST", "experiments/create", {"name": "attacker", "artifact_location": "/tmp/x"}),
            ("POST", "experiments/create", {"name": "attacker"}),
            ("POST", "experiments/update", {"experiment_id": exp, "new_name": "renamed"}),
            ("POST", "experiments/delete", {"experiment_id": victim["experiment_id"]}),
            ("POST", "experiments/restore", {"experiment_id": exp}),
            ("POST", "experiments/set-experiment-tag", {"experiment_id": exp, "key": "k"}),
            ("POST", "runs/update", {"run_id": other, "status": "KILLED"}),
            ("POST", "runs/log-metric", {"run_id": other, "key": "m", "value": 1, "timestamp": 1}),
            ("POST", "runs/set-tag", {"run_uuid": other, "key": "injected", "value": "x"}),
            ("POST", "runs/log-batch", {"run_id": other, "tags": [{"key": "injected"}]}),
            ("POST", "runs/delete", {"run_id": run.run_id}),
            ("POST", "runs/delete", {"run_id": other}),
            ("GET", f"runs/get?run_id={other}", None),
            ("POST", "runs/search", {"experiment_ids": [victim["experiment_id"]]}),
            ("POST", "runs/search", {"experiment_ids": [exp, victim["experiment_id"]]}),
            ("POST", "runs/create", {"experiment_id": victim["experiment_id"]}),
            ("POST", "logged-models", {"experiment_id": victim["experiment_id"]}),
            # A metric of its own run attached to another experiment's logged model.
            ("POST", "runs/log-metric", {**point, "model_id": victim["model_id"]}),
            (
                "POST",
                "runs/log-batch",
                {**batch, "metrics": [{**point, "model_id": victim["model_id"]}]},
            ),
            ("POST", "logged-models", {"experiment_id": exp, "source_run_id": other}),
        ]
        for method, endpoint, body in refused:
            status, reply = call(run, method, endpoint, body)
            assert status == 403, (method, endpoint, reply)
            assert reply["error_code"] == "PERMISSION_DENIED"
            assert run.run_id in reply["message"] and "reprorun server" in reply["message"]
        assert_untouched(victim)
        # What the run's code may do: its run, runs and models it creates, its experiment.
        own_tag = {"run_id": run.run_id, "key": "mine", "value": "yes"}
        assert call(run, "POST", "runs/set-tag", own_tag)[0] == 200
        assert call(run, "GET", f"experiments/get?experiment_id={exp}")[0] == 200
        status, child = call(run, "POST", "runs/create", {"experiment_id": exp})
        assert status == 200, child
        child_id = child["run"]["info"]["run_id"]
        metric = {"run_id": child_id, "key": "m", "value": 1.0, "timestamp": 1, "step": 0}
        assert call(run, "POST", "runs/log-metric", metric)[0] == 200
        assert (
            call(run, "POST", "runs/update", {"run_id": child_id, "status": "FINISHED"})[0] == 200
        )
        status, found = call(run, "POST", "runs/search", {"experiment_ids": [exp]})
        assert status == 200 and {r["info"]["run_id"] for r in found["runs"]} >= {child_id}
        status, model = call(
            run, "POST", "logged-models", {"experiment_id": exp, "source_run_id": child_id}
        )
        assert status == 200, model
        model_id = model["model"]["info"]["model_id"]
        tags = {"tags": [{"key": "k", "value": "v"}]}
        assert call(run, "PATCH", f"logged-models/{model_id}/tags", tags)[0] == 200
        done = {"status": "LOGGED_MODEL_READY"}
        assert call(run, "PATCH", f"logged-models/{model_id}", done)[0] == 200
        assert call(run, "DELETE", f"logged-models/{model_id}")[0] == 403
        # A run or model made elsewhere in its experiment may be read, not written.
        from reprorun.tracking.store import open_store

        neighbour = open_store().create_run(exp, run_name="neighbour").info.run_id
        assert call(run, "GET", f"runs/get?run_id={neighbour}")[0] == 200
        stop = {"run_id": neighbour, "status": "KILLED"}
        assert call(run, "POST", "runs/update", stop)[0] == 403
        # The token as a basic password (what MLflow's clients send when they have a username,
        # e.g. from ~/.mlflow/credentials) opens the same; another password does not.
        basic = "Basic " + base64.b64encode(f"anyone:{run.token}".encode()).decode()
        assert call(run, "POST", "runs/set-tag", own_tag, Authorization=basic)[0] == 200
        wrong = "Basic " + base64.b64encode(b"anyone:guess").decode()
        assert call(run, "POST", "runs/set-tag", own_tag, Authorization=wrong)[0] == 401
        # A path the API does not serve is answered by the endpoint itself.
        assert call(run, "POST", "experiments/delete/", {"experiment_id": exp})[0] == 404
        assert run.env["MLFLOW_TRACKING_PASSWORD"] == run.token
    assert "Traceback" not in run.text()


# --- malformed requests ---------------------------------------------------------------------


def raw_exchange(port: int, head: bytes, body: bytes = b"", timeout: float = WAIT) -> bytes:
    """Send ``head`` and ``body`` on a new connection; everything answered until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head + body)
        chunks: list[bytes] = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


@pytest.mark.slow
def test_malformed_requests_get_a_4xx_and_no_traceback(project: Path, tmp_path: Path) -> None:
    with held_run(project, tmp_path) as run:
        path = f"{API}/runs/set-tag"
        body = json.dumps({"run_id": run.run_id, "key": "k", "value": "v"}).encode()
        for length, status in (
            ("abc", 400),
            ("-1", 400),
            ("1e3", 400),
            ("", 400),
            (str(10**12), 413),
            (str(2**70), 413),
        ):
            head = (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{run.port}\r\n"
                f"Authorization: Bearer {run.token}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {length}\r\n\r\n"
            ).encode()
            answer = raw_exchange(run.port, head, body)
            assert answer.startswith(f"HTTP/1.1 {status} ".encode()), (length, answer[:300])
            assert b"Traceback" not in answer
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{run.port}\r\n"
            f"Authorization: Bearer {run.token}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
        assert raw_exchange(run.port, head, b"0\r\n\r\n").startswith(b"HTTP/1.1 400 ")
        assert call(run, "POST", "runs/set-tag", json.loads(body))[0] == 200  # still serving
    text = run.text()
    assert "held and released" in text
    assert "Traceback" not in text and "Exception" not in text, text


def test_a_stalled_body_is_dropped_after_the_timeout(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reprorun.tracking.endpoint import sidecar
    from reprorun.tracking.store import open_store

    monkeypatch.setattr(sidecar, "TIMEOUT", 1.0)
    store = open_store()
    run_id = store.create_run("0").info.run_id
    endpoint = sidecar.Sidecar(store, run_id)
    try:
        port = int(endpoint.url.rsplit(":", 1)[1])
        head = (
            f"POST {API}/runs/set-tag HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {endpoint.token}\r\nContent-Type: application/json\r\n"
            "Content-Length: 100\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as stalled:
            stalled.sendall(head + b'{"run_id": ')  # ... and nothing more
            # Meanwhile the endpoint answers others.
            with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as idle:
                headers = {"Authorization": f"Bearer {endpoint.token}"}
                status, _, _ = request(
                    port, "GET", f"{API}/runs/get?run_id={run_id}", None, headers
                )
                assert status == 200
                started = time.monotonic()
                assert stalled.recv(65536) == b""  # closed by the endpoint, not by us
                assert time.monotonic() - started < 10
                assert idle.recv(65536) == b""  # a silent connection is closed too
        assert store.get_run(run_id).data.tags.get("k") is None
    finally:
        endpoint.close()


# --- the real mlflow client still works -----------------------------------------------------


@pytest.mark.slow
def test_the_mlflow_client_logs_a_model_and_a_nested_run(
    project: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.integration.mlflow_env import client_python

    monkeypatch.setenv("MLFLOW_CLIENT_PYTHON", str(client_python()))
    # Credentials of some other MLflow server in the user's environment and in MLflow's
    # credentials file: the mlflow client would send them instead of the run's token.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "someone")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "elsewhere")
    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", "basic-auth")
    user_home = home / "user-home"
    (user_home / ".mlflow").mkdir(parents=True)
    (user_home / ".mlflow" / "credentials").write_text(
        "[mlflow]\nmlflow_tracking_username = team\nmlflow_tracking_password = team-secret\n"
    )
    monkeypatch.setenv("HOME", str(user_home))
    result = reprorun_cli("run", str(project), "-e", "nested", "--env-manager", "local")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "REFUSED" in result.stdout and "reprorun run --experiment-name" in result.stdout
    child_id = next(line.split()[1] for line in result.stdout.splitlines() if "CHILD" in line)
    from reprorun.tracking.store import open_store

    store = open_store()
    child = store.get_run(child_id)
    parent_id = child.data.tags["mlflow.parentRunId"]
    parent = store.get_run(parent_id)
    assert parent.info.status == RunStatus.FINISHED and child.info.status == RunStatus.FINISHED
    logged = {k: v for k, v in parent.data.metrics.items() if not k.startswith("system/")}
    assert parent.data.params["lr"] == "0.1" and logged == {"loss": 0.5, "acc": 0.9}
    assert child.data.params == {"fold": "1"} and child.data.metrics == {"fold_acc": 0.8}
    models = store.search_logged_models([parent.info.experiment_id])
    assert {(m.name, m.source_run_id, m.status.value) for m in models} == {
        ("model", parent_id, "READY"),
        ("fold_model", child_id, "READY"),
    }
    assert "somewhere-else" not in {e.name for e in store.search_experiments()}


# --- `reprorun server` / `reprorun ui` on loopback without auth -----------------------------


def test_a_web_page_cannot_drive_a_loopback_server(tmp_path: Path) -> None:
    with server_process(tmp_path / "srv") as srv:
        create = json.dumps({"name": "from-a-page"})
        for path in (f"{API}/experiments/create", "/ajax-api/2.0/mlflow/experiments/create"):
            for headers in (
                {"Content-Type": "text/plain"},  # a cross-site "simple" POST, Origin or not
                {"Content-Type": "text/plain", "Origin": "https://evil.example"},
                {"Content-Type": "application/x-www-form-urlencoded"},
                {"Content-Type": "multipart/form-data; boundary=x"},
                {},
                {"Content-Type": "application/json", "Origin": "https://evil.example"},
                {"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"},
                {"Content-Type": "application/json", "Host": f"evil.example:{srv.port}"},
            ):
                status, reply_headers, body = request(srv.port, "POST", path, create, headers)
                assert status in (403, 415), (path, headers, body)
                assert not any(h.lower().startswith("access-control-") for h in reply_headers)
            # An empty POST with its request in the query string is refused too.
            query = "?name=from-a-page"
            status, _, body = request(srv.port, "POST", path + query, None, {})
            assert status == 415, body
        ok = {"Content-Type": "application/json; charset=utf-8"}
        status, _, body = request(srv.port, "POST", f"{API}/experiments/create", create, ok)
        assert status == 200, body
        names = request(srv.port, "GET", f"{API}/experiments/search?max_results=100")[2]
        assert [e["name"] for e in json.loads(names)["experiments"]].count("from-a-page") == 1
