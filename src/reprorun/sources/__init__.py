"""Project sources: turn a URI into a local directory plus where the code came from.

path/to/dir[#sub/dir]                 a local directory, run in place
path/to/repo --version V              a local repository at a branch, tag or commit
file:///repo.git, https://, ssh://,   git repositories (mirror + snapshot per commit)
  git://, git@host:org/repo[#sub/dir]
x.zip, x.tar.gz (path or http(s) URL) archives (unpacked once per content hash)
"""

from __future__ import annotations

import re
from pathlib import Path

from reprorun.errors import SourceNotFound
from reprorun.sources.base import (
    Provenance,
    ResolvedSource,
    is_archive,
    redact,
    strip_credentials,
)
from reprorun.sources.local import git_info

__all__ = [
    "Provenance",
    "ResolvedSource",
    "git_info",
    "redact",
    "resolve_source",
    "strip_credentials",
]

_GIT_URL_RE = re.compile(r"^(https?|ssh|git|git\+ssh|file)://|^[\w.-]+@[\w.-]+:", re.IGNORECASE)


def split_subdirectory(uri: str) -> tuple[str, str | None]:
    """``repo#sub/dir`` -> (``repo``, ``sub/dir``), as MLflow writes it."""
    location, _, subdir = uri.partition("#")
    subdir = subdir.strip("/")
    return location, subdir or None


def resolve_source(
    uri: str,
    *,
    version: str | None = None,
    cwd: Path | None = None,
    archive_sha256: str | None = None,
) -> ResolvedSource:
    """Resolve a project URI (see the module docstring) to a directory and its provenance."""
    cwd = cwd or Path.cwd()
    location, subdir = split_subdirectory(uri)
    if not location:
        raise SourceNotFound(f"Project URI {uri!r} names no location.")
    if is_archive(location):
        from reprorun.sources.archive import resolve_archive

        if version is not None:
            raise SourceNotFound(
                "--version applies to git repositories, not to the archive "
                f"{strip_credentials(location)}."
            )
        return resolve_archive(location, subdir, cwd=cwd, expected_sha256=archive_sha256)
    if _GIT_URL_RE.match(location):
        from reprorun.sources.git.mirror import resolve_git

        if location.lower().startswith("file://"):
            repo = Path(location[len("file://") :]).expanduser()
            location = (repo if repo.is_absolute() else cwd / repo).resolve().as_uri()
        return resolve_git(location, version, subdir)

    path = Path(location).expanduser()
    path = (path if path.is_absolute() else cwd / path).resolve()
    if _is_bare_repository(path) or (version is not None and path.is_dir()):
        # A local repository at a version: through the git cache like any other URL.
        from reprorun.sources.git.mirror import resolve_git

        toplevel, inner = _repository_root(path)
        if toplevel is None:
            raise SourceNotFound(
                f"--version {version} needs a git repository; {path} is not in one."
            )
        sub = "/".join(p for p in (inner, subdir) if p) or None
        return resolve_git(toplevel.as_uri(), version, sub)
    from reprorun.sources.local import resolve_local

    return resolve_local(uri, path, subdir)


def _is_bare_repository(path: Path) -> bool:
    return (path / "HEAD").is_file() and (path / "objects").is_dir() and (path / "refs").is_dir()


def _repository_root(path: Path) -> tuple[Path | None, str | None]:
    """(repository root, path inside it) for a bare repository or a folder in a checkout."""
    if _is_bare_repository(path):
        return path, None
    for candidate in (path, *path.parents):
        if (candidate / ".git").exists():
            inner = path.relative_to(candidate).as_posix()
            return candidate, None if inner == "." else inner
    return None, None
