"""Git sources under attack and faults: credentials in a URL never reach a disk or a command
line (even when `reprorun run` is killed mid-clone), the clone dies with it, and a tag that
moved upstream is checked against the remote."""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import reprorun_cli
from tests.integration.git_servers import _GitHttpHandler, git, make_repository, smart_http


@dataclass
class AuthServer:
    base: str  # http://127.0.0.1:PORT, no credentials
    gate: threading.Event  # POSTs (the clone's real work) wait until it is set
    reached: threading.Event  # set once an authenticated POST arrived
    refused: list[str]  # Authorization headers that were refused


@contextmanager
def auth_http(root: Path, user: str, password: str) -> Iterator[AuthServer]:
    """Smart HTTP git server requiring HTTP Basic authentication; each POST waits for
    ``gate``, so a test can hold a clone midway."""
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    gate, reached, refused = threading.Event(), threading.Event(), []

    class Handler(_GitHttpHandler):
        project_root = str(root)

        def do_GET(self) -> None:
            if self._authorized():
                self._backend()

        def do_POST(self) -> None:
            if self._authorized():
                reached.set()
                gate.wait(60)
                self._backend()

        def _authorized(self) -> bool:
            given = self.headers.get("Authorization")
            if given == expected:
                return True
            if given:
                refused.append(given)
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return False

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.block_on_close = False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield AuthServer(f"http://127.0.0.1:{server.server_address[1]}", gate, reached, refused)
    finally:
        gate.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def with_credentials(base: str, user: str, password: str) -> str:
    return base.replace("http://", f"http://{quote(user, safe='')}:{quote(password, safe='')}@")


def runs_json() -> list[dict]:
    result = reprorun_cli("runs", "list", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def run_ok(*args: str) -> subprocess.CompletedProcess[str]:
    result = reprorun_cli("run", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (by parent links in /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in (b"Z", b"X")


def command_lines_with(secret: str, but: int) -> list[str]:
    """Command lines holding ``secret``, but that of process ``but`` (reprorun itself: the
    user typed the URL there)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != but:
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if secret.encode() in cmdline:
                found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


def files_with(root: Path, secret: str) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if secret.encode() in path.read_bytes():
                    found.append(path)
            except OSError:
                continue
    return found


def loose_folders(root: Path) -> list[str]:
    """The cache's own folders (root, per-URL folders, temporary builds) that others can
    enter or read."""
    folders = [root, *root.glob("*"), *root.glob("git/*"), *root.rglob(".tmp-*")]
    return [
        f"{f} {stat.filemode(f.stat().st_mode)}"
        for f in folders
        if f.is_dir() and f.stat().st_mode & 0o077
    ]


@pytest.mark.slow
def test_a_clone_killed_midway_leaves_no_secret_and_no_git(home: Path, tmp_path: Path) -> None:
    make_repository(tmp_path)
    secret = "s3cret-" + secrets.token_hex(6)
    password = f"{secret}@:/%"  # characters a URL must percent-encode
    with auth_http(tmp_path / "served", "alice", password) as server:
        url = with_credentials(server.base, "alice", password) + "/repo.git#sub/proj"
        proc = subprocess.Popen(
            [sys.executable, "-m", "reprorun", "run", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert server.reached.wait(60), "the clone never reached the server"
            # Midway: the secret is on no command line, in no file, and the folders are private.
            assert command_lines_with(secret, but=proc.pid) == []
            assert files_with(home, secret) == []
            assert list((home / "sources").rglob(".tmp-*")), "no clone in progress"
            assert loose_folders(home / "sources") == []
            below = descendants(proc.pid)
            assert below, "no git process under reprorun"

            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            deadline = time.monotonic() + 10
            while any(alive(p) for p in below) and time.monotonic() < deadline:
                time.sleep(0.05)
            left = [Path(f"/proc/{p}/cmdline").read_bytes() for p in below if alive(p)]
            assert left == [], f"processes outlived reprorun: {left}"
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        assert files_with(home, secret) == []
        assert command_lines_with(secret, but=proc.pid) == []
        assert loose_folders(home / "sources") == []

        # The next run cleans the interrupted clone away and succeeds.
        server.gate.set()
        result = run_ok(url)
    assert "version two 1" in result.stdout
    assert secret not in result.stdout + result.stderr
    assert list((home / "sources").rglob(".tmp-*")) == []
    assert files_with(home, secret) == []


def test_credentials_reach_the_server_through_the_helper_only(home: Path, tmp_path: Path) -> None:
    make_repository(tmp_path)
    secret = "s3cret-" + secrets.token_hex(6)
    with auth_http(tmp_path / "served", "alice", secret) as server:
        server.gate.set()
        url = with_credentials(server.base, "alice", secret) + "/repo.git#sub/proj"
        assert "version two 1" in run_ok(url).stdout  # clone
        assert "version one 1" in run_ok(url, "--version", "v1.0").stdout  # checked: ls-remote
        assert "feature branch 1" in run_ok(url, "--version", "feature").stdout  # fetch
        assert server.refused == []

        wrong = with_credentials(server.base, "alice", "not-" + secret) + "/repo.git#sub/proj"
        refused = reprorun_cli("run", wrong)
    assert refused.returncode == 2
    assert "git fetch failed for " + server.base + "/repo.git" in refused.stderr
    assert secret not in refused.stdout + refused.stderr
    assert secret not in json.dumps(runs_json())
    assert files_with(home, secret) == []
    assert loose_folders(home / "sources") == []


@pytest.mark.parametrize("transport", ["file", "smart-http"])
def test_a_tag_moved_upstream_runs_the_commit_it_names_now(
    home: Path, tmp_path: Path, transport: str
) -> None:
    commits = make_repository(tmp_path)
    bare = tmp_path / "served" / "repo.git"

    @contextmanager
    def serving() -> Iterator[str]:
        if transport == "file":
            yield bare.as_uri()
        else:
            with smart_http(tmp_path / "served") as base:
                yield f"{base}/repo.git"

    with serving() as url:
        uri = url + "#sub/proj"
        assert "version one 1" in run_ok(uri, "--version", "v1.0").stdout
        # Re-tagged upstream (annotated this time), as `git tag -f` and a force push do.
        git("tag", "-f", "-a", "-m", "moved", "v1.0", commits["v2"], cwd=bare)
        moved = run_ok(uri, "--version", "v1.0")
        assert "version two 1" in moved.stdout
        assert "warning" not in moved.stderr
        tags = runs_json()[0]["data"]["tags"]
        assert tags["mlflow.source.git.commit"] == commits["v2"]
        assert tags["reprorun.source.refCheck"] == "remote"
        assert "reprorun.source.refCheckWarning" not in tags
        # A full commit is immutable: nothing to check.
        run_ok(uri, "--version", commits["v1"])
        assert runs_json()[0]["data"]["tags"]["reprorun.source.refCheck"] == "commit"
    if transport == "file":
        bare.rename(bare.with_name("gone.git"))

    # The remote does not answer: the cached commit runs, with a warning, and the run says so.
    offline = run_ok(uri, "--version", "v1.0")
    assert "version two 1" in offline.stdout
    assert "reprorun: warning:" in offline.stderr and "v1.0" in offline.stderr
    tags = runs_json()[0]["data"]["tags"]
    assert tags["mlflow.source.git.commit"] == commits["v2"]
    assert tags["reprorun.source.refCheck"] == "cache-offline"
    assert "v1.0" in tags["reprorun.source.refCheckWarning"]


def test_a_tag_deleted_upstream_is_not_run_from_the_cache(home: Path, tmp_path: Path) -> None:
    make_repository(tmp_path)
    bare = tmp_path / "served" / "repo.git"
    uri = bare.as_uri() + "#sub/proj"
    run_ok(uri, "--version", "v1.0")
    git("tag", "-d", "v1.0", cwd=bare)
    gone = reprorun_cli("run", uri, "--version", "v1.0")
    assert gone.returncode == 2
    assert "'v1.0' is not a branch, tag or commit" in gone.stderr


def test_git_gets_no_credentials_on_its_command_line_and_no_user_helper(
    home: Path, tmp_path: Path
) -> None:
    # A user's own credential helper (here `store`) must not save the URL's secret to disk.
    make_repository(tmp_path)
    secret = "s3cret-" + secrets.token_hex(6)
    store = tmp_path / "git-credentials"
    gitconfig = tmp_path / "gitconfig"
    gitconfig.write_text(f"[credential]\n\thelper = store --file={store}\n")
    env = {**os.environ, "GIT_CONFIG_GLOBAL": str(gitconfig)}
    with auth_http(tmp_path / "served", "alice", secret) as server:
        server.gate.set()
        url = with_credentials(server.base, "alice", secret) + "/repo.git#sub/proj"
        result = reprorun_cli("run", url, env=env)
    assert result.returncode == 0, result.stderr
    assert not store.exists() or secret not in store.read_text()


def test_archive_folders_are_private_and_working_copies_are_not(home: Path, tmp_path: Path) -> None:
    import tarfile

    project = tmp_path / "proj"
    project.mkdir()
    (project / "MLproject").write_text("entry_points:\n  main:\n    command: 'echo packed'\n")
    packed = tmp_path / "proj.tar.gz"
    with tarfile.open(packed, "w:gz") as archive:
        archive.add(project, arcname="proj")
    assert "packed" in run_ok(str(packed)).stdout
    assert (home / "sources" / "archives").is_dir()
    assert loose_folders(home / "sources") == []
    run_id = runs_json()[0]["info"]["run_id"]
    # The run's own folder has the user's usual mode (a container user may need to read it).
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((home / "work" / run_id).stat().st_mode) == 0o777 & ~umask


def test_a_branch_is_checked_too_and_never_run_stale(home: Path, tmp_path: Path) -> None:
    make_repository(tmp_path)
    bare = tmp_path / "served" / "repo.git"
    uri = bare.as_uri() + "#sub/proj"
    assert "feature branch 1" in run_ok(uri, "--version", "feature").stdout
    work = tmp_path / "work"
    git("checkout", "-q", "feature", cwd=work)
    (work / "sub" / "proj" / "show.py").write_text("import sys\nprint('feature two')\n")
    git("commit", "-qam", "feature two", cwd=work)
    git("push", "-q", "server", "feature", cwd=work)
    assert "feature two" in run_ok(uri, "--version", "feature").stdout
    tags = runs_json()[0]["data"]["tags"]
    assert tags["mlflow.source.git.branch"] == "feature"
    assert tags["reprorun.source.refCheck"] == "remote"
    # A branch moves: without the remote, its cached commit is not run.
    bare.rename(bare.with_name("gone.git"))
    offline = reprorun_cli("run", uri, "--version", "feature")
    assert offline.returncode == 2
    assert "git fetch failed for " + bare.as_uri() in offline.stderr


def retag(bare: Path, tag: str, commit: str) -> None:
    """Move ``tag`` upstream, as `git tag -f` and a force push do."""
    git("tag", "-f", "-a", "-m", "moved", tag, commit, cwd=bare)


def push_to_feature(tmp_path: Path, text: str) -> None:
    work = tmp_path / "work"
    git("checkout", "-q", "feature", cwd=work)
    (work / "sub" / "proj" / "show.py").write_text(f"import sys\nprint({text!r})\n")
    git("commit", "-qam", text, cwd=work)
    git("push", "-q", "server", "feature", cwd=work)
    git("checkout", "-q", "main", cwd=work)


@pytest.mark.slow
def test_every_spelling_of_a_moved_ref_is_checked(home: Path, tmp_path: Path) -> None:
    # Full ref names, short ones and revision expressions are checked against the remote
    # like the plain name: none of them runs the cached commit of a tag or branch that moved.
    commits = make_repository(tmp_path)
    bare = tmp_path / "served" / "repo.git"
    uri = bare.as_uri() + "#sub/proj"
    assert "version one 1" in run_ok(uri, "--version", "v1.0").stdout
    assert "feature branch 1" in run_ok(uri, "--version", "feature").stdout
    retag(bare, "v1.0", commits["v2"])
    push_to_feature(tmp_path, "feature two")
    spellings = {
        "refs/tags/v1.0": "version two",
        "tags/v1.0": "version two",
        "v1.0^{}": "version two",
        "v1.0~0": "version two",
        "refs/heads/feature": "feature two",
        "heads/feature": "feature two",
        "feature^0": "feature two",
        "feature~1": "feature branch",
        "HEAD": "version two",
    }
    for version, expected in spellings.items():
        result = run_ok(uri, "--version", version)
        assert expected in result.stdout, (version, result.stdout)
        tags = runs_json()[0]["data"]["tags"]
        assert tags["reprorun.source.refCheck"] == "remote", version
    assert runs_json()[0]["data"]["tags"]["mlflow.source.git.branch"] == "main"  # HEAD
    # Moved again: the tag's full name is refetched, not taken from the mirror.
    retag(bare, "v1.0", commits["v1"])
    assert "version one" in run_ok(uri, "--version", "refs/tags/v1.0").stdout
    # Offline, a full tag name runs its cached commit with a warning, as the plain name does.
    bare.rename(bare.with_name("gone.git"))
    offline = run_ok(uri, "--version", "refs/tags/v1.0^{}")
    assert "version one" in offline.stdout and "reprorun: warning:" in offline.stderr
    assert runs_json()[0]["data"]["tags"]["reprorun.source.refCheck"] == "cache-offline"
    for moving in ("heads/feature", "HEAD~1"):  # a branch is never run stale
        stale = reprorun_cli("run", uri, "--version", moving)
        assert stale.returncode == 2, moving
        assert "git fetch failed for " + bare.as_uri() in stale.stderr


def test_a_new_default_branch_upstream_is_followed(home: Path, tmp_path: Path) -> None:
    make_repository(tmp_path)
    bare = tmp_path / "served" / "repo.git"
    uri = bare.as_uri() + "#sub/proj"
    assert "version two 1" in run_ok(uri).stdout
    git("symbolic-ref", "HEAD", "refs/heads/feature", cwd=bare)
    assert "feature branch 1" in run_ok(uri).stdout
    tags = runs_json()[0]["data"]["tags"]
    assert tags["mlflow.source.git.branch"] == "feature"
    assert tags["reprorun.source.refCheck"] == "remote"
    assert "feature branch 1" in run_ok(uri, "--version", "HEAD").stdout


def test_only_a_commit_id_is_recorded_as_commit(home: Path, tmp_path: Path) -> None:
    commits = make_repository(tmp_path)
    bare = tmp_path / "served" / "repo.git"
    uri = bare.as_uri() + "#sub/proj"
    # A tag whose name looks like a commit id is a tag: checked, and refetched when it moved.
    git("tag", "cafe1234", commits["v1"], cwd=bare)
    assert "version one 1" in run_ok(uri, "--version", "cafe1234").stdout
    git("tag", "-f", "cafe1234", commits["v2"], cwd=bare)
    assert "version two 1" in run_ok(uri, "--version", "cafe1234").stdout
    assert runs_json()[0]["data"]["tags"]["reprorun.source.refCheck"] == "remote"
    # Commit ids (short, full, with a suffix) need no remote: they run offline, as "commit".
    bare.rename(bare.with_name("gone.git"))
    for version, expected in [
        (commits["v1"][:7], "version one"),
        (commits["v2"].upper(), "version two"),
        (commits["v2"][:12] + "~1", "version one"),
    ]:
        result = run_ok(uri, "--version", version)
        assert expected in result.stdout, version
        assert "warning" not in result.stderr
        assert runs_json()[0]["data"]["tags"]["reprorun.source.refCheck"] == "commit", version


@pytest.mark.parametrize(
    "version",
    ["v1.0@{1}", "v1.0:sub", "main..feature", "refs/pull/1/head", "v1.0^{/second}", "v1.0^!"],
)
def test_a_version_that_cannot_be_checked_is_refused(
    home: Path, tmp_path: Path, version: str
) -> None:
    make_repository(tmp_path)
    uri = (tmp_path / "served" / "repo.git").as_uri() + "#sub/proj"
    run_ok(uri)
    refused = reprorun_cli("run", uri, "--version", version)
    assert refused.returncode == 2, refused.stdout
    assert f"Version {version!r} is not supported" in refused.stderr
    assert "refs/tags/NAME" in refused.stderr and "~N" in refused.stderr


def test_names_git_would_find_outside_branches_and_tags_are_not_run(
    home: Path, tmp_path: Path
) -> None:
    # The mirror holds refs no fetch refreshes (FETCH_HEAD, refs/pull/* of the first clone):
    # a name that is neither a branch nor a tag upstream is not resolved through them.
    make_repository(tmp_path)
    bare = tmp_path / "served" / "repo.git"
    git("update-ref", "refs/pull/1/head", "v1.0", cwd=bare)
    uri = bare.as_uri() + "#sub/proj"
    run_ok(uri)
    for version in ("FETCH_HEAD", "pull/1/head"):
        missing = reprorun_cli("run", uri, "--version", version)
        assert missing.returncode == 2, version
        assert f"{version!r} is not a branch, tag or commit" in missing.stderr
