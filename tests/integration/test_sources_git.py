"""Projects from git: file://, git daemon (git://) and smart HTTP, versions, cache, rerun."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from reprorun.errors import SourceNotFound
from reprorun.sources import resolve_source
from reprorun.sources.base import commit_url, strip_credentials
from tests.conftest import make_project, reprorun_cli
from tests.integration.git_servers import commit_all, git, git_daemon, make_repository, smart_http


@pytest.fixture
def served(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    commits = make_repository(tmp_path)
    return tmp_path, commits


def runs_json() -> list[dict]:
    result = reprorun_cli("runs", "list", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def run_ok(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = reprorun_cli("run", *args, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.parametrize("transport", ["file", "git-daemon", "smart-http"])
def test_versions_over_every_transport(
    home: Path, served: tuple[Path, dict[str, str]], transport: str
) -> None:
    root, commits = served
    bare = root / "served" / "repo.git"
    if transport == "file":
        check_versions(bare.as_uri(), commits)
        return
    server = git_daemon if transport == "git-daemon" else smart_http
    with server(root / "served") as base_url:
        check_versions(f"{base_url}/repo.git", commits)


def check_versions(url: str, commits: dict[str, str]) -> None:
    uri = f"{url}#sub/proj"
    assert "version two 1" in run_ok(uri).stdout  # default branch
    assert "version one 5" in run_ok(uri, "--version", "v1.0", "-P", "x=5").stdout  # tag
    assert "feature branch 1" in run_ok(uri, "--version", "feature").stdout  # branch
    assert "version one 1" in run_ok(uri, "--version", commits["v1"][:10]).stdout  # short commit

    newest_first = runs_json()
    tags = [r["data"]["tags"] for r in newest_first]
    assert [t["mlflow.source.git.commit"] for t in tags] == [
        commits["v1"],
        commits["feature"],
        commits["v1"],
        commits["v2"],
    ]
    assert tags[1]["mlflow.source.git.branch"] == "feature"
    assert tags[2]["reprorun.source.version"] == "v1.0"
    for t in tags:
        assert t["mlflow.source.git.repoURL"] == url
        assert t["mlflow.source.name"] == f"{url}#sub/proj"
        assert t["reprorun.source.kind"] == "git"
        assert t["reprorun.source.subdirectory"] == "sub/proj"
        assert t["reprorun.git.dirty"] == "false"


def test_cache_snapshot_is_immutable_and_reused(
    home: Path, served: tuple[Path, dict[str, str]]
) -> None:
    root, commits = served
    url = (root / "served" / "repo.git").as_uri()
    first = resolve_source(f"{url}#sub/proj", version="v1.0")
    assert first.snapshot is not None and first.snapshot.name == commits["v1"]
    assert (first.directory / "show.py").stat().st_mode & 0o222 == 0  # read-only snapshot

    # Offline now: the tag and the exact commit resolve from the mirror without a fetch.
    (root / "served" / "repo.git").rename(root / "served" / "gone.git")
    again = resolve_source(f"{url}#sub/proj", version="v1.0")
    assert again.directory == first.directory
    assert resolve_source(url, version=commits["v2"]).provenance.git_commit == commits["v2"]
    with pytest.raises(SourceNotFound, match="git fetch failed"):
        resolve_source(url)  # the default branch moves: it needs the server
    (root / "served" / "gone.git").rename(root / "served" / "repo.git")

    # A run writes into its own working copy, never into the snapshot.
    writer = "open('output.txt', 'w').write('x')\n"
    work = root / "work"
    (work / "sub" / "proj" / "write.py").write_text(writer)
    commit_all(work, "writer")
    git("push", "-q", "server", "main", cwd=work)
    run_ok(f"{url}#sub/proj", "-e", "write.py")
    newest = resolve_source(f"{url}#sub/proj")
    assert not (newest.directory / "output.txt").exists()
    run_id = runs_json()[0]["info"]["run_id"]
    assert (home / "work" / run_id / "sub" / "proj" / "output.txt").read_text() == "x"


def test_a_push_is_picked_up_by_the_branch_but_not_by_old_runs(
    home: Path, served: tuple[Path, dict[str, str]]
) -> None:
    root, commits = served
    url = (root / "served" / "repo.git").as_uri() + "#sub/proj"
    run_ok(url)
    work = root / "work"
    (work / "sub" / "proj" / "show.py").write_text(
        "import sys\nprint('version three', sys.argv[1])\n"
    )
    third = commit_all(work, "third")
    git("push", "-q", "server", "main", cwd=work)
    assert "version three" in run_ok(url).stdout
    runs = runs_json()
    assert runs[0]["data"]["tags"]["mlflow.source.git.commit"] == third
    # The first run's code is unchanged in its snapshot.
    old = resolve_source(url, version=commits["v2"])
    assert "version two" in (old.directory / "show.py").read_text()


def test_bad_git_input_is_one_clear_error(home: Path, served: tuple[Path, dict[str, str]]) -> None:
    root, _ = served
    url = (root / "served" / "repo.git").as_uri()
    missing_version = reprorun_cli("run", url + "#sub/proj", "--version", "no-such-tag")
    assert missing_version.returncode == 2
    assert "'no-such-tag' is not a branch, tag or commit" in missing_version.stderr
    assert "Branches: feature, main" in missing_version.stderr

    missing_subdir = reprorun_cli("run", url + "#nope")
    assert missing_subdir.returncode == 2 and "has no directory 'nope'" in missing_subdir.stderr

    unreachable = reprorun_cli("run", "https://user:hunter22@127.0.0.1:9/org/repo.git")
    assert unreachable.returncode == 2
    assert "git clone failed for https://127.0.0.1:9/org/repo.git" in unreachable.stderr
    assert "hunter22" not in unreachable.stderr + unreachable.stdout

    injection = reprorun_cli("run", url, "--version", "--upload-pack=touch /tmp/x")
    assert injection.returncode == 2 and "Invalid version" in injection.stderr

    assert runs_json() == []
    leftovers = [p for p in (home / "sources").rglob(".tmp-*")]
    assert leftovers == []


def test_credentials_never_reach_tags(home: Path, served: tuple[Path, dict[str, str]]) -> None:
    root, _ = served
    with smart_http(root / "served") as base:
        secret_url = base.replace("http://", "http://alice:s3cr3t-token@") + "/repo.git"
        result = run_ok(secret_url + "#sub/proj")
    assert "s3cr3t-token" not in result.stdout + result.stderr
    dumped = json.dumps(runs_json())
    assert "s3cr3t-token" not in dumped
    assert f"{base}/repo.git#sub/proj" in dumped


def test_local_repository_at_a_version_and_dirty_rerun(
    home: Path, served: tuple[Path, dict[str, str]]
) -> None:
    root, commits = served
    work = root / "work"
    project = work / "sub" / "proj"
    # A plain path with --version goes through the git cache.
    assert "version one 1" in run_ok(str(project), "--version", "v1.0").stdout

    # A dirty checkout runs in place; its changes are stored, and rerun reproduces them.
    (project / "show.py").write_text("import sys\nprint('uncommitted edit', sys.argv[1])\n")
    (project / "extra.txt").write_text("untracked\n")
    assert "uncommitted edit 7" in run_ok(str(project), "-P", "x=7").stdout
    original = runs_json()[0]
    tags = original["data"]["tags"]
    assert tags["reprorun.git.dirty"] == "true"
    assert tags["reprorun.git.diff"] == "source/uncommitted.diff"
    diff = Path(original["info"]["artifact_uri"][len("file://") :]) / "source" / "uncommitted.diff"
    assert b"uncommitted edit" in diff.read_bytes() and b"extra.txt" in diff.read_bytes()

    # The checkout moves on; the rerun still runs the recorded code with the recorded params.
    git("checkout", "-q", "--", ".", cwd=work)
    (project / "extra.txt").unlink()
    rerun = reprorun_cli("rerun", original["info"]["run_id"])
    assert rerun.returncode == 0, rerun.stderr
    assert "uncommitted edit 7" in rerun.stdout
    again = runs_json()[0]
    assert again["data"]["tags"]["reprorun.rerunOf"] == original["info"]["run_id"]
    assert again["data"]["tags"]["mlflow.source.git.commit"] == commits["v2"]
    assert again["data"]["params"] == {"x": "7"}

    override = reprorun_cli("rerun", original["info"]["run_id"][:8], "-P", "x=9")
    assert override.returncode == 0 and "uncommitted edit 9" in override.stdout


def test_rerun_of_a_git_url_run(home: Path, served: tuple[Path, dict[str, str]]) -> None:
    root, commits = served
    url = (root / "served" / "repo.git").as_uri() + "#sub/proj"
    run_ok(url, "--version", "v1.0", "-P", "x=3")
    original = runs_json()[0]["info"]["run_id"]
    result = reprorun_cli("rerun", original)
    assert result.returncode == 0, result.stderr
    assert "version one 3" in result.stdout
    assert runs_json()[0]["data"]["tags"]["mlflow.source.git.commit"] == commits["v1"]


def test_two_runs_fetching_the_same_repository_at_once(
    home: Path, served: tuple[Path, dict[str, str]]
) -> None:
    root, _ = served
    url = (root / "served" / "repo.git").as_uri() + "#sub/proj"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "reprorun", "run", url, "-P", f"x={i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(3)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert sorted(r["data"]["params"]["x"] for r in runs_json()) == ["0", "1", "2"]
    assert len(list((home / "sources" / "git").iterdir())) == 1


@pytest.mark.parametrize(
    ("url", "link"),
    [
        ("https://github.com/org/repo.git", "https://github.com/org/repo/tree/abc/sub"),
        ("git@github.com:org/repo.git", "https://github.com/org/repo/tree/abc/sub"),
        ("ssh://git@gitlab.com/group/repo", "https://gitlab.com/group/repo/-/tree/abc/sub"),
        ("https://token@bitbucket.org/team/repo", "https://bitbucket.org/team/repo/src/abc/sub"),
        ("https://git.example.com/org/repo", None),
    ],
)
def test_forge_links(url: str, link: str | None) -> None:
    assert commit_url(url, "abc", "sub") == link


@pytest.mark.parametrize(
    ("url", "clean"),
    [
        ("https://user:pw@host/r.git", "https://host/r.git"),
        ("https://token@host/r.git", "https://host/r.git"),
        ("ssh://git:pw@host/r.git", "ssh://git@host/r.git"),
        ("ssh://git@host/r.git", "ssh://git@host/r.git"),
        ("git@host:org/r.git", "git@host:org/r.git"),
    ],
)
def test_strip_credentials(url: str, clean: str) -> None:
    assert strip_credentials(url) == clean


def test_runs_show_links_to_the_commit(home: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_project(repo, "entry_points:\n  main:\n    command: 'true'\n")
    git("init", "-q", str(repo), cwd=tmp_path)
    git("remote", "add", "origin", "git@github.com:org/repo.git", cwd=repo)
    commit = commit_all(repo, "init")
    run_ok(str(repo))
    shown = reprorun_cli("runs", "show", runs_json()[0]["info"]["run_id"])
    assert f"https://github.com/org/repo/tree/{commit}" in shown.stdout


def test_a_run_cannot_change_the_cached_snapshot(
    home: Path, served: tuple[Path, dict[str, str]]
) -> None:
    # As root, read-only bits do not protect: the working copy must be a real copy.
    root, _commits = served
    url = (root / "served" / "repo.git").as_uri() + "#sub/proj"
    work = root / "work"
    (work / "sub" / "proj" / "clobber.py").write_text("open('data.txt', 'w').write('clobbered')\n")
    commit_all(work, "clobber")
    git("push", "-q", "server", "main", cwd=work)
    run_ok(url, "-e", "clobber.py")
    snapshot = resolve_source(url)
    assert (snapshot.directory / "data.txt").read_text() == "one\n"


def test_credentials_are_not_stored_in_the_mirror(
    home: Path, served: tuple[Path, dict[str, str]]
) -> None:
    root, _ = served
    with smart_http(root / "served") as base:
        secret_url = base.replace("http://", "http://alice:s3cr3t-token@") + "/repo.git"
        run_ok(secret_url + "#sub/proj")
    configs = list((home / "sources" / "git").glob("*/mirror.git/config"))
    assert len(configs) == 1
    assert "s3cr3t-token" not in configs[0].read_text()
    assert "alice" not in configs[0].read_text()


def test_a_rerun_of_a_rerun_runs_the_same_uncommitted_code(
    home: Path, served: tuple[Path, dict[str, str]]
) -> None:
    root, _ = served
    work = root / "work"
    project = work / "sub" / "proj"
    (project / "show.py").write_text("import sys\nprint('edited', sys.argv[1])\n")
    run_ok(str(project))
    git("checkout", "-q", "--", ".", cwd=work)
    first = runs_json()[0]["info"]["run_id"]
    second = reprorun_cli("rerun", first)
    assert "edited 1" in second.stdout
    third = reprorun_cli("rerun", runs_json()[0]["info"]["run_id"])
    assert third.returncode == 0, third.stderr
    assert "edited 1" in third.stdout
    assert runs_json()[0]["data"]["tags"]["reprorun.git.dirty"] == "true"


@pytest.mark.parametrize("form", ["ssh-url", "scp-like"])
def test_ssh_urls_go_through_the_users_ssh(
    home: Path,
    served: tuple[Path, dict[str, str]],
    tmp_path: Path,
    form: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No ssh server here: GIT_SSH_COMMAND (the user's own ssh set-up, which reprorun leaves
    # alone) points at a stand-in that runs git's remote command locally instead of on a host.
    root, commits = served
    fake_ssh = tmp_path / "fake-ssh"
    fake_ssh.write_text('#!/bin/sh\nwhile [ "$#" -gt 1 ]; do shift; done\nexec sh -c "$1"\n')
    fake_ssh.chmod(0o755)
    monkeypatch.setenv("GIT_SSH_COMMAND", str(fake_ssh))
    bare = root / "served" / "repo.git"
    url = f"ssh://git@localhost{bare}" if form == "ssh-url" else f"git@localhost:{bare}"
    result = run_ok(f"{url}#sub/proj", "--version", "v1.0")
    assert "version one 1" in result.stdout
    tags = runs_json()[0]["data"]["tags"]
    assert tags["mlflow.source.git.repoURL"] == url
    assert tags["mlflow.source.git.commit"] == commits["v1"]
