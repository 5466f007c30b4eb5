"""Browser tests: Debian's chromium driven by Playwright against a real ``reprorun server`` on
127.0.0.1, over a store seeded once per module (synthetic runs, plus one real ``reprorun run``
of the iris example from a git checkout).

Screenshots of the main pages go to ``docs/screenshots`` when ``--screenshots DIR`` is given
(``pytest tests/ui --screenshots docs/screenshots`` keeps the README's pictures current).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IRIS, reprorun_cli
from tests.integration.server_proc import ServerProcess, server_process

CHROMIUM = (
    os.environ.get("REPRORUN_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
)
# Headless chromium on a closed network: no background calls to Google's hosts, no GPU.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
REPO_URL = "https://github.com/reprorun-examples/iris"


@dataclass
class Seeded:
    server: ServerProcess
    experiment_id: str  # "workshop": the real iris run and a few synthetic ones
    big_experiment_id: str  # "sweep-10k": 10,000 runs
    iris_run: str  # the real run
    runs: dict[str, str]  # synthetic runs by name
    outside_file: Path  # a file next to the artifact root that must never be served

    @property
    def url(self) -> str:
        return self.server.url


def png_bytes(width: int = 24, height: int = 16) -> bytes:
    """A small valid PNG (a red-blue gradient) without any imaging library."""
    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 10 % 256, 40, 200 - y * 10)) for x in range(width))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _seed_synthetic(store: Any, experiment_id: str) -> dict[str, str]:
    from reprorun.tracking.artifacts import local_dir
    from reprorun.tracking.entities import Metric, RunStatus

    t0 = 1_780_000_000_000
    runs = {}
    for n, (name, depth, cp) in enumerate(
        [
            ("tree-depth-2", 2, 0.05),
            ("tree-depth-5", 5, 0.01),
            ("<script>alert(1)</script>", 3, 0.02),
        ]
    ):
        run = store.create_run(
            experiment_id,
            run_name=name,
            start_time=t0 + n * 60_000,
            params={"max_depth": str(depth), "ccp_alpha": str(cp)},
            tags={
                "mlflow.source.git.commit": f"{n + 1:040x}",
                "mlflow.source.git.repoURL": REPO_URL,
                "mlflow.project.entryPoint": "main",
                "team": "<b>ml</b>",
            },
        )
        rid = run.info.run_id
        metrics = [
            Metric("loss", 1.0 / (step + 1) + depth * 0.01, t0 + n * 60_000 + step * 1000, step)
            for step in range(40)
        ]
        metrics.append(Metric("accuracy", 0.80 + depth * 0.03, t0 + n * 60_000 + 40_000, 40))
        store.log_batch(rid, metrics=metrics)
        store.update_run(rid, status=RunStatus.FINISHED, end_time=t0 + n * 60_000 + 41_000)
        folder = local_dir(run.info.artifact_uri)
        (folder / "data").mkdir(parents=True, exist_ok=True)
        (folder / "notes.txt").write_text(f"depth {depth}\n<script>alert('x')</script>\n")
        (folder / "data" / "summary.json").write_text(json.dumps({"depth": depth, "ok": True}))
        (folder / "data" / "predictions.csv").write_text(
            'id,label,text\n1,setosa,"a, quoted"\n2,virginica,plain\n'
        )
        (folder / "confusion.png").write_bytes(png_bytes())
        runs[name] = rid
    return runs


def _seed_many(store: Any, experiment_id: str, count: int) -> None:
    from reprorun.tracking.entities import Metric, RunStatus

    t0 = 1_790_000_000_000
    for i in range(count):
        run = store.create_run(
            experiment_id,
            run_name=f"point-{i:05d}",
            start_time=t0 + i,
            params={"lr": str(i % 7)},
        )
        store.log_batch(run.info.run_id, metrics=[Metric("score", (i * 37) % 1000, t0 + i, 0)])
        store.update_run(run.info.run_id, status=RunStatus.FINISHED, end_time=t0 + i + 5)


def _real_iris_run(server: ServerProcess, workdir: Path) -> str:
    """``reprorun run`` of the iris example from a git checkout with a GitHub origin,
    logging into the server: the workshop's path."""
    checkout = workdir / "iris"
    shutil.copytree(IRIS, checkout)
    git = ["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "iris"], check=True)
    subprocess.run([*git, "remote", "add", "origin", REPO_URL + ".git"], check=True)
    env = dict(os.environ, REPRORUN_TRACKING_URI=server.url)
    result = reprorun_cli(
        "run",
        str(checkout),
        "--env-manager",
        "local",
        "--experiment-name",
        "workshop",
        "--run-name",
        "iris-real",
        "-P",
        "max_depth=3",
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for line in result.stderr.splitlines():
        if " started" in line and "run " in line:
            return line.split("run ", 1)[1].split()[0]
    raise AssertionError(f"no run id in:\n{result.stderr}")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    from reprorun.tracking.store import close_stores, open_store

    workdir = tmp_path_factory.mktemp("ui-server")
    artifacts = workdir / "artifacts"
    store = open_store(f"sqlite:///{workdir / 'store.db'}", artifact_root=artifacts.as_uri())
    experiment_id = store.create_experiment("workshop")
    runs = _seed_synthetic(store, experiment_id)
    big = store.create_experiment("sweep-10k")
    _seed_many(store, big, 10_000)
    store.create_experiment("to-rename")
    close_stores()
    outside = workdir / "secret.txt"
    outside.write_text("never served")
    with server_process(workdir) as server:
        iris_run = _real_iris_run(server, workdir)
        yield Seeded(server, experiment_id, big, iris_run, runs, outside)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import expect, sync_playwright

    # Live refresh polls every few seconds: give assertions time to see it on a busy machine.
    expect.set_options(timeout=15_000)

    if not Path(CHROMIUM).exists():
        pytest.fail(f"No chromium at {CHROMIUM}: apt-get install chromium (.ci/run does).")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, seeded: Seeded) -> Iterator[Any]:
    """A fresh browser context per test; any page error or console error fails the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    context.set_default_timeout(15_000)
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))

    def on_dialog(dialog: Any) -> None:
        # The UI asks before deleting (a confirm, accepted here); any other dialog, such as
        # an alert from injected script, fails the test.
        if dialog.type == "confirm":
            dialog.accept()
            return
        problems.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    tab.on("dialog", on_dialog)
    outside: list[str] = []
    # No request may leave the machine: everything the page loads comes from the server.
    tab.on(
        "request",
        lambda request: (
            None
            if request.url.startswith((seeded.url, "data:", "blob:", "about:"))
            else outside.append(request.url)
        ),
    )
    yield tab
    context.close()
    assert not outside, f"requests left the server: {outside}"
    assert not problems, problems


@pytest.fixture(scope="session")
def screenshots(request: pytest.FixtureRequest) -> Path | None:
    folder = request.config.getoption("--screenshots")
    if not folder:
        return None
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    return path
