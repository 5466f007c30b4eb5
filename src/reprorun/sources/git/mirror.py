"""The cache of git projects: one mirror per URL, one immutable snapshot per commit, under
``<home>/sources/git/<key>/``; ``resolve_git`` is the entry point."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

from reprorun._utils import die_with_parent
from reprorun.errors import GitError, SourceNotFound
from reprorun.sources.base import Provenance, ResolvedSource, redact, strip_credentials
from reprorun.sources.cache import (
    key_for,
    lock,
    make_read_only,
    publish,
    remove_stale_builds,
    sources_root,
)
from reprorun.sources.git.command import GIT_ENV, clone
from reprorun.sources.git.refs import resolve_version


def resolve_git(url: str, version: str | None, subdirectory: str | None) -> ResolvedSource:
    """Fetch (if needed) and snapshot ``url`` at ``version``; return the project directory."""
    clean_url = strip_credentials(url)
    root = sources_root() / "git" / key_for(clean_url)
    mirror = root / "mirror.git"
    with lock(root / "lock"):
        remove_stale_builds(root)  # clones and exports of a process killed midway
        remove_stale_builds(root / "snapshots")
        if not mirror.exists():
            publish(mirror, lambda tmp: clone(url, tmp), private=True)
            fetched = True
        else:
            fetched = False
        resolved = resolve_version(mirror, url, version, fetched)
        commit = resolved.commit
        snapshot = root / "snapshots" / commit
        publish(snapshot, lambda tmp: _export(mirror, url, commit, tmp), private=True)
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
        git_branch=resolved.branch,
        git_dirty=False,
        subdirectory=subdirectory,
        version=version,
        uri=clean_url + (f"#{subdirectory}" if subdirectory else ""),
        ref_check=resolved.check,
        ref_check_warning=resolved.warning,
    )
    return ResolvedSource(directory, provenance, snapshot=snapshot)


def _export(mirror: Path, url: str, commit: str, dest: Path) -> None:
    """Write the tree of ``commit`` into ``dest`` (git archive, streamed through tarfile)."""
    dest.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **GIT_ENV}
    proc = subprocess.Popen(
        ["git", "archive", "--format=tar", commit],
        cwd=mirror,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=die_with_parent(),
    )
    assert proc.stdout is not None
    with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
        archive.extractall(dest, filter="data")
    _, err = proc.communicate()
    if proc.returncode != 0:
        message = redact(err.decode(errors="replace"), url)
        raise GitError(f"git archive failed for {strip_credentials(url)}: {message}")
    make_read_only(dest)
