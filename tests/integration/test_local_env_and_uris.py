"""Projects written for MLflow run unchanged: ``--env-manager local`` is the caller's python
(an activated venv, not the interpreter reprorun runs on), and a ``path`` parameter given a
URL is downloaded first. Real `reprorun run` processes, a real venv, a real HTTP server."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
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


URI_PROJECT = """\
name: uris
entry_points:
  main:
    parameters:
      data: path
      where: {type: uri, default: "s3://bucket/as-is"}
    command: python -c "import sys; print(open(sys.argv[1]).read(), sys.argv[1], sys.argv[2])" {data} {where}
"""


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving a folder: (its base URL, the folder)."""
    folder = tmp_path / "served"
    (folder / "bucket").mkdir(parents=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def no_proxy() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return env


def test_path_parameter_given_a_url_is_downloaded_and_the_run_records_the_url(
    home: Path, tmp_path: Path, served: tuple[str, Path]
) -> None:
    base, folder = served
    (folder / "train.csv").write_text("a,b\n1,2")
    project = make_project(tmp_path / "p", URI_PROJECT)
    url = f"{base}/train.csv"
    first = reprorun_cli(
        "run", str(project), "--env-manager", "local", "-P", f"data={url}", env=no_proxy()
    )
    assert first.returncode == 0, first.stderr
    content, local, where = first.stdout.strip().rsplit(maxsplit=2)
    assert content == "a,b\n1,2"
    assert Path(local).name == "train.csv" and Path(local).is_relative_to(home / "downloads")
    assert where == "s3://bucket/as-is"  # a uri parameter is passed as it is
    run = open_store().get_run(run_id_in(first.stderr))
    assert run.data.params["data"] == url  # what the user gave, as MLflow logs it
    parts = json.loads(run.data.tags["reprorun.fingerprint.parts"])
    assert parts["params"]["data"] == "(content: see data)"
    # The content counts, as a local path's: the same content is reused, a new one is not.
    again = reprorun_cli(
        "run",
        str(project),
        "--env-manager",
        "local",
        "-P",
        f"data={url}",
        "--reuse",
        env=no_proxy(),
    )
    assert again.returncode == 0 and run.info.run_id in again.stderr, again.stderr
    (folder / "train.csv").write_text("a,b\n3,4")
    changed = reprorun_cli(
        "run",
        str(project),
        "--env-manager",
        "local",
        "-P",
        f"data={url}",
        "--reuse",
        env=no_proxy(),
    )
    assert changed.returncode == 0, changed.stderr
    assert run.info.run_id not in changed.stderr
    assert "a,b\n3,4" in changed.stdout


def test_a_url_that_cannot_be_downloaded_names_the_parameter_and_the_url(
    home: Path, tmp_path: Path, served: tuple[str, Path]
) -> None:
    base, _folder = served
    project = make_project(tmp_path / "p", URI_PROJECT)
    url = f"{base}/missing.csv"
    result = reprorun_cli(
        "run", str(project), "--env-manager", "local", "-P", f"data={url}", env=no_proxy()
    )
    assert result.returncode != 0
    assert "'data'" in result.stderr and url in result.stderr and "404" in result.stderr
    assert "Traceback" not in result.stderr
    assert open_store().search_runs([]) == []  # bad input leaves no run behind


def test_a_url_whose_name_leads_out_of_the_downloads_folder_stays_in_it(
    home: Path, tmp_path: Path, served: tuple[str, Path]
) -> None:
    """An encoded '/' in the URL's last segment must not become part of the file's path."""
    base, folder = served
    (folder / "escape.txt").write_text("payload")
    project = make_project(tmp_path / "p", URI_PROJECT)
    for url in (f"{base}/a/b/..%2F..%2F..%2Fescape.txt", f"{base}/%2Fescape.txt"):
        result = reprorun_cli(
            "run", str(project), "--env-manager", "local", "-P", f"data={url}", env=no_proxy()
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("payload ")
        local = Path(result.stdout.split()[1])
        assert local.is_relative_to(home / "downloads") and local.name == "escape.txt"
    written = [p for p in tmp_path.parent.rglob("escape.txt") if "downloads" not in p.parts]
    assert written == [folder / "escape.txt"]
    assert not Path("/escape.txt").exists()


def test_s3_path_is_downloaded_with_boto3(
    home: Path, tmp_path: Path, served: tuple[str, Path]
) -> None:
    base, folder = served
    (folder / "bucket" / "data.txt").write_text("from s3")
    project = make_project(tmp_path / "p", URI_PROJECT)
    env = no_proxy()
    env.update(
        MLFLOW_S3_ENDPOINT_URL=base,
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE="/dev/null",  # nothing of the developer's own AWS set-up
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
    )
    env.pop("AWS_PROFILE", None)
    result = reprorun_cli(
        "run", str(project), "--env-manager", "local", "-P", "data=s3://bucket/data.txt", env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("from s3 ")


def test_gs_path_without_google_cloud_storage_says_what_to_install(
    home: Path, tmp_path: Path
) -> None:
    project = make_project(tmp_path / "p", URI_PROJECT)
    # google-cloud-storage made unimportable, whether this machine has it or not.
    shadow = tmp_path / "shadow" / "google" / "cloud" / "storage"
    shadow.mkdir(parents=True)
    (shadow.parent.parent / "__init__.py").write_text("")
    (shadow.parent / "__init__.py").write_text("")
    (shadow / "__init__.py").write_text("raise ImportError('not installed (test)')\n")
    pythonpath = os.pathsep.join(
        p for p in (str(tmp_path / "shadow"), os.environ.get("PYTHONPATH")) if p
    )
    env = {**os.environ, "PYTHONPATH": pythonpath}
    result = reprorun_cli(
        "run", str(project), "--env-manager", "local", "-P", "data=gs://b/k", env=env
    )
    assert result.returncode != 0
    assert "google-cloud-storage" in result.stderr and "gs://b/k" in result.stderr
    assert "Traceback" not in result.stderr
