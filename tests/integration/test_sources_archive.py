"""Projects in .zip and .tar.gz archives, by path and over http: real archives built here,
real `reprorun run` subprocesses, a real http server on 127.0.0.1."""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import reprorun_cli

MLPROJECT = "entry_points:\n  main:\n    command: 'echo {word}; echo written > out.txt'\n"
USER, SECRET = "alice", "secret-7f3a"
BASIC_AUTH = "Basic " + base64.b64encode(f"{USER}:{SECRET}".encode()).decode()

Members = dict[str, "str | bytes"]


def write_zip(path: Path, members: Members) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def write_tar(path: Path, members: Members, links: list[tarfile.TarInfo] | None = None) -> Path:
    """A .tar.gz of regular files; ``links`` (link members) go between the files given
    first and any file whose name starts with ``data/link/`` (written through the link)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    through = {k: v for k, v in members.items() if k.startswith("data/link/")}
    with tarfile.open(path, "w:gz") as archive:

        def add(items: Members) -> None:
            for name, data in items.items():
                raw = data.encode() if isinstance(data, str) else data
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(raw), 0o644, int(time.time())
                archive.addfile(info, io.BytesIO(raw))

        add({k: v for k, v in members.items() if k not in through})
        for link in links or []:
            archive.addfile(link)
        add(through)
    return path


def project_files(word: str, top: str = "") -> Members:
    return {f"{top}MLproject": MLPROJECT.format(word=word), f"{top}data/input.txt": "1 2 3\n"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def runs() -> list[dict]:
    listing = reprorun_cli("runs", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    return json.loads(listing.stdout)


def only_tags() -> dict[str, str]:
    found = runs()
    assert len(found) == 1, found
    assert found[0]["info"]["status"] == "FINISHED"
    return found[0]["data"]["tags"]


def archives_dir(home: Path) -> Path:
    return home / "sources" / "archives"


def assert_nothing_left(home: Path) -> None:
    """No half-written cache entry, no unpacked tree, no working copy, no run."""
    sources = home / "sources"
    assert [p.name for p in sources.rglob(".tmp-*")] == []
    assert [p.name for p in sources.rglob("*.part")] == []
    if archives_dir(home).exists():
        assert [p.name for p in archives_dir(home).iterdir() if p.is_dir()] == []
    assert not (home / "work").exists() or list((home / "work").iterdir()) == []
    assert runs() == []


# ---------------------------------------------------------------- a small http server


@dataclass
class Served:
    root: Path
    url: str
    authorizations: list[str | None] = field(default_factory=list)


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files; anything under /private/ needs alice's basic-auth password."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.authorizations.append(self.headers.get("Authorization"))  # type: ignore[attr-defined]
        if self.path.startswith("/private/") and self.headers.get("Authorization") != BASIC_AUTH:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="archives"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    root = tmp_path / "served"
    root.mkdir()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # a proxy from the outside must not intercept
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(root))
    )
    server.authorizations = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Served(root, f"http://127.0.0.1:{server.server_address[1]}", server.authorizations)  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# ---------------------------------------------------------------- archives by path


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_archive_by_path_runs_in_a_working_copy_and_records_its_hash(
    home: Path, tmp_path: Path, suffix: str
) -> None:
    write = write_zip if suffix == ".zip" else write_tar
    archive = write(tmp_path / f"project{suffix}", project_files("hello-from-archive"))
    result = reprorun_cli("run", str(archive))
    assert result.returncode == 0, result.stderr
    assert "hello-from-archive" in result.stdout

    tags = only_tags()
    digest = sha256(archive)
    assert tags["reprorun.source.kind"] == "archive"
    assert tags["reprorun.source.archiveSha256"] == digest
    assert tags["mlflow.source.name"] == str(archive)
    assert tags["reprorun.source.uri"] == str(archive)
    assert "mlflow.source.git.commit" not in tags
    snapshot = archives_dir(home) / digest
    assert Path(tags["reprorun.project.dir"]) == snapshot
    assert (snapshot / "data" / "input.txt").read_text() == "1 2 3\n"
    # The command wrote into its own working copy, never into the shared snapshot.
    assert not (snapshot / "out.txt").exists()
    run_id = runs()[0]["info"]["run_id"]
    assert (home / "work" / run_id / "out.txt").read_text() == "written\n"
    assert (snapshot / "MLproject").stat().st_mode & 0o222 == 0  # snapshot files: read-only


def test_github_style_archive_with_one_top_folder_is_descended_into(
    home: Path, tmp_path: Path
) -> None:
    archive = write_tar(tmp_path / "repo-main.tar.gz", project_files("top-folder", "repo-1a2b3c/"))
    result = reprorun_cli("run", str(archive))
    assert result.returncode == 0, result.stderr
    assert "top-folder" in result.stdout
    tags = only_tags()
    assert tags["reprorun.project.dir"] == str(archives_dir(home) / sha256(archive) / "repo-1a2b3c")
    assert "reprorun.source.subdirectory" not in tags


@pytest.mark.parametrize("top", ["", "repo-main/"], ids=["flat", "github-style"])
def test_subdirectory_inside_an_archive(home: Path, tmp_path: Path, top: str) -> None:
    members: Members = {
        f"{top}README.md": "no project at the root\n",
        **project_files("in-project-a", f"{top}projects/a/"),
        **project_files("in-project-b", f"{top}projects/b/"),
    }
    archive = write_zip(tmp_path / "mono.zip", members)
    result = reprorun_cli("run", f"{archive}#projects/b")
    assert result.returncode == 0, result.stderr
    assert "in-project-b" in result.stdout and "in-project-a" not in result.stdout
    tags = only_tags()
    assert tags["reprorun.source.subdirectory"] == "projects/b"
    assert tags["mlflow.source.name"] == f"{archive}#projects/b"
    assert tags["reprorun.project.dir"].endswith("/projects/b")

    for bad in ("#projects/c", "#../..", "#/etc"):
        refused = reprorun_cli("run", f"{archive}{bad}")
        assert refused.returncode == 2, refused.stderr
        assert "has no directory" in refused.stderr
        assert "Traceback" not in refused.stderr
    assert len(runs()) == 1


def test_version_does_not_apply_to_an_archive(home: Path, tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "p.zip", project_files("x"))
    result = reprorun_cli("run", str(archive), "--version", "v1")
    assert result.returncode == 2
    assert "--version applies to git repositories" in result.stderr
    assert_nothing_left(home)


def test_the_same_archive_twice_reuses_the_unpacked_snapshot(home: Path, tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "p.tar.gz", project_files("again"))
    assert reprorun_cli("run", str(archive)).returncode == 0
    snapshot = archives_dir(home) / sha256(archive)
    before = [(p, p.stat().st_ino, p.stat().st_mtime_ns) for p in (snapshot, snapshot / "data")]
    file_before = (snapshot / "MLproject").stat()

    second = reprorun_cli("run", str(archive))
    assert second.returncode == 0, second.stderr
    after = [(p, p.stat().st_ino, p.stat().st_mtime_ns) for p in (snapshot, snapshot / "data")]
    assert after == before
    assert (snapshot / "MLproject").stat().st_ino == file_before.st_ino
    both = runs()
    assert len(both) == 2
    assert {r["data"]["tags"]["reprorun.project.dir"] for r in both} == {str(snapshot)}
    assert [p.name for p in archives_dir(home).iterdir() if p.is_dir()] == [snapshot.name]

    # New content is a new snapshot; the old one stays for the runs that used it.
    write_tar(archive, project_files("changed"))
    third = reprorun_cli("run", str(archive))
    assert third.returncode == 0 and "changed" in third.stdout
    assert snapshot.is_dir()
    assert (archives_dir(home) / sha256(archive)).is_dir()


# ---------------------------------------------------------------- archives over http


def test_archive_over_http(home: Path, served: Served) -> None:
    write_tar(served.root / "releases" / "project.tar.gz", project_files("over-http", "p-1.0/"))
    url = f"{served.url}/releases/project.tar.gz"
    result = reprorun_cli("run", url)
    assert result.returncode == 0, result.stderr
    assert "over-http" in result.stdout
    tags = only_tags()
    assert tags["reprorun.source.kind"] == "archive"
    assert tags["reprorun.source.uri"] == url
    assert tags["mlflow.source.name"] == url
    assert tags["reprorun.source.archiveSha256"] == sha256(
        served.root / "releases" / "project.tar.gz"
    )

    missing = reprorun_cli("run", f"{served.url}/releases/nothing-here.zip")
    assert missing.returncode == 2
    assert "Cannot download project archive" in missing.stderr and "404" in missing.stderr
    assert "Traceback" not in missing.stderr
    assert [p.name for p in (home / "sources").rglob("*.part")] == []
    assert len(runs()) == 1


def test_credentials_in_an_archive_url_never_show(home: Path, served: Served) -> None:
    write_zip(served.root / "private" / "p.zip", project_files("authorised"))
    write_zip(served.root / "public" / "p.zip", project_files("public"))
    host = served.url.removeprefix("http://")
    outputs: list[str] = []
    for folder in ("private", "public", "nowhere"):
        url = f"http://{USER}:{SECRET}@{host}/{folder}/p.zip"
        for args in (["run", url], ["run", url, "--dry-run"], ["run", url, "--dry-run", "--json"]):
            done = reprorun_cli(*args)
            assert "Traceback" not in done.stderr
            outputs += [done.stdout, done.stderr]
    listing = reprorun_cli("runs", "list", "--json")
    outputs += [listing.stdout, listing.stderr]
    for found in json.loads(listing.stdout):
        shown = reprorun_cli("runs", "show", found["info"]["run_id"])
        outputs += [shown.stdout, shown.stderr]
        assert "@" not in found["data"]["tags"]["reprorun.source.uri"]
    assert "secret" not in "\n".join(outputs)
    assert "7f3a" not in "\n".join(outputs)
    # Nor anywhere on disk: reprorun stores no credentials (store, cache, logs, work dirs).
    for path in home.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_credentials_in_an_archive_url_are_sent_as_basic_auth(home: Path, served: Served) -> None:
    archive = write_zip(served.root / "private" / "p.zip", project_files("authorised"))
    host = served.url.removeprefix("http://")
    url = f"http://{USER}:{SECRET}@{host}/private/p.zip"
    result = reprorun_cli("run", url)
    assert "secret" not in result.stdout + result.stderr
    assert result.returncode == 0, result.stderr
    assert "authorised" in result.stdout
    assert BASIC_AUTH in served.authorizations
    tags = only_tags()
    assert tags["reprorun.source.uri"] == f"{served.url}/private/p.zip"
    assert tags["reprorun.source.archiveSha256"] == sha256(archive)
    assert "secret" not in json.dumps(tags)


# ---------------------------------------------------------------- bad archives


def _corrupt_bytes(root: Path) -> Path:
    path = root / "corrupt.zip"
    path.write_bytes(b"PK\x03\x04 this is not really a zip file" * 10)
    return path


def _bad_crc_zip(root: Path) -> Path:
    path = root / "bad-crc.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("MLproject", MLPROJECT.format(word="x"))
        archive.writestr("payload.bin", b"A" * 4096)
    raw = bytearray(path.read_bytes())
    at = raw.index(b"A" * 4096)
    raw[at + 100] = ord("B")  # one flipped byte: the stored CRC no longer matches
    path.write_bytes(bytes(raw))
    return path


def _truncated_tar_gz(root: Path) -> Path:
    members = {**project_files("x"), "big.bin": os.urandom(200_000)}
    path = write_tar(root / "truncated.tar.gz", members)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _zip_member(name: str) -> Callable[[Path], Path]:
    def build(root: Path) -> Path:
        members: Members = {**project_files("x"), name.format(outside=root / "outside"): "pwned"}
        return write_zip(root / "evil.zip", members)

    return build


def _zip_symlink(root: Path) -> Path:
    path = write_zip(root / "link.zip", project_files("x"))
    with zipfile.ZipFile(path, "a") as archive:
        info = zipfile.ZipInfo("data/link")
        info.external_attr = (0o120777 << 16) | 0x20  # a symbolic link, as `zip -y` stores it
        archive.writestr(info, str(root / "outside"))
    return path


def _tar_link(kind: bytes, target: str, through: str | None) -> Callable[[Path], Path]:
    def build(root: Path) -> Path:
        link = tarfile.TarInfo("data/link")
        link.type, link.linkname = kind, target.format(outside=root / "outside")
        members: Members = {**project_files("x"), **({through: "pwned"} if through else {})}
        return write_tar(root / "link.tar.gz", members, [link])

    return build


def _tar_member(name: str) -> Callable[[Path], Path]:
    def build(root: Path) -> Path:
        return write_tar(root / "evil.tar.gz", {**project_files("x"), name: "pwned"})

    return build


BAD_ARCHIVES = {
    "corrupt-zip": (_corrupt_bytes, "corrupt or unreadable"),
    "zip-bad-crc": (_bad_crc_zip, "corrupt or unreadable"),
    "truncated-tar-gz": (_truncated_tar_gz, "corrupt or unreadable"),
    "zip-dotdot": (_zip_member("../evil.txt"), "unsafe"),
    "zip-deep-dotdot": (_zip_member("data/../../../evil.txt"), "unsafe"),
    "zip-backslash-dotdot": (_zip_member("..\\evil.txt"), "unsafe"),
    "zip-absolute": (_zip_member("{outside}/evil.txt"), "unsafe"),
    "zip-symlink": (_zip_symlink, "unsafe"),
    "tar-dotdot": (_tar_member("../evil.txt"), "unsafe"),
    "tar-deep-dotdot": (_tar_member("data/../../../evil.txt"), "unsafe"),
    "tar-symlink-absolute": (
        _tar_link(tarfile.SYMTYPE, "{outside}", "data/link/evil.txt"),
        "unsafe",
    ),
    "tar-symlink-relative": (
        _tar_link(tarfile.SYMTYPE, "../../../../../../../../../../../../tmp", None),
        "unsafe",
    ),
    "tar-hardlink-absolute": (_tar_link(tarfile.LNKTYPE, "{outside}/victim.txt", None), "unsafe"),
}


@pytest.mark.parametrize("case", list(BAD_ARCHIVES))
def test_bad_archives_exit_2_and_leave_nothing(home: Path, tmp_path: Path, case: str) -> None:
    build, message = BAD_ARCHIVES[case]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("untouched\n")
    archive = build(tmp_path)
    for uri in (str(archive), f"{archive}#data"):
        result = reprorun_cli("run", uri)
        assert result.returncode == 2, (result.stdout, result.stderr)
        assert message in result.stderr
        assert "Traceback" not in result.stderr
        assert f"Project archive {archive}" in result.stderr
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    assert (outside / "victim.txt").read_text() == "untouched\n"
    assert [p for p in home.rglob("*evil*")] == []
    assert [p for p in tmp_path.rglob("*evil*") if p != archive] == []
    assert_nothing_left(home)


def test_absolute_tar_member_never_lands_outside(home: Path, tmp_path: Path) -> None:
    # tarfile's data filter strips the leading "/": the member lands inside the snapshot.
    target = tmp_path / "outside" / "abs.txt"
    archive = write_tar(tmp_path / "abs.tar.gz", {**project_files("abs"), str(target): "x"})
    result = reprorun_cli("run", str(archive))
    assert result.returncode in (0, 2), result.stderr
    assert "Traceback" not in result.stderr
    assert not target.exists()


# ---------------------------------------------------------------- rerun


def test_rerun_of_an_archive_run(home: Path, tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "p.zip", project_files("first-and-again"))
    assert reprorun_cli("run", str(archive)).returncode == 0
    original = runs()[0]["info"]["run_id"]
    again = reprorun_cli("rerun", original)
    assert again.returncode == 0, again.stderr
    assert "first-and-again" in again.stdout
    latest = runs()[0]["data"]["tags"]
    assert latest["reprorun.rerunOf"] == original
    assert latest["reprorun.source.archiveSha256"] == sha256(archive)


def test_rerun_keeps_the_subdirectory_of_an_archive(home: Path, tmp_path: Path) -> None:
    archive = write_zip(
        tmp_path / "mono.zip", {"README.md": "root\n", **project_files("in-sub", "sub/dir/")}
    )
    assert reprorun_cli("run", f"{archive}#sub/dir").returncode == 0
    original = runs()[0]["info"]["run_id"]
    again = reprorun_cli("rerun", original)
    assert again.returncode == 0, again.stderr
    assert "in-sub" in again.stdout
    assert runs()[0]["data"]["tags"]["reprorun.source.subdirectory"] == "sub/dir"


def test_a_relative_archive_path_is_recorded_absolute(home: Path, tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "proj" / "p.zip", project_files("relative"))
    assert reprorun_cli("run", "p.zip", cwd=archive.parent).returncode == 0
    tags = runs()[0]["data"]["tags"]
    assert tags["reprorun.source.uri"] == str(archive)
    again = reprorun_cli("rerun", runs()[0]["info"]["run_id"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr


def test_rerun_never_runs_other_code_than_the_recorded_archive(home: Path, tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "p.zip", project_files("version-one"))
    assert reprorun_cli("run", str(archive)).returncode == 0
    original = runs()[0]["info"]["run_id"]
    write_zip(archive, project_files("version-two"))  # same path, other code
    again = reprorun_cli("rerun", original)
    assert "version-two" not in again.stdout
    # Either the recorded snapshot runs again, or a clear refusal.
    assert again.returncode in (0, 2), again.stderr
    if again.returncode == 0:
        assert "version-one" in again.stdout
    else:
        assert "Traceback" not in again.stderr and runs()[0]["info"]["run_id"] == original


# ---------------------------------------------------------------- two downloads at once


class _RaceHandler(_Handler):
    """The first request stalls half-way until the second one has started; the second one
    then waits a little before sending anything: the two downloads overlap for sure."""

    def do_GET(self) -> None:
        state = self.server.race  # type: ignore[attr-defined]
        with state["lock"]:
            state["count"] += 1
            nth = state["count"]
        body = state["body"]
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if nth == 1:
            state["first"].set()
            self.wfile.write(body[: len(body) // 2])
            state["second"].wait(20)  # a download lock would hold the second one back
            time.sleep(0.5)
            self.wfile.write(body[len(body) // 2 :])
        else:
            state["second"].set()
            time.sleep(1.5)
            self.wfile.write(body)


def test_two_runs_downloading_one_archive_at_once(home: Path, tmp_path: Path) -> None:
    members: Members = {**project_files("concurrent"), "weights.bin": os.urandom(3 << 20)}
    body = write_zip(tmp_path / "big.zip", members).read_bytes()
    state = {
        "lock": threading.Lock(),
        "count": 0,
        "body": body,
        "first": threading.Event(),
        "second": threading.Event(),
    }
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RaceHandler)
    server.race = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    procs: list[subprocess.Popen[str]] = []
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/big.zip"
        argv = [sys.executable, "-m", "reprorun", "run", url]
        for _ in range(2):
            procs.append(
                subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            )
            assert state["first"].wait(60)  # type: ignore[union-attr]
        outcomes = [proc.communicate(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    for proc, (_, err) in zip(procs, outcomes, strict=True):
        assert proc.returncode == 0, err
    found = runs()
    assert len(found) == 2
    expected = hashlib.sha256(body).hexdigest()
    assert {r["data"]["tags"]["reprorun.source.archiveSha256"] for r in found} == {expected}


def test_query_tokens_never_show_and_wrapped_subdirectories_resolve(
    home: Path, tmp_path: Path
) -> None:
    import zipfile as zf

    from reprorun.sources.base import is_archive, strip_credentials

    assert is_archive("https://host/p.tar.gz?private_token=SUPERSECRET")
    assert "SUPERSECRET" not in strip_credentials(
        "https://host/p.tar.gz?private_token=SUPERSECRET&ref=main"
    )
    assert strip_credentials("https://host/p.zip?ref=main") == "https://host/p.zip?ref=main"
    archive = tmp_path / "p2.zip"
    with zf.ZipFile(archive, "w") as z:  # the single top folder *is* the subdirectory
        z.writestr("sub/MLproject", "entry_points:\n  main:\n    command: 'echo in-sub'\n")
    result = reprorun_cli("run", f"{archive}#sub")
    assert result.returncode == 0, result.stderr
    assert "in-sub" in result.stdout
