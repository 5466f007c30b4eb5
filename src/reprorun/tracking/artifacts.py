"""Artifact storage. A run's artifacts live in a folder named by its file:// URI, in S3 or an
S3-compatible server (``s3://bucket/prefix``, through boto3: ``tracking/s3.py``), or behind a
tracking server's artifact proxy (``mlflow-artifacts:/...``, streamed over HTTP). Each function
below takes any of them; ``is_remote`` says the location is not a folder on this machine.

Every artifact path stays inside the folder it is asked under (the run's or model's artifact
folder): a path with ``..``, an absolute path, a NUL or their percent-encoded forms is refused
(``UserInputError``), and so is a path through a symbolic link that points out of the folder
(to /etc, another run, a file elsewhere). Listings omit such links (and dangling ones), and
downloads copy what the listing shows; writes never follow a link out (a file is written beside
its name and renamed over it, replacing a link itself). A link to a file or folder inside the
same artifact folder is listed and read as its target, and a recursive listing (so a download)
enters a linked folder as it would the folder itself, except a link back to a folder the path
already passes through (``a/loop -> ..``): that one is listed with no entries, so a listing
always ends. Asked for such a looping path directly, a listing is empty too, which keeps the
proxy's one-level listings (that a remote client walks) the same.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
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
    """Whether the artifacts are not a folder on this machine (a server's proxy, or S3)."""
    return urlparse(artifact_uri).scheme in ("mlflow-artifacts", "http", "https", "s3")


def is_s3(artifact_uri: str) -> bool:
    return urlparse(artifact_uri).scheme == "s3"


def _s3_at(artifact_uri: str, rel: PurePosixPath | str = "") -> Any:
    from reprorun.tracking.s3 import Location

    return Location.parse(artifact_uri).join(rel)


def check_storage(artifact_uri: str) -> None:
    """Fail now, saying what to fix, when artifacts at ``artifact_uri`` cannot be stored:
    for S3, boto3 or credentials missing, no such bucket, an endpoint out of reach (one
    request). Nothing to check for a folder or a tracking server's proxy."""
    if is_s3(artifact_uri):
        from reprorun.tracking import s3

        s3.preflight(_s3_at(artifact_uri))


def local_dir(artifact_uri: str) -> Path:
    """The folder behind a file:// artifact URI (or a plain path)."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path))
    if not is_remote(artifact_uri):  # recorded elsewhere (by MLflow): gs://, dbfs:/, ...
        raise TrackingError(
            f"Artifact location {artifact_uri!r}: reprorun cannot read {parsed.scheme}: "
            "locations (it reads folders, s3://... and tracking servers' mlflow-artifacts:/)."
        )
    where = "in object storage" if parsed.scheme == "s3" else "served by a tracking server"
    raise TrackingError(
        f"Artifact location {artifact_uri!r} is not a local folder (it is {where}); "
        "download what you need with reprorun runs artifacts / the API."
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
        from reprorun.tracking import run_context

        base = (
            tracking_uri
            or run_context.tracking_uri()
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
    from reprorun.tracking import s3_presigned
    from reprorun.tracking.http import error_from_response

    # A large file straight to the server's bucket in presigned parts, when it can sign them.
    large = src.stat().st_size >= s3_presigned.DIRECT_BYTES
    direct = large and base.startswith(PROXY_PATH) and s3_presigned.enabled()
    if direct and s3_presigned.upload(client, base[len(PROXY_PATH) :], src, rel):
        return

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
    """Validate a user-given artifact path: relative, no '..' component, no NUL, in plain or
    percent-encoded form (a proxy decodes the path again)."""
    if not artifact_path:
        return PurePosixPath()
    path = PurePosixPath(artifact_path.replace("\\", "/"))
    decoded = artifact_path
    for _ in range(3):
        decoded = unquote(decoded)
    plain = PurePosixPath(decoded.replace("\\", "/"))
    if (
        "\x00" in decoded
        or path.is_absolute()
        or plain.is_absolute()
        or ".." in path.parts
        or ".." in plain.parts
    ):
        raise UserInputError(
            f"Invalid artifact path {artifact_path!r}: "
            "it must be relative and must not contain '..' (nor a NUL)."
        )
    return path


def real_chain(root: Path, rel: PurePosixPath) -> list[Path] | None:
    """The real paths (links resolved) of the resolved folder ``root`` and of each step of the
    relative path ``rel`` under it, ``rel``'s own last; None if a step leads out of ``root``
    (a symbolic link pointing out, even one whose target links back in)."""
    chain = [root]
    for part in rel.parts:
        real = (chain[-1] / part).resolve()
        if not real.is_relative_to(root):
            return None
        chain.append(real)
    return chain


def loops(chain: list[Path]) -> bool:
    """Whether a path passes through the same real folder twice (a link back to a folder it
    is already in): a listing shows no entries there, as a recursive one does not enter it."""
    return len(set(chain)) < len(chain)


def _chain(artifact_uri: str, path: str | None) -> list[Path]:
    root = local_dir(artifact_uri).resolve()
    chain = real_chain(root, safe_relative(path))
    if chain is None:
        raise UserInputError(
            f"Invalid artifact path {path!r}: it leads out of the artifact folder "
            f"{root} (through a symbolic link)."
        )
    return chain


def local_path(artifact_uri: str, path: str | None) -> Path:
    """The real path ``path`` names in a local artifact folder (links resolved); refused if it
    is unsafe (see ``safe_relative``) or leads outside the folder (a link pointing out)."""
    return _chain(artifact_uri, path)[-1]


@dataclass(frozen=True)
class Entry:
    """A folder entry that stays inside the artifact root; ``path`` is where it really is."""

    name: str
    path: Path
    is_dir: bool
    size: int | None  # None for a folder


def entries_inside(folder: Path, root: Path) -> list[Entry]:
    """The entries of ``folder`` (under the resolved ``root``), sorted by name, without the
    symbolic links that point out of ``root`` or nowhere."""
    result = []
    with os.scandir(folder) as scan:
        for item in scan:
            real = Path(item.path)
            if item.is_symlink():
                real = real.resolve()
                if not real.is_relative_to(root) or not real.exists():
                    continue
            try:  # an entry removed meanwhile is not listed
                is_dir = real.is_dir()
                size = None if is_dir else real.stat().st_size
            except OSError:
                continue
            result.append(Entry(item.name, real, is_dir, size))
    return sorted(result, key=lambda e: e.name)


def _write_inside(root: Path, rel: PurePosixPath, write: Any) -> None:
    """Create the file ``rel`` under ``root`` with ``write(open_binary_file)``: its folders are
    made inside ``root`` only, and the file is written beside its name then renamed over it,
    so a symbolic link already there is replaced, never written through."""
    root.mkdir(parents=True, exist_ok=True)
    real_root = root.resolve()
    parent = (real_root / rel.parent).resolve()
    if not parent.is_relative_to(real_root):
        raise UserInputError(
            f"Cannot write artifact {rel.as_posix()!r}: {rel.parent.as_posix()!r} leads out of "
            f"the artifact folder {real_root} (through a symbolic link)."
        )
    parent.mkdir(parents=True, exist_ok=True)
    dest = parent / rel.name
    if dest.is_dir() and not dest.is_symlink():
        raise UserInputError(f"Cannot write artifact {rel.as_posix()!r}: it is a folder.")
    # A new name (O_EXCL: never an existing file or link), with the mode the umask gives.
    tmp = parent / f".{rel.name}.{secrets.token_hex(6)}.part"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
        tmp.replace(dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _copy_inside(root: Path, rel: PurePosixPath, src: Path) -> None:
    def write(out: Any) -> None:
        with open(src, "rb") as f:
            shutil.copyfileobj(f, out)

    _write_inside(root, rel, write)
    shutil.copystat(src, (root.resolve() / rel.parent).resolve() / rel.name)


def write_text(artifact_uri: str, artifact_file: str, text: str) -> None:
    """Write ``text`` (UTF-8) as the artifact file ``artifact_file`` (a folder or S3)."""
    rel = safe_relative(artifact_file)
    if is_s3(artifact_uri):
        from reprorun.tracking import s3

        s3.put_bytes(_s3_at(artifact_uri, rel), text.encode("utf-8"))
        return
    _write_inside(local_dir(artifact_uri), rel, lambda out: out.write(text.encode("utf-8")))


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
    if is_s3(artifact_uri):
        from reprorun.tracking import s3

        s3.upload_file(_s3_at(artifact_uri, rel), src)
        return str(rel)
    if is_remote(artifact_uri):
        _upload(artifact_uri, src, rel, tracking_uri)
        return str(rel)
    _copy_inside(local_dir(artifact_uri), rel, src)
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
        named = [(f, rel / f.relative_to(root).as_posix()) for f in sorted(root.rglob("*"))]
        named = [(f, name) for f, name in named if f.is_file()]
        if is_s3(artifact_uri):
            from reprorun.tracking import s3

            s3.upload_files([(_s3_at(artifact_uri, name), f) for f, name in named])
            return str(rel)
        for file, name in named:
            _upload(artifact_uri, file, name, tracking_uri)
        return str(rel)
    folder = local_dir(artifact_uri)
    dest = local_path(artifact_uri, str(rel)) if rel.parts else folder.resolve()
    # List first, and skip the destination itself: logging a folder that contains the store
    # (e.g. the working directory) must not copy the artifacts into themselves.
    files = [
        f for f in sorted(src.resolve().rglob("*")) if f.is_file() and not f.is_relative_to(dest)
    ]
    root = src.resolve()
    for file in files:
        _copy_inside(folder, rel / file.relative_to(root).as_posix(), file)
    local_path(artifact_uri, str(rel)).mkdir(parents=True, exist_ok=True)
    return str(rel)


def list_artifacts(
    artifact_uri: str,
    path: str | None = None,
    *,
    recursive: bool = False,
    tracking_uri: str | None = None,
) -> list[FileInfo]:
    if is_s3(artifact_uri):
        return _list_s3(artifact_uri, safe_relative(path), recursive)
    if is_remote(artifact_uri):
        return _list_remote(artifact_uri, safe_relative(path), recursive, tracking_uri)
    return [info for info, _ in _walk_local(artifact_uri, path, recursive)]


def _list_s3(artifact_uri: str, rel: PurePosixPath, recursive: bool) -> list[FileInfo]:
    """The listing under ``rel`` in S3 (empty when ``rel`` is a file, as a folder's is)."""
    from reprorun.tracking import s3

    found = s3.listing(_s3_at(artifact_uri, rel), recursive)
    return [FileInfo((rel / e.name).as_posix(), e.is_dir, e.size) for e in found]


def _walk_local(
    artifact_uri: str, path: str | None, recursive: bool
) -> Iterator[tuple[FileInfo, Path]]:
    """The listing of ``path`` in a local artifact folder, each entry with its real path."""
    chain = _chain(artifact_uri, path)
    try:
        if not chain[-1].is_dir() or loops(chain):
            return iter(())
    except OSError:  # a name longer than the file system takes (ENAMETOOLONG): nothing there
        return iter(())
    return _walk(chain[-1], chain[0], safe_relative(path), recursive, frozenset(chain))


def _walk(
    folder: Path, root: Path, rel: PurePosixPath, recursive: bool, above: frozenset[Path]
) -> Iterator[tuple[FileInfo, Path]]:
    """Entries of ``folder`` shown under ``rel``, with their real paths. A recursive walk
    enters linked folders too, but not one whose real path is ``folder`` or a folder ``above``
    it (a loop): that one is listed, with no entries."""
    for entry in entries_inside(folder, root):
        child = rel / entry.name
        yield FileInfo(child.as_posix(), entry.is_dir, entry.size), entry.path
        if recursive and entry.is_dir and entry.path not in above:
            yield from _walk(entry.path, root, child, True, above | {entry.path})


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
        source = local_path(artifact_uri, path)
        if source.is_dir():  # what the listing shows: no link out, linked folders as folders
            # Listed before copying: a destination inside the folder is not walked into.
            listed = list(_walk_local(artifact_uri, path, True))
            target.mkdir(parents=True, exist_ok=True)
            root = local_dir(artifact_uri).resolve()
            for f, real in listed:
                local = target / PurePosixPath(f.path).relative_to(rel)
                if f.is_dir:
                    local.mkdir(parents=True, exist_ok=True)
                elif (now := real.resolve()).is_relative_to(root):  # not made a link out since
                    shutil.copy2(now, local)
        elif source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        else:
            raise UserInputError(f"No artifact {path!r} in {artifact_uri}.")
        return target
    if is_s3(artifact_uri):
        return _download_s3(artifact_uri, rel, path, target)
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


def _download_s3(artifact_uri: str, rel: PurePosixPath, path: str, target: Path) -> Path:
    from reprorun.tracking import s3

    where = _s3_at(artifact_uri, rel)
    size = s3.head(where) if rel.parts else None
    if size is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(where, target, size)
        return target
    files = [e for e in s3.listing(where, True) if not e.is_dir]
    if not files:
        raise UserInputError(f"No artifact {path!r} in {artifact_uri}.")
    for f in files:
        (target / f.name).parent.mkdir(parents=True, exist_ok=True)
    s3.download_files([(where.join(f.name), target / f.name, f.size) for f in files])
    return target
