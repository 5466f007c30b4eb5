"""docs/backends.md's example plugin, installed as a package would be, runs a real run:
`reprorun run --backend background --env-manager project-venv` finds both by entry points."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
import tomllib

from reprorun.backends.job import stored_log
from reprorun.tracking.entities import RunStatus, SystemTags
from reprorun.tracking.store import open_store
from tests.conftest import make_project, reprorun_cli

DOCS = Path(__file__).resolve().parents[2] / "docs" / "backends.md"


def install_example(site: Path) -> None:
    """The docs' Python blocks as the package's files (each names its file on its first
    line) and its pyproject's entry points as an installed distribution's."""
    blocks = re.findall(r"```(python|toml)\n(.*?)```", DOCS.read_text(), re.S)
    files = [text for kind, text in blocks if kind == "python" and text.startswith("# ")]
    assert len(files) == 2
    for text in files:
        path = site / text.splitlines()[0][2:]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (site / "reprorun_background" / "__init__.py").write_text("")
    (toml,) = [text for kind, text in blocks if kind == "toml"]
    groups = tomllib.loads(toml)["project"]["entry-points"]
    info = site / "reprorun_background-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: reprorun-background\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in points.items())
            for group, points in groups.items()
        )
    )


@pytest.mark.slow  # two real runs
def test_the_documented_plugin_runs_a_project(home: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    install_example(site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    project = make_project(
        tmp_path / "proj",
        "name: plugged\nentry_points:\n  main:\n    command: 'python --version && echo run=$REPRORUN_RUN_ID'\n",
    )
    # Without its .venv the environment manager says what to do; no run is left behind.
    refused = reprorun_cli(
        "run", str(project), "--backend", "background", "--env-manager", "project-venv", env=env
    )
    assert refused.returncode == 2, refused.stderr
    assert f"{project / '.venv'} holds no virtual environment: create it first." in refused.stderr

    python = project / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\necho "the project\'s .venv"\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    config = tmp_path / "background.json"
    config.write_text('{"niceness": 5}')
    done = reprorun_cli(
        "run",
        str(project),
        "--backend",
        "background",
        "--backend-config",
        str(config),
        "--env-manager",
        "project-venv",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    run_id = re.search(r"run ([0-9a-f]{32}) started", done.stderr)
    assert run_id, done.stderr
    run = open_store().get_run(run_id[1])
    assert run.info.status is RunStatus.FINISHED
    tags = run.data.tags
    assert tags[SystemTags.BACKEND] == "background" and tags[SystemTags.ENV] == "project-venv"
    assert tags["reprorun.backend.config"] == '{"niceness": 5}'
    assert tags[SystemTags.EXIT_CODE] == "0"
    log = stored_log(run.info.artifact_uri, None)
    assert log is not None
    assert f"the project's .venv\nPython {sys.version.split()[0]}\nrun={run.info.run_id}\n" in (
        log.decode()
    )
