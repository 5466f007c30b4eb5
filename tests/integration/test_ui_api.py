"""The web UI's server side on a real ``reprorun server``: the page and its assets, and the
``/ui-api`` endpoints the page reads (summaries, keys, log follow, artifact files, models),
with their bad input. The page itself is tested in a browser in ``tests/ui``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reprorun.server.ui import LOG_CHUNK, PREVIEW_BYTES, STATIC
from reprorun.tracking.entities import Metric
from tests.integration.server_proc import ServerProcess, server_process


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with server_process(tmp_path_factory.mktemp("ui-api")) as running:
        yield running


@pytest.fixture
def store(server: ServerProcess) -> Any:
    from reprorun.tracking.store.rest import RestStore

    return RestStore(server.url)


def get(server: ServerProcess, path: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(server.url + path) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def get_json(server: ServerProcess, path: str) -> tuple[int, Any]:
    status, _, body = get(server, path)
    return status, json.loads(body)


def run_folder(server: ServerProcess, run: Any) -> Path:
    relative = run.info.artifact_uri.removeprefix("mlflow-artifacts:/")
    return server.artifacts / relative


def test_the_page_and_its_assets_come_from_the_server_only(server: ServerProcess) -> None:
    status, headers, body = get(server, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    html = body.decode()
    assert "Content-Security-Policy" in html and "default-src 'self'" in html
    assert headers["x-frame-options"] == "DENY"
    for name in ("app.js", "app.css", "favicon.svg"):
        status, _, _ = get(server, f"/static/{name}")
        assert status == 200, name
    # No asset names another host: no CDN, no web font, no analytics.
    for path in STATIC.iterdir():
        text = path.read_text()
        # (a template like `https://${host}` builds a link from a run's tag; it is not a request)
        hosts = set(re.findall(r"https?://([^/\"'\s)$]+)", text)) - {"www.w3.org"}
        assert not hosts, (path.name, hosts)
    status, _, _ = get(server, "/static/../app.py")
    assert status == 404


def test_experiment_summaries_and_keys(server: ServerProcess, store: Any) -> None:
    experiment_id = store.create_experiment("summaries")
    run = store.create_run(experiment_id, params={"lr": "0.1"})
    store.log_metric(run.info.run_id, Metric("acc", 0.9, 1))
    status, body = get_json(server, "/ui-api/experiments")
    assert status == 200
    found = {e["name"]: e for e in body["experiments"]}
    assert found["summaries"]["run_count"] == 1
    assert found["summaries"]["last_activity"] >= run.info.start_time
    status, keys = get_json(server, f"/ui-api/keys?experiment_id={experiment_id}")
    assert (keys["params"], keys["metrics"]) == (["lr"], ["acc"])

    assert get_json(server, "/ui-api/experiments?view=sideways")[0] == 400
    status, body = get_json(server, "/ui-api/keys")
    assert status == 400 and "experiment_id" in body["message"]
    status, body = get_json(server, "/ui-api/keys?experiment_id=banana")
    assert status == 404 and "banana" in body["message"]


def test_the_log_is_followed_from_an_offset(server: ServerProcess, store: Any) -> None:
    run = store.create_run("0")
    path = f"/ui-api/runs/{run.info.run_id}/log"
    status, body = get_json(server, path)
    assert status == 200 and body["exists"] is False and body["status"] == "RUNNING"

    log = run_folder(server, run) / "logs" / "run.log"
    log.parent.mkdir(parents=True)
    log.write_text("line 1\n")
    _, first = get_json(server, path)
    assert (first["text"], first["offset"], first["size"]) == ("line 1\n", 7, 7)
    with log.open("a") as out:
        out.write("line 2 é\n")
    _, second = get_json(server, f"{path}?offset={first['offset']}")
    assert second["text"] == "line 2 é\n"
    assert second["offset"] == second["size"] == len("line 1\nline 2 é\n".encode())
    assert get_json(server, f"{path}?offset=many")[0] == 400

    # A huge log: the first request brings only its tail; the page says what it left out.
    log.write_bytes(b"x" * (LOG_CHUNK * 3) + b"the end\n")
    _, tail = get_json(server, path)
    assert tail["start"] == LOG_CHUNK * 2 + len(b"the end\n")
    assert tail["text"].endswith("the end\n") and len(tail["text"]) == LOG_CHUNK


def test_artifacts_are_served_from_the_run_folder_only(server: ServerProcess, store: Any) -> None:
    run = store.create_run("0")
    folder = run_folder(server, run)
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "table.csv").write_text("a,b\n1,2\n")
    (folder / "page.html").write_text("<script>alert(1)</script>")
    (folder / "plot.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (folder / "big.txt").write_bytes(b"y" * (PREVIEW_BYTES + 10))
    secret = server.workdir / "secret.txt"
    secret.write_text("never served")
    os.symlink(secret, folder / "link.txt")
    base = f"/ui-api/runs/{run.info.run_id}/artifact?path="

    status, headers, body = get(server, base + "sub/table.csv")
    assert (status, body) == (200, b"a,b\n1,2\n")
    assert headers["content-disposition"].startswith("attachment")
    # HTML (or SVG) from a run is a download, never a page of the UI's origin.
    status, headers, _ = get(server, base + "page.html&inline=1")
    assert headers["content-type"] == "application/octet-stream"
    assert headers["content-disposition"].startswith("attachment")
    assert headers["x-content-type-options"] == "nosniff"
    status, headers, _ = get(server, base + "plot.png&inline=1")
    assert (headers["content-type"], headers["content-disposition"][:6]) == ("image/png", "inline")
    status, headers, body = get(server, base + "big.txt&preview=1")
    assert len(body) == PREVIEW_BYTES and headers["x-truncated"] == "1"

    for bad in ("../../../secret.txt", "..%2F..%2Fsecret.txt", "%252e%252e/x", "/etc/passwd"):
        status, _, body = get(server, base + bad)
        assert status == 400, bad
        assert b"never served" not in body and b"artifact" in body
    status, _, body = get(server, base + "link.txt")
    assert status == 400 and b"leaves the run's artifact folder" in body
    status, _, body = get(server, base + "sub")
    assert status == 404 and b"is a folder" in body
    status, _, body = get(server, base + "missing.txt")
    assert status == 404 and b"not there" in body
    status, _, body = get(server, base)
    assert status == 400 and b"?path=" in body
    status, _, body = get(server, "/ui-api/runs/ffffffffffffffffffffffffffffffff/artifact?path=x")
    assert status == 404 and b"Run with id=ffffffffffffffffffffffffffffffff not found" in body


def test_models_of_a_run_with_their_description(server: ServerProcess, store: Any) -> None:
    run = store.create_run("0")
    # MLflow 3: a logged model of its own, linked to the run.
    model = store.create_logged_model("0", name="tree", source_run_id=run.info.run_id)
    model_folder = server.artifacts / model.artifact_location.removeprefix("mlflow-artifacts:/")
    model_folder.mkdir(parents=True, exist_ok=True)
    (model_folder / "MLmodel").write_text("flavors:\n  sklearn: {}\n")
    # An R crate model (mlflow_log_model(carrier::crate(...))): no model_type of its own.
    crate = store.create_logged_model("0", name="crate", source_run_id=run.info.run_id)
    crate_folder = server.artifacts / crate.artifact_location.removeprefix("mlflow-artifacts:/")
    crate_folder.mkdir(parents=True, exist_ok=True)
    (crate_folder / "MLmodel").write_text("flavors:\n  crate:\n    model: crate.bin\n")
    # MLflow 2 (and reprorun.log_model): files among the run's artifacts, listed in a tag.
    (run_folder(server, run) / "old").mkdir(parents=True)
    (run_folder(server, run) / "old" / "MLmodel").write_text("flavors:\n  python_function: {}\n")
    history = [{"artifact_path": "old", "model_uuid": "u1", "flavors": {"python_function": {}}}]
    store.set_tag(run.info.run_id, "mlflow.log-model.history", json.dumps(history))

    status, body = get_json(server, f"/ui-api/runs/{run.info.run_id}/models")
    assert status == 200
    by_name = {m["name"]: m for m in body["models"]}
    assert by_name["tree"]["uri"] == f"runs:/{run.info.run_id}/tree"
    assert "sklearn" in by_name["tree"]["description"]
    assert by_name["old"]["model_type"] == "python_function"
    assert by_name["old"]["load"] == f'reprorun.load_model("runs:/{run.info.run_id}/old")'
    assert by_name["crate"]["model_type"] == "crate"  # from its MLmodel: an R model
    assert by_name["crate"]["load"].startswith(
        f'mlflow_load_model("runs:/{run.info.run_id}/crate") in R'
    )
    assert "python_function" in by_name["old"]["description"]


def test_the_browser_api_takes_json_bodies_only(server: ServerProcess) -> None:
    """Another site's page could post a form to 127.0.0.1; it cannot post JSON without the
    browser asking the server first, so the UI's path accepts JSON only."""

    def post(path: str, content_type: str) -> int:
        request = urllib.request.Request(
            server.url + path,
            data=b'{"name": "csrf-' + content_type.encode().replace(b"/", b"-") + b'"}',
            headers={"Content-Type": content_type},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert post("/ajax-api/2.0/mlflow/experiments/create", "text/plain") == 415
    assert (
        post("/ajax-api/2.0/mlflow/experiments/create", "application/x-www-form-urlencoded") == 415
    )
    assert post("/ajax-api/2.0/mlflow/experiments/create", "application/json") == 200
    # The REST API proper too (a page's POST may lack an Origin); MLflow's clients send JSON.
    assert post("/api/2.0/mlflow/experiments/create", "text/plain") == 415
    assert post("/api/2.0/mlflow/experiments/create", "application/json; charset=utf-8") == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "http://127.0.0.1:1"},  # another port is another origin
    ],
)
def test_a_page_of_another_site_cannot_change_the_server(
    server: ServerProcess, headers: dict[str, str]
) -> None:
    """A no-preflight POST (text/plain) from another site's page, to any API path."""
    for path in ("/api/2.0/mlflow/experiments/create", "/ajax-api/2.0/mlflow/experiments/create"):
        request = urllib.request.Request(
            server.url + path,
            data=b'{"name": "cross-site"}',
            headers={"Content-Type": "text/plain", **headers},
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request)
        assert refused.value.code == 403
        assert "Cross-site request refused" in json.loads(refused.value.read())["message"]
    # The server's own page may (same origin), and anyone may read (links to runs work).
    own = urllib.request.Request(
        server.url + "/ajax-api/2.0/mlflow/experiments/create",
        data=json.dumps({"name": f"same-origin-{time.monotonic_ns()}"}).encode(),
        headers={
            "Content-Type": "application/json",
            "Origin": server.url,
            "Sec-Fetch-Site": "same-origin",
        },
        method="POST",
    )
    with urllib.request.urlopen(own) as response:
        assert response.status == 200
    read = urllib.request.Request(server.url + "/ui-api/experiments", headers=headers)
    with urllib.request.urlopen(read) as response:
        assert response.status == 200


def test_proxied_artifacts_download_as_bytes_never_as_pages(server: ServerProcess) -> None:
    base = "/api/2.0/mlflow-artifacts/artifacts/xss"
    for name, body in (("page.html", b"<script>alert(1)</script>"), ("img.svg", b"<svg/>")):
        put = urllib.request.Request(server.url + f"{base}/{name}", data=body, method="PUT")
        with urllib.request.urlopen(put):
            pass
        status, headers, got = get(server, f"{base}/{name}")
        assert (status, got) == (200, body)
        assert headers["content-type"] == "application/octet-stream"
        assert headers["content-disposition"].startswith("attachment")
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["content-security-policy"] == "sandbox"


def test_reprorun_ui_serves_the_embedded_store_and_opens_the_browser(
    tmp_path: Path, home: Path
) -> None:
    from reprorun.tracking.store import close_stores, open_store
    from tests.conftest import reprorun_cli, stop_process
    from tests.integration.server_proc import free_port

    open_store().create_experiment("seen-by-the-ui")  # the embedded default store
    close_stores()
    opened = tmp_path / "opened"
    browser = tmp_path / "browser.sh"  # Python's webbrowser runs $BROWSER with the URL
    browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    browser.chmod(0o755)
    port = free_port()
    env = dict(os.environ, BROWSER=str(browser))
    proc = subprocess.Popen(
        [sys.executable, "-m", "reprorun", "ui", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not (opened.exists() and opened.read_text().strip()):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the browser was never opened"
            time.sleep(0.1)
        url = opened.read_text().strip()
        assert url == f"http://127.0.0.1:{port}/"
        with urllib.request.urlopen(url + "ui-api/experiments") as response:
            names = [e["name"] for e in json.loads(response.read())["experiments"]]
        assert "seen-by-the-ui" in names
        # The port is now taken: a second UI says so and how to pick another.
        busy = reprorun_cli("ui", "--port", str(port), "--no-browser", env=env)
        assert busy.returncode != 0
        assert f"Port {port}" in busy.stderr and "--port 0" in busy.stderr
        assert "Traceback" not in busy.stderr
    finally:
        stop_process(proc)
        if proc.stderr:
            proc.stderr.close()
    # With a server as the tracking URI, the UI is that server's page: nothing is started.
    remote = reprorun_cli(
        "ui", "--no-browser", env=dict(env, REPRORUN_TRACKING_URI="http://127.0.0.1:9")
    )
    assert remote.returncode == 0 and "http://127.0.0.1:9/" in remote.stderr


def test_the_log_says_why_the_run_ended(server: ServerProcess, store: Any) -> None:
    from reprorun.tracking.entities import RunStatus, SystemTags

    run = store.create_run("0")
    path = f"/ui-api/runs/{run.info.run_id}/log"
    assert get_json(server, path)[1]["exit_reason"] is None  # still running
    store.set_tag(run.info.run_id, SystemTags.EXIT_REASON, "timeout")
    store.update_run(run.info.run_id, status=RunStatus.FAILED)
    _, body = get_json(server, path)
    assert (body["status"], body["exit_reason"]) == ("FAILED", "timeout")
