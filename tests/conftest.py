"""Shared fixtures: every test gets its own reprorun home and a clean environment."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from reprorun.app import Reprorun
from reprorun.tracking.store import close_stores
from tests import pg  # reads REPRORUN_TEST_POSTGRES_URL before clean_environ hides it

REPO_ROOT = Path(__file__).resolve().parent.parent
IRIS = REPO_ROOT / "examples" / "iris"


@pytest.fixture(autouse=True)
def clean_environ(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """No REPRORUN_*/MLFLOW_* from the outside; a fresh REPRORUN_HOME; stores closed after."""
    for key in list(os.environ):
        if key.startswith(("REPRORUN_", "MLFLOW_")):
            monkeypatch.delenv(key)
    home = tmp_path_factory.mktemp("reprorun-home")
    monkeypatch.setenv("REPRORUN_HOME", str(home))
    # Environment builds report their steps as plain lines, so tests can tell a build from a reuse.
    monkeypatch.setenv("REPRORUN_PROGRESS", "plain")
    yield home
    close_stores()


@pytest.fixture
def home(clean_environ: Path) -> Path:
    return clean_environ


@pytest.fixture
def app(clean_environ: Path) -> Reprorun:
    """The application object over this test's embedded store (in its fresh home), built as
    the CLI and the server build theirs; ``app.store`` opens the store on first use."""
    return Reprorun()


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Stop a server a test started: SIGTERM, then SIGKILL if it is still there after
    ``grace`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def reprorun_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the real `reprorun` command in a subprocess (the installed console script's code)."""
    return subprocess.run(
        [sys.executable, "-m", "reprorun", *args],
        cwd=cwd,
        env=env or dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def make_project(root: Path, mlproject: str, files: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "MLproject").write_text(mlproject)
    for name, text in (files or {}).items():
        (root / name).write_text(text)
    return root


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL of an empty PostgreSQL schema of this test's own, dropped after it.

    Needs REPRORUN_TEST_POSTGRES_URL (``.ci/run`` sets it); fails saying how to set it otherwise.
    See tests/pg.py.
    """
    with pg.fresh_schema() as url:
        yield url


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--screenshots",
        metavar="DIR",
        default=None,
        help="Browser tests save screenshots of the UI's main pages into DIR.",
    )


@contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A small file system of the test's own at ``folder`` (tests run as root in CI): a real
    ENOSPC once full, EROFS once remounted read-only; unmounted after (lazily: files a store
    still holds open do not keep it mounted)."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
