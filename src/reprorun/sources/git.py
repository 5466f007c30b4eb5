"""Projects from git repositories: one mirror per URL, one immutable snapshot per commit.

Layout under ``<home>/sources/git/<key>/``: ``mirror.git`` (a bare mirror clone), ``lock``,
and ``snapshots/<commit>/`` (the tree at that commit, files read-only). The mirror is fetched
only when the requested version is not already there; branches (and the default branch) are
always fetched, since they move. Authentication is the user's own git configuration.
"""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

from reprorun.errors import SourceNotFound
from reprorun.sources.base import Provenance, ResolvedSource, redact, strip_credentials
from reprorun.sources.cache import key_for, lock, make_read_only, publish, sources_root

GIT_TIMEOUT_SECONDS = 600
# No terminal prompts for credentials: a missing credential is an error the user can act on.
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": "", "LC_ALL": "C"}


class GitError(SourceNotFound):
    """A git command failed; the message carries git's own words, credentials removed."""


def _git(
    args: list[str], url: str, *, cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **_GIT_ENV}
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_SECONDS,
        )
    except FileNotFoundError as exc:
        raise GitError(
            "git is not installed (reprorun needs the git command for git URLs)."
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise GitError(
            f"git {args[0]} of {strip_credentials(url)} timed out after {GIT_TIMEOUT_SECONDS} s."
        ) from exc
    if check and done.returncode != 0:
        message = redact((done.stderr or done.stdout).strip(), url)
        raise GitError(f"git {args[0]} failed for {strip_credentials(url)}: {message}")
    return done


def resolve_git(url: str, version: str | None, subdirectory: str | None) -> ResolvedSource:
    """Fetch (if needed) and snapshot ``url`` at ``version``; return the project directory."""
    clean_url = strip_credentials(url)
    root = sources_root() / "git" / key_for(clean_url)
    mirror = root / "mirror.git"
    with lock(root / "lock"):
        if not mirror.exists():
            publish(mirror, lambda tmp: _clone(url, tmp))
            fetched = True
        else:
            fetched = False
        commit, branch = _resolve_version(mirror, url, version, fetched)
        snapshot = root / "snapshots" / commit
        publish(snapshot, lambda tmp: _export(mirror, url, commit, tmp))
    directory = snapshot
    if subdirectory:
        directory = (snapshot / subdirectory).resolve()
        if not directory.is_relative_to(snapshot) or not directory.is_dir():
            raise SourceNotFound(
                f"{clean_url}: commit {commit[:12]} has no directory {subdirectory!r}."
            )
    provenance = Provenance(
        source_name=clean_url + (f"#{subdirectory}" if subdirectory else ""),
        source_kind="git",
        git_commit=commit,
        git_repo_url=clean_url,
        git_branch=branch,
        git_dirty=False,
        subdirectory=subdirectory,
        version=version,
        uri=clean_url + (f"#{subdirectory}" if subdirectory else ""),
    )
    return ResolvedSource(directory, provenance, snapshot=snapshot)


_REFSPECS = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]


def _clone(url: str, dest: Path) -> None:
    _git(["clone", "--mirror", "--quiet", "--", url, str(dest)], url)
    # Credentials in the URL are used for this command only, never stored: the mirror keeps
    # the clean URL, and later fetches get the URL (with whatever credentials) each time.
    _git(["remote", "set-url", "origin", strip_credentials(url)], url, cwd=dest)


def _fetch(mirror: Path, url: str) -> None:
    _git(["fetch", "--prune", "--quiet", "--", url, *_REFSPECS], url, cwd=mirror)


def _rev_parse(mirror: Path, url: str, rev: str) -> str | None:
    done = _git(
        ["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], url, cwd=mirror, check=False
    )
    return done.stdout.strip() if done.returncode == 0 else None


def _is_branch(mirror: Path, url: str, name: str) -> bool:
    done = _git(
        ["show-ref", "--verify", "--quiet", f"refs/heads/{name}"], url, cwd=mirror, check=False
    )
    return done.returncode == 0


def _resolve_version(
    mirror: Path, url: str, version: str | None, fetched: bool
) -> tuple[str, str | None]:
    """(commit, branch or None). Exact commits and tags already present need no network."""
    if version is None:
        if not fetched:
            _fetch(mirror, url)
        head = _git(["symbolic-ref", "--quiet", "--short", "HEAD"], url, cwd=mirror, check=False)
        branch = head.stdout.strip() or None
        commit = _rev_parse(mirror, url, "HEAD")
        if commit is None:
            raise SourceNotFound(f"{strip_credentials(url)} has no commits.")
        return commit, branch
    if version.startswith("-") or not version.strip() or any(c.isspace() for c in version):
        raise SourceNotFound(f"Invalid version {version!r}: expected a branch, tag or commit.")
    if not fetched and _is_branch(mirror, url, version):
        _fetch(mirror, url)  # a branch moves: take its newest commit
        fetched = True
    commit = _rev_parse(mirror, url, version)  # tags, branches, full or short commits
    if commit is None and not fetched:
        _fetch(mirror, url)
        commit = _rev_parse(mirror, url, version)
    if commit is None:
        raise SourceNotFound(
            f"Version {version!r} is not a branch, tag or commit of {strip_credentials(url)}. "
            f"{_known_refs(mirror, url)}"
        )
    return commit, version if _is_branch(mirror, url, version) else None


def _known_refs(mirror: Path, url: str) -> str:
    done = _git(
        ["for-each-ref", "--format=%(refname)", "refs/heads", "refs/tags"],
        url,
        cwd=mirror,
        check=False,
    )
    heads = [
        r.removeprefix("refs/heads/") for r in done.stdout.split() if r.startswith("refs/heads/")
    ]
    tags = [r.removeprefix("refs/tags/") for r in done.stdout.split() if r.startswith("refs/tags/")]
    text = f"Branches: {', '.join(heads[:20]) or 'none'}."
    return text + (f" Tags: {', '.join(tags[-20:])}." if tags else "")


def _export(mirror: Path, url: str, commit: str, dest: Path) -> None:
    """Write the tree of ``commit`` into ``dest`` (git archive, streamed through tarfile)."""
    dest.mkdir(parents=True)
    env = {**os.environ, **_GIT_ENV}
    proc = subprocess.Popen(
        ["git", "archive", "--format=tar", commit],
        cwd=mirror,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
        archive.extractall(dest, filter="data")
    _, err = proc.communicate()
    if proc.returncode != 0:
        message = redact(err.decode(errors="replace"), url)
        raise GitError(f"git archive failed for {strip_credentials(url)}: {message}")
    make_read_only(dest)
