"""Local artifact storage: a run's artifacts live in a folder named by its file:// URI."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from reprorun.errors import TrackingError, UserInputError


@dataclass(frozen=True)
class FileInfo:
    path: str  # relative to the run's artifact root, '/'-separated
    is_dir: bool
    file_size: int | None


def local_dir(artifact_uri: str) -> Path:
    """The folder behind a file:// artifact URI (or a plain path)."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path))
    raise TrackingError(
        f"Artifact location {artifact_uri!r} is not local; only file:// artifacts are "
        "supported by this version."
    )


def safe_relative(artifact_path: str | None) -> PurePosixPath:
    """Validate a user-given artifact path: relative, no '..' component."""
    if not artifact_path:
        return PurePosixPath()
    path = PurePosixPath(artifact_path.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts:
        raise UserInputError(
            f"Invalid artifact path {artifact_path!r}: "
            "it must be relative and must not contain '..'."
        )
    return path


def log_file(artifact_uri: str, local_file: Path | str, artifact_path: str | None = None) -> str:
    """Copy a file into the run's artifacts; returns its relative artifact path."""
    src = Path(local_file)
    if not src.is_file():
        raise UserInputError(f"Cannot log artifact {src}: no such file.")
    rel = safe_relative(artifact_path) / src.name
    dest = local_dir(artifact_uri) / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest)
    return str(rel)


def log_dir(artifact_uri: str, local_dir_path: Path | str, artifact_path: str | None = None) -> str:
    """Copy a folder's contents into the run's artifacts (under ``artifact_path``)."""
    src = Path(local_dir_path)
    if not src.is_dir():
        raise UserInputError(f"Cannot log artifacts from {src}: no such directory.")
    rel = safe_relative(artifact_path)
    dest = (local_dir(artifact_uri) / rel).resolve()
    # List first, and skip the destination itself: logging a folder that contains the store
    # (e.g. the working directory) must not copy the artifacts into themselves.
    files = [
        f for f in sorted(src.resolve().rglob("*")) if f.is_file() and not f.is_relative_to(dest)
    ]
    root = src.resolve()
    for file in files:
        target = dest / file.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, target)
    dest.mkdir(parents=True, exist_ok=True)
    return str(rel)


def list_artifacts(
    artifact_uri: str, path: str | None = None, *, recursive: bool = False
) -> list[FileInfo]:
    root = local_dir(artifact_uri)
    base = root / safe_relative(path)
    if not base.is_dir():
        return []
    entries = sorted(base.rglob("*") if recursive else base.iterdir())
    return [
        FileInfo(
            path=entry.relative_to(root).as_posix(),
            is_dir=entry.is_dir(),
            file_size=None if entry.is_dir() else entry.stat().st_size,
        )
        for entry in entries
    ]
