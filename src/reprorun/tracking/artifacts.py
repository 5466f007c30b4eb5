"""Artifact storage. A run's artifacts live in a folder named by its file:// URI, or behind a
tracking server's artifact proxy (``mlflow-artifacts:/...``, streamed over HTTP)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from reprorun.errors import TrackingError, UserInputError


@dataclass(frozen=True)
class FileInfo:
    path: str  # relative to the run's artifact root, '/'-separated
    is_dir: bool
    file_size: int | None


PROXY_PATH = "/api/2.0/mlflow-artifacts/artifacts"


def is_remote(artifact_uri: str) -> bool:
    return urlparse(artifact_uri).scheme in ("mlflow-artifacts", "http", "https")


def local_dir(artifact_uri: str) -> Path:
    """The folder behind a file:// artifact URI (or a plain path)."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path))
    raise TrackingError(
        f"Artifact location {artifact_uri!r} is not a local folder (it is served by a tracking "
        "server); download what you need with reprorun runs artifacts / the API."
    )


def _proxy(artifact_uri: str, tracking_uri: str | None) -> tuple[Any, str]:
    """The HTTP client and base path for a proxied artifact URI. ``mlflow-artifacts:/p`` is
    relative to the tracking server (``tracking_uri`` or the one in the environment)."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme in ("http", "https"):
        return _client(f"{parsed.scheme}://{parsed.netloc}"), parsed.path.rstrip("/")
    if parsed.netloc:
        base = f"http://{parsed.netloc}"
    else:
        base = (
            tracking_uri
            or os.environ.get("REPRORUN_TRACKING_URI")
            or os.environ.get("MLFLOW_TRACKING_URI")
            or ""
        )
        if not base.startswith(("http://", "https://")):
            raise TrackingError(
                f"Artifact location {artifact_uri!r} needs the tracking server's address: set "
                "REPRORUN_TRACKING_URI (or --tracking-uri) to it."
            )
    return _client(base.rstrip("/")), PROXY_PATH + "/" + parsed.path.strip("/")


def _client(base: str) -> Any:
    from reprorun.tracking.http import client_for

    return client_for(base)


def _upload(artifact_uri: str, src: Path, rel: PurePosixPath, tracking_uri: str | None) -> None:
    client, base = _proxy(artifact_uri, tracking_uri)
    from reprorun.tracking.http import error_from_response

    with open(src, "rb") as body:  # http.client streams a file object in blocks
        response = client.request(
            "PUT",
            f"{base}/{rel.as_posix()}",
            body=body,
            headers={"Content-Length": str(src.stat().st_size)},
        )
    if response.status >= 400:
        raise error_from_response(response.status, response.data, f"upload {rel}")


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


def log_file(
    artifact_uri: str,
    local_file: Path | str,
    artifact_path: str | None = None,
    *,
    tracking_uri: str | None = None,
) -> str:
    """Copy a file into the run's artifacts; returns its relative artifact path."""
    src = Path(local_file)
    if not src.is_file():
        raise UserInputError(f"Cannot log artifact {src}: no such file.")
    rel = safe_relative(artifact_path) / src.name
    if is_remote(artifact_uri):
        _upload(artifact_uri, src, rel, tracking_uri)
        return str(rel)
    dest = local_dir(artifact_uri) / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest)
    return str(rel)


def log_dir(
    artifact_uri: str,
    local_dir_path: Path | str,
    artifact_path: str | None = None,
    *,
    tracking_uri: str | None = None,
) -> str:
    """Copy a folder's contents into the run's artifacts (under ``artifact_path``)."""
    src = Path(local_dir_path)
    if not src.is_dir():
        raise UserInputError(f"Cannot log artifacts from {src}: no such directory.")
    rel = safe_relative(artifact_path)
    if is_remote(artifact_uri):
        root = src.resolve()
        for file in sorted(root.rglob("*")):
            if file.is_file():
                _upload(artifact_uri, file, rel / file.relative_to(root).as_posix(), tracking_uri)
        return str(rel)
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
    artifact_uri: str,
    path: str | None = None,
    *,
    recursive: bool = False,
    tracking_uri: str | None = None,
) -> list[FileInfo]:
    if is_remote(artifact_uri):
        return _list_remote(artifact_uri, safe_relative(path), recursive, tracking_uri)
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


def _list_remote(
    artifact_uri: str, rel: PurePosixPath, recursive: bool, tracking_uri: str | None
) -> list[FileInfo]:
    client, base = _proxy(artifact_uri, tracking_uri)
    root = base[len(PROXY_PATH) + 1 :]
    sub = rel.as_posix()
    listed = client.call("GET", PROXY_PATH, {"path": root if sub == "." else f"{root}/{sub}"})
    result = []
    for f in listed.get("files", []):
        child = rel / safe_relative(f["path"])
        info = FileInfo(child.as_posix(), bool(f.get("is_dir")), f.get("file_size"))
        result.append(info)
        if recursive and info.is_dir:
            result += _list_remote(artifact_uri, child, True, tracking_uri)
    return sorted(result, key=lambda i: i.path)


def download(
    artifact_uri: str, path: str, dest: Path | str, *, tracking_uri: str | None = None
) -> Path:
    """Copy one artifact file (or a folder, recursively) to ``dest``; returns the local path."""
    rel = safe_relative(path)
    target = Path(dest) / (rel.name or "artifacts")
    if not is_remote(artifact_uri):
        source = local_dir(artifact_uri) / rel
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        elif source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        else:
            raise UserInputError(f"No artifact {path!r} in {artifact_uri}.")
        return target
    entries = _list_remote(artifact_uri, rel.parent, False, tracking_uri)
    entry = next((e for e in entries if e.path == rel.as_posix()), None)
    if entry is None:
        raise UserInputError(f"No artifact {path!r} in {artifact_uri}.")
    files = [entry]
    if entry.is_dir:
        files = [e for e in _list_remote(artifact_uri, rel, True, tracking_uri) if not e.is_dir]
    client, base = _proxy(artifact_uri, tracking_uri)
    for f in files:
        local = target / PurePosixPath(f.path).relative_to(rel) if entry.is_dir else target
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_name(local.name + ".part")
        with open(partial, "wb") as out:
            for chunk in client.download(f"{base}/{f.path}"):
                out.write(chunk)
        partial.replace(local)
    return target
