"""Artifact paths stay inside the folder they are asked under, through every way in: the
server's REST listing, its artifact proxy and web UI, the per-run API, the Python API and the
CLI. A run's code can plant symbolic links in its artifact folder (to /etc, to another run,
to a file elsewhere): none is listed, read, downloaded or written through. Links inside the
folder are followed (a linked folder's files are listed and downloaded under its name) except
a link back to a folder the path already passes through, which is listed with no entries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest

from reprorun.errors import UserInputError
from reprorun.server.files import resolve_under
from reprorun.tracking import artifacts, fluent
from reprorun.tracking.mlflow_api.api import MlflowApi
from reprorun.tracking.mlflow_api.context import ArtifactUris
from reprorun.tracking.mlflow_api.errors import ApiError
from reprorun.tracking.mlflow_api.routing import API
from reprorun.tracking.store.database import SqliteDatabase
from reprorun.tracking.store.sql import SqlStore
from tests.conftest import reprorun_cli
from tests.integration.server_proc import ServerProcess, server_process
from tests.integration.test_server import assert_error, call, ok, send

SECRET = "secret outside the artifact folder\n"


def plant(folder: Path, outside: Path, other_run: Path) -> None:
    """A run's artifacts with links out (and in), as hostile run code could leave them."""
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "real.txt").write_text("real\n")
    (folder / "top.txt").write_text("top\n")
    (folder / "etc").symlink_to("/etc")
    (folder / "secret.txt").symlink_to(outside / "secret.txt")
    (folder / "outdir").symlink_to(outside)
    (folder / "other").symlink_to(other_run)
    (folder / "dangling").symlink_to(outside / "nothing-here")
    (folder / "sub" / "up").symlink_to("../..")  # the run's parent folder
    (folder / "inner.txt").symlink_to("sub/real.txt")  # inside: shown as its target
    (folder / "innerdir").symlink_to("sub")
    (folder / "sub" / "loop").symlink_to("..")  # inside, but a loop: listed, not entered


TOP = {"inner.txt", "innerdir", "sub", "top.txt"}
INSIDE = TOP | {"sub/real.txt", "sub/loop", "innerdir/real.txt", "innerdir/loop"}
LOOPS = ["sub/loop", "innerdir/loop", "innerdir/loop/sub/loop"]
OUT = [
    "etc", "secret.txt", "outdir", "other", "other/theirs.txt", "dangling", "sub/up",
    "etc/passwd", "outdir/x",
]  # fmt: skip


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_text(SECRET)
    return folder


@pytest.fixture
def local_run(tmp_path: Path, outside: Path) -> Iterator[tuple[SqlStore, str, Path]]:
    store = SqlStore(SqliteDatabase(str(tmp_path / "s.db")), (tmp_path / "art").as_uri())
    other = store.create_run("0")
    other_dir = artifacts.local_dir(other.info.artifact_uri)
    other_dir.mkdir(parents=True)
    (other_dir / "theirs.txt").write_text("another run's file\n")
    run = store.create_run("0")
    folder = artifacts.local_dir(run.info.artifact_uri)
    plant(folder, outside, other_dir)
    yield store, run.info.run_id, folder
    store.close()


def test_listing_omits_links_out_and_enters_linked_folders_inside_once(
    local_run: tuple[SqlStore, str, Path],
) -> None:
    store, run_id, _ = local_run
    uri = store.get_run(run_id).info.artifact_uri
    listed = {f.path: f for f in artifacts.list_artifacts(uri, recursive=True)}
    assert set(listed) == INSIDE
    assert listed["inner.txt"].file_size == len("real\n")
    assert listed["innerdir"].is_dir and listed["innerdir/loop"].is_dir
    assert listed["innerdir/real.txt"].file_size == len("real\n")
    assert {f.path for f in artifacts.list_artifacts(uri)} == TOP
    linked = {f.path for f in artifacts.list_artifacts(uri, "innerdir", recursive=True)}
    assert linked == {"innerdir/real.txt", "innerdir/loop"}
    for path in LOOPS:  # asked for directly, a loop has no entries either
        assert artifacts.list_artifacts(uri, path, recursive=True) == []


def test_downloading_a_linked_folder_copies_its_files(
    local_run: tuple[SqlStore, str, Path], tmp_path: Path
) -> None:
    store, run_id, _ = local_run
    uri = store.get_run(run_id).info.artifact_uri
    target = artifacts.download(uri, "innerdir", tmp_path / "dl")
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == [
        "loop",
        "real.txt",
    ]
    assert (target / "real.txt").read_text() == "real\n"
    assert list((target / "loop").iterdir()) == []


@pytest.mark.parametrize("path", OUT)
def test_paths_through_links_out_are_refused_for_listing_and_download(
    local_run: tuple[SqlStore, str, Path], tmp_path: Path, path: str
) -> None:
    store, run_id, _ = local_run
    uri = store.get_run(run_id).info.artifact_uri
    with pytest.raises(UserInputError, match="out of the artifact folder"):
        artifacts.list_artifacts(uri, path)
    with pytest.raises(UserInputError):
        artifacts.download(uri, path, tmp_path / "dl")
    assert not (tmp_path / "dl").exists()


def test_downloading_the_whole_folder_copies_only_what_is_inside(
    local_run: tuple[SqlStore, str, Path], tmp_path: Path
) -> None:
    store, run_id, _ = local_run
    target = artifacts.download(store.get_run(run_id).info.artifact_uri, "", tmp_path / "dl")
    copied = {p.relative_to(target).as_posix() for p in target.rglob("*")}
    assert copied == INSIDE
    assert (target / "innerdir" / "real.txt").read_text() == "real\n"
    assert not any(p.is_symlink() for p in target.rglob("*"))
    assert SECRET not in "".join(p.read_text() for p in target.rglob("*") if p.is_file())


def test_a_path_through_a_link_out_is_refused_even_when_it_leads_back_in(
    local_run: tuple[SqlStore, str, Path], outside: Path, tmp_path: Path
) -> None:
    """The listing omits ``outdir`` (a link out), so nothing is read through it, even where
    the folder outside links back in: each step of a path is checked, not only its end."""
    store, run_id, folder = local_run
    uri = store.get_run(run_id).info.artifact_uri
    (outside / "back").symlink_to(folder / "sub")
    for path in ("outdir/back", "outdir/back/real.txt"):
        with pytest.raises(UserInputError, match="out of the artifact folder"):
            artifacts.list_artifacts(uri, path)
        with pytest.raises(UserInputError, match="out of the artifact folder"):
            artifacts.download(uri, path, tmp_path / "dl")
        with pytest.raises(ApiError, match="leaves the artifact root"):
            resolve_under(folder.resolve(), path)
    assert not (tmp_path / "dl").exists()


def test_downloading_into_the_folder_itself_copies_what_was_there(
    local_run: tuple[SqlStore, str, Path],
) -> None:
    store, run_id, folder = local_run
    target = artifacts.download(store.get_run(run_id).info.artifact_uri, "", folder / "copy")
    assert {p.relative_to(target).as_posix() for p in target.rglob("*")} == INSIDE


@pytest.mark.parametrize(
    "path", ["../x", "/abs", "%2e%2e/x", "%252e%252e/x", "a/%2E%2E/%2E%2E/x", "a\x00b", "..\\x"]
)
def test_unsafe_paths_are_refused_in_any_form(tmp_path: Path, path: str) -> None:
    uri = (tmp_path / "art").as_uri()
    (tmp_path / "f.txt").write_text("x")
    for attempt in (
        lambda: artifacts.list_artifacts(uri, path),
        lambda: artifacts.download(uri, path, tmp_path / "dl"),
        lambda: artifacts.log_file(uri, tmp_path / "f.txt", path),
        lambda: artifacts.write_text(uri, path, "x"),
    ):
        with pytest.raises(UserInputError, match="Invalid artifact path"):
            attempt()


def test_writes_never_go_through_a_link(
    local_run: tuple[SqlStore, str, Path], outside: Path, tmp_path: Path
) -> None:
    store, run_id, folder = local_run
    uri = store.get_run(run_id).info.artifact_uri
    (folder / "model.pkl").symlink_to(outside / "secret.txt")  # a file link to overwrite
    src = tmp_path / "model.pkl"
    src.write_text("model\n")
    for dest in ("outdir", "other", "etc", "sub/up/x"):
        with pytest.raises(UserInputError, match="out of the artifact folder"):
            artifacts.log_file(uri, src, dest)
        with pytest.raises(UserInputError, match="out of the artifact folder"):
            artifacts.log_dir(uri, tmp_path / "outside", dest)
    artifacts.log_file(uri, src)  # replaces the link by the file
    artifacts.write_text(uri, "secret.txt", "written\n")
    assert (outside / "secret.txt").read_text() == SECRET
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert not (folder / "model.pkl").is_symlink()
    assert (folder / "model.pkl").read_text() == "model\n"
    assert (folder / "secret.txt").read_text() == "written\n"


def test_python_api_and_cli_refuse_links_out(
    local_run: tuple[SqlStore, str, Path], outside: Path, tmp_path: Path
) -> None:
    _, run_id, _ = local_run
    src = tmp_path / "f.txt"
    src.write_text("f\n")
    with fluent.attach(run_id, f"sqlite:///{tmp_path / 's.db'}"):
        with pytest.raises(UserInputError):
            fluent.log_text("x", "outdir/y.txt")
        with pytest.raises(UserInputError):
            fluent.log_artifact(src, "outdir")
        with pytest.raises(UserInputError):
            fluent.get_artifact_uri("../../x")
    cli = reprorun_cli(
        "log", "artifact", str(src), "--artifact-path", "outdir",
        "--run-id", run_id, "--tracking-uri", f"sqlite:///{tmp_path / 's.db'}",
    )  # fmt: skip
    assert cli.returncode != 0
    assert "out of the artifact folder" in cli.stderr and "Traceback" not in cli.stderr
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    show = reprorun_cli("runs", "show", run_id, "--tracking-uri", f"sqlite:///{tmp_path / 's.db'}")
    assert show.returncode == 0, show.stderr
    assert "real.txt" in show.stdout and "passwd" not in show.stdout


def test_rest_listing_of_a_local_run(local_run: tuple[SqlStore, str, Path]) -> None:
    store, run_id, _ = local_run
    api = MlflowApi(store, ArtifactUris(store.artifact_root, proxied=False))
    status, reply = api.handle("GET", f"{API}/artifacts/list", {"run_id": [run_id]}, b"")
    assert status == 200, reply
    assert {f["path"] for f in reply["files"]} == TOP
    query = {"run_id": [run_id], "path": ["innerdir"]}
    status, reply = api.handle("GET", f"{API}/artifacts/list", query, b"")
    assert {f["path"] for f in reply["files"]} == {"innerdir/real.txt", "innerdir/loop"}
    for path in LOOPS:
        query = {"run_id": [run_id], "path": [path]}
        status, reply = api.handle("GET", f"{API}/artifacts/list", query, b"")
        assert (status, reply.get("files", [])) == (200, []), (path, reply)
    for path in OUT:
        query = {"run_id": [run_id], "path": [path]}
        status, reply = api.handle("GET", f"{API}/artifacts/list", query, b"")
        assert status == 400, (path, reply)
        assert reply["error_code"] == "INVALID_PARAMETER_VALUE"


# --- a real server: REST listing, artifact proxy, web UI -------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with server_process(tmp_path_factory.mktemp("server")) as proc:
        yield proc


def test_server_lists_serves_and_downloads_only_what_is_inside(
    served: ServerProcess, outside: Path
) -> None:
    run = ok(call(served, "POST", "runs/create", {"experiment_id": "0"}))["run"]["info"]
    run_id = run["run_id"]
    rel = run["artifact_uri"].removeprefix("mlflow-artifacts:/")
    other = ok(call(served, "POST", "runs/create", {"experiment_id": "0"}))["run"]["info"]
    other_dir = served.artifacts / other["artifact_uri"].removeprefix("mlflow-artifacts:/")
    other_dir.mkdir(parents=True)
    plant(served.artifacts / rel, outside, other_dir)

    listed = ok(call(served, "GET", "artifacts/list", query={"run_id": run_id}))
    assert {f["path"] for f in listed["files"]} == TOP
    proxy = "/api/2.0/mlflow-artifacts/artifacts"

    def proxy_listing(path: str) -> set[str]:
        reply = send(served, "GET", f"{proxy}?{urlencode({'path': path})}")
        assert reply.status == 200, str(reply)
        return {f["path"] for f in json.loads(reply.body)["files"]}

    assert proxy_listing(rel) == TOP
    assert proxy_listing(f"{rel}/innerdir") == {"real.txt", "loop"}
    query = {"run_id": run_id, "path": "innerdir"}
    listed = ok(call(served, "GET", "artifacts/list", query=query))
    assert {f["path"] for f in listed["files"]} == {"innerdir/real.txt", "innerdir/loop"}
    for path in LOOPS:
        assert proxy_listing(f"{rel}/{path}") == set()
        listed = ok(call(served, "GET", "artifacts/list", query={"run_id": run_id, "path": path}))
        assert listed.get("files", []) == []
    assert send(served, "GET", f"{proxy}/{rel}/inner.txt").body == b"real\n"
    assert send(served, "GET", f"{proxy}/{rel}/innerdir/real.txt").body == b"real\n"
    for path in OUT:
        assert_error(
            call(served, "GET", "artifacts/list", query={"run_id": run_id, "path": path}), 400
        )
        for url in (
            f"{proxy}/{rel}/{quote(path)}",
            f"/ui-api/runs/{run_id}/artifact?{urlencode({'path': path})}",
        ):
            reply = send(served, "GET", url)
            assert reply.status in (400, 404), (url, str(reply))
            assert SECRET.encode() not in reply.body and b"root:" not in reply.body
    assert os.listdir(outside) == ["secret.txt"]
    # Deleting a link deletes the link, not the folder it points to.
    for link in ("sub/loop", "innerdir"):
        assert send(served, "DELETE", f"{proxy}/{rel}/{link}").status == 200
        assert not (served.artifacts / rel / link).is_symlink()
    assert (served.artifacts / rel / "sub" / "real.txt").read_text() == "real\n"
    assert (served.artifacts / rel / "top.txt").is_file()


REMOTE_CLIENT = """
import json, sys
from reprorun.tracking import artifacts
uri, server, dest = sys.argv[1:]
listed = [f.path for f in artifacts.list_artifacts(uri, recursive=True, tracking_uri=server)]
copied = []
for folder in ("innerdir", "sub"):
    target = artifacts.download(uri, folder, dest, tracking_uri=server)
    copied += [p.relative_to(dest).as_posix() for p in target.rglob("*") if p.is_file()]
print(json.dumps({"listed": listed, "copied": copied}))
"""


def test_a_remote_client_walks_the_proxy_listings_to_an_end(
    served: ServerProcess, outside: Path, tmp_path: Path
) -> None:
    """A client of the proxy lists one folder per request and enters every folder it is shown:
    a loop must end there too (a process, so a walk without end is a bounded failure)."""
    run = ok(call(served, "POST", "runs/create", {"experiment_id": "0"}))["run"]["info"]
    other_dir = tmp_path / "other-run"
    other_dir.mkdir()
    plant(
        served.artifacts / run["artifact_uri"].removeprefix("mlflow-artifacts:/"),
        outside,
        other_dir,
    )
    client = subprocess.run(
        [sys.executable, "-c", REMOTE_CLIENT, run["artifact_uri"], served.url, str(tmp_path / "dl")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert client.returncode == 0, client.stderr
    result = json.loads(client.stdout)
    assert set(result["listed"]) == INSIDE
    assert sorted(result["copied"]) == ["innerdir/real.txt", "sub/real.txt"]
