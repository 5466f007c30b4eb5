"""Local project directories, and the git provenance of a directory inside a checkout."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse, urlunparse

from reprorun.errors import SourceNotFound

_REMOTE_RE = re.compile(r"^(https?|ssh|git|git\+ssh)://|^[\w.-]+@[\w.-]+:")


@dataclass(frozen=True)
class Provenance:
    """Where a run's code came from; recorded as MLflow's source tags."""

    source_name: str
    source_type: str = "PROJECT"
    git_commit: str | None = None
    git_repo_url: str | None = None
    git_branch: str | None = None
    git_dirty: bool | None = None
    subdirectory: str | None = None


@dataclass(frozen=True)
class ResolvedSource:
    directory: Path
    provenance: Provenance


def strip_credentials(url: str) -> str:
    """Remove user:password@ from a URL, so no secret lands in a tag."""
    parsed = urlparse(url)
    if parsed.scheme and parsed.netloc and "@" in parsed.netloc:
        host = parsed.netloc.rsplit("@", 1)[1]
        return urlunparse(parsed._replace(netloc=host))
    return url


def resolve_source(uri: str, *, cwd: Path | None = None) -> ResolvedSource:
    """Resolve a project URI. This version handles local directories (git checkouts or not)."""
    if _REMOTE_RE.match(uri) or uri.endswith((".zip", ".tar.gz", ".tgz")):
        raise SourceNotFound(
            f"Project URI {uri!r}: remote git URLs and archives are not supported yet by this "
            "version; clone the repository and run the local directory."
        )
    location, _, subdir = uri.partition("#")  # MLflow's `uri#sub/dir`
    path = Path(location[len("file://") :] if location.startswith("file://") else location)
    path = path.expanduser()
    if not path.is_absolute():
        path = (cwd or Path.cwd()) / path
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


def git_info(directory: Path) -> Provenance:
    """Commit, remote, branch and dirty flag of ``directory``'s checkout (if it is in one)."""
    plain = Provenance(source_name=str(directory))
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--show-toplevel", "HEAD", "--abbrev-ref", "HEAD"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return plain  # no git binary: provenance is the path alone
    lines = head.stdout.split()
    if head.returncode != 0 or len(lines) != 3:
        return plain  # not a checkout, or a repository without commits
    toplevel, commit, branch = Path(lines[0]), lines[1], lines[2]
    try:
        remote = subprocess.run(
            ["git", "config", "--get", "remote.origin.url"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
        # Dirty means: the project folder differs from the commit (untracked files included);
        # changes elsewhere in the repository do not make this project's run dirty.
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=normal", "--", "."],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        return Provenance(source_name=str(directory), git_commit=commit)
    subdir = directory.relative_to(toplevel.resolve()).as_posix()
    subdir_or_none = None if subdir == "." else subdir
    repo_url = strip_credentials(remote) if remote else None
    if repo_url:
        source_name = repo_url + (f"#{subdir_or_none}" if subdir_or_none else "")
    else:
        source_name = str(directory)
    return Provenance(
        source_name=source_name,
        git_commit=commit,
        git_repo_url=repo_url,
        git_branch=None if branch == "HEAD" else branch,
        git_dirty=bool(status.stdout.strip()) if status.returncode == 0 else None,
        subdirectory=subdir_or_none,
    )
