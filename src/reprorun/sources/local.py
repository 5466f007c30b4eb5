"""Local project directories, and the git provenance of a directory inside a checkout."""

from __future__ import annotations

import subprocess
from pathlib import Path

from reprorun.errors import SourceNotFound
from reprorun.sources.base import Provenance, ResolvedSource, strip_credentials

MAX_DIFF_BYTES = 50 * 1024 * 1024


def resolve_local(uri: str, path: Path, subdir: str | None) -> ResolvedSource:
    """A local directory, run in place; inside a git checkout, with its git provenance."""
    if subdir:
        if not path.is_dir():
            raise SourceNotFound(f"Project URI {uri!r}: no such directory ({path}).")
        inner = (path / subdir).resolve()
        if not inner.is_relative_to(path.resolve()):
            raise SourceNotFound(f"Project URI {uri!r}: the subdirectory leaves {path}.")
        path = inner
    if not path.exists():
        raise SourceNotFound(f"Project URI {uri!r}: no such directory ({path}).")
    if not path.is_dir():
        raise SourceNotFound(
            f"Project URI {uri!r} is a file, not a project directory. To run a script, give its "
            "directory and the script as the entry point: "
            f"reprorun run {path.parent} -e {path.name}"
        )
    directory = path.resolve()
    return ResolvedSource(directory, git_info(directory))


def _git(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True, timeout=60)


def git_info(directory: Path) -> Provenance:
    """Commit, remote, branch and dirty flag of ``directory``'s checkout (if it is in one)."""
    plain = Provenance(source_name=str(directory))
    try:
        head = _git(directory, "rev-parse", "--show-toplevel", "HEAD", "--abbrev-ref", "HEAD")
    except (OSError, subprocess.TimeoutExpired):
        return plain  # no git binary: provenance is the path alone
    lines = head.stdout.split()
    if head.returncode != 0 or len(lines) != 3:
        return plain  # not a checkout, or a repository without commits
    toplevel, commit, branch = Path(lines[0]), lines[1], lines[2]
    try:
        remote = _git(directory, "config", "--get", "remote.origin.url").stdout.strip()
        # Dirty means: the project folder differs from the commit (untracked files included);
        # changes elsewhere in the repository do not make this project's run dirty.
        status = _git(directory, "status", "--porcelain", "--untracked-files=normal", "--", ".")
    except subprocess.TimeoutExpired:
        return Provenance(source_name=str(directory), git_commit=commit)
    subdir = directory.relative_to(toplevel.resolve()).as_posix()
    subdir_or_none = None if subdir == "." else subdir
    repo_url = strip_credentials(remote) if remote else None
    if repo_url:
        source_name = repo_url + (f"#{subdir_or_none}" if subdir_or_none else "")
    else:
        source_name = str(directory)
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return Provenance(
        source_name=source_name,
        git_commit=commit,
        git_repo_url=repo_url,
        git_branch=None if branch == "HEAD" else branch,
        git_dirty=dirty,
        subdirectory=subdir_or_none,
        uri=str(directory),
        uncommitted_diff=uncommitted_diff(directory, toplevel) if dirty else None,
    )


def uncommitted_diff(directory: Path, toplevel: Path) -> bytes | None:
    """What the project folder has beyond HEAD, untracked files included, as one binary patch
    (paths relative to the repository root, for ``git apply`` on the commit's tree).
    None when it would exceed MAX_DIFF_BYTES (then only the dirty flag is recorded)."""
    try:
        tracked = subprocess.run(
            ["git", "diff", "HEAD", "--binary", "--", "."],
            cwd=directory,
            capture_output=True,
            timeout=120,
        ).stdout
        untracked = subprocess.run(
            ["git", "ls-files", "--others", "--exclude-standard", "--full-name", "-z", "--", "."],
            cwd=directory,
            capture_output=True,
            timeout=120,
        ).stdout.split(b"\0")
        parts = [tracked]
        size = len(tracked)
        for name in filter(None, untracked):
            patch = subprocess.run(
                ["git", "diff", "--binary", "--no-index", "--", "/dev/null", name.decode()],
                cwd=toplevel,
                capture_output=True,
                timeout=120,
            ).stdout
            size += len(patch)
            if size > MAX_DIFF_BYTES:
                return None
            parts.append(patch)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return b"".join(parts)
