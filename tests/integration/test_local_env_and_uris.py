"""Projects written for MLflow run unchanged: ``--env-manager local`` is the caller's python
(an activated venv, not the interpreter reprorun runs on), and a ``path`` parameter given a
URL is downloaded first. Real `reprorun run` processes, a real venv, a real HTTP server."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reprorun.tracking.entities import SystemTags
from reprorun.tracking.store import open_store
from tests.conftest import make_project, reprorun_cli

LISTING = """
import json, os, sys
names = []
for entry in sys.path:
    try:
        with os.scandir(entry or ".") as found:
            names += [e.name for e in found if e.name.endswith((".dist-info", ".egg-info"))]
    except OSError:
        pass
print(json.dumps(sorted(names)))
"""


def run_id_in(stderr: str) -> str:
    for word in stderr.split():
        if len(word) == 32 and all(c in "0123456789abcdef" for c in word):
            return word
    raise AssertionError(f"no run id in:\n{stderr}")


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv made with `python -m venv` holding a marker module and its dist-info."""
    root = tmp_path_factory.mktemp("project-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    (site,) = root.glob("lib/python3*/site-packages")
    (site / "marker.py").write_text("VALUE = 'from the venv'\n")
    (site / "marker-1.0.dist-info").mkdir()
    (site / "marker-1.0.dist-info" / "METADATA").write_text("Name: marker\nVersion: 1.0\n")
    return root


LOCAL_PROJECT = """\
name: local
entry_points:
  main:
    command: python -c "import marker, sys; print(marker.VALUE, sys.prefix)"
"""


def activated(venv: Path, *, path: bool = True) -> dict[str, str]:
    env = dict(os.environ)
    env["VIRTUAL_ENV"] = str(venv)
    if path:
        env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    return env


@pytest.mark.parametrize("path", [True, False], ids=["PATH+VIRTUAL_ENV", "VIRTUAL_ENV only"])
def test_local_env_is_the_callers_activated_venv(
    home: Path, tmp_path: Path, venv: Path, path: bool
) -> None:
    project = make_project(tmp_path / "p", LOCAL_PROJECT)
    result = reprorun_cli(
        "run", str(project), "--env-manager", "local", env=activated(venv, path=path)
    )
    assert result.returncode == 0, result.stderr
    assert f"from the venv {venv}" in result.stdout
    run = open_store().get_run(run_id_in(result.stderr))
    # What the run records is the venv's python and packages, not reprorun's interpreter's.
    listing = subprocess.run(
        [str(venv / "bin" / "python"), "-c", LISTING], capture_output=True, text=True, check=True
    ).stdout
    names = json.loads(listing)
    assert "marker-1.0.dist-info" in names
    expected = hashlib.sha256("\n".join(names).encode()).hexdigest()
    assert run.data.tags[SystemTags.ENV_HASH] == expected


def test_local_env_fingerprint_follows_the_callers_packages(
    home: Path, tmp_path: Path, venv: Path
) -> None:
    project = make_project(
        tmp_path / "p",
        "name: plain\nentry_points:\n  main:\n    command: python -c 'print(1)'\n",
    )
    outside = reprorun_cli("run", str(project), "--env-manager", "local")
    inside = reprorun_cli("run", str(project), "--env-manager", "local", env=activated(venv))
    assert outside.returncode == 0 and inside.returncode == 0, outside.stderr + inside.stderr
    store = open_store()
    parts = [
        json.loads(store.get_run(run_id_in(r.stderr)).data.tags["reprorun.fingerprint.parts"])
        for r in (outside, inside)
    ]
    assert parts[0]["env"] != parts[1]["env"]
    # The same venv again: the same environment, so --reuse finds the run.
    again = reprorun_cli(
        "run", str(project), "--env-manager", "local", "--reuse", env=activated(venv)
    )
    assert again.returncode == 0, again.stderr
    assert run_id_in(inside.stderr) in again.stderr
