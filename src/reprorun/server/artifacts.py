"""The artifact proxy (``mlflow-artifacts``): uploads, downloads, listings and deletes of the
files under the server's artifact root, streamed to and from disk, with the path rules of
``server/files.py``. A root in S3 is served by ``server/bucket.py`` instead."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from reprorun.server.files import (
    DOWNLOAD_HEADERS,
    download_type,
    resolve_under,
    safe_artifact_path,
)
from reprorun.server.responses import MiB, json_response, too_large
from reprorun.tracking.mlflow_api.errors import ApiError, error_for, invalid

TOKEN_NAME = re.compile(r"[A-Za-z0-9!#$&+.^_`|~-]+")  # a file name HTTP needs no quotes for


MAX_UPLOAD_ARTIFACT_BYTES = 10 * MiB  # MLflow's limit for upload-artifact


def not_serving() -> ApiError:
    return ApiError(
        503,
        "ENDPOINT_NOT_FOUND",
        "This server does not serve artifacts (started with --no-serve-artifacts).",
    )


def download_response(target: Path) -> Response:
    """A file as a download with its type (see ``download_type``), never a page."""
    headers = {**DOWNLOAD_HEADERS, "Content-Type": download_type(target.name)}
    if TOKEN_NAME.fullmatch(target.name):  # as MLflow (werkzeug) writes a plain name
        headers["Content-Disposition"] = f"attachment; filename={target.name}"
    return FileResponse(target, filename=target.name, headers=headers)


def write_run_file(root_uri: str, artifact_uri: str, raw: str, data: bytes) -> None:
    """Write ``data`` as the file ``raw`` of the run whose artifacts are at ``artifact_uri``,
    which must be under the server's artifact root ``root_uri``; the path must stay in the
    run's artifact folder (no '..', no link pointing out)."""
    from reprorun.tracking.artifacts import is_s3, local_dir

    if is_s3(root_uri):
        if not artifact_uri.startswith(root_uri.rstrip("/") + "/"):
            raise invalid(
                f"Cannot write to the run's artifacts at {artifact_uri}: this server only "
                "writes under its own artifact root. Log the file with the client instead."
            )
        from reprorun.tracking import s3

        rel = safe_artifact_path(raw, what="path")
        if not rel.parts:
            raise invalid(f"Invalid path {raw!r}: name a file under the run's artifact folder.")
        s3.put_bytes(s3.Location.parse(artifact_uri).join(rel), data)
        return
    root = local_dir(root_uri).resolve()
    try:
        run_dir = local_dir(artifact_uri).resolve()
    except Exception as exc:
        raise invalid(f"Cannot write to the run's artifacts at {artifact_uri}: {exc}") from None
    if not run_dir.is_relative_to(root):
        raise invalid(
            f"Cannot write to the run's artifacts at {artifact_uri}: this server only writes "
            "under its own artifact root. Log the file with the client instead."
        )
    target = resolve_under(run_dir, raw, "the run's artifact folder", what="path")
    if target == run_dir:
        raise invalid(f"Invalid path {raw!r}: name a file under the run's artifact folder.")
    _check_writable(run_dir, target)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        Path(tmp).replace(target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_writable(root: Path, target: Path) -> None:
    """``target`` can become a file under ``root``: it is no folder and none of its parents
    is a file; the missing parents are created."""
    if target.is_dir():
        raise invalid(f"Cannot upload to {target.name!r}: it is a folder.")
    for parent in target.parents:
        if parent == root:
            break
        if parent.exists() and not parent.is_dir():
            raise invalid(f"Cannot upload under {parent.name!r}: it is a file.")
    target.parent.mkdir(parents=True, exist_ok=True)


class ArtifactProxy:
    """MLflow's ``mlflow-artifacts`` endpoints over a local folder."""

    def __init__(self, root: Path, max_bytes: int):
        self.root = root.resolve()
        self.max_bytes = max_bytes

    def _boundary(self, raw: str) -> Path:
        """The folder a path must stay in: its run's or logged model's artifact folder (the
        first ``artifacts`` component: ``<exp>/<run>/artifacts``, ``<exp>/models/<id>/
        artifacts``), else the root. A link from one run to another is not followed."""
        parts = safe_artifact_path(raw).parts
        if "artifacts" not in parts:
            return self.root
        return (self.root.joinpath(*parts[: parts.index("artifacts") + 1])).resolve()

    def _chain(self, raw: str) -> list[Path]:
        """The real paths of ``raw``'s artifact folder (see ``_boundary``) and of each step of
        ``raw`` under it, ``raw``'s own last; refused if a step leaves the root or that
        folder."""
        from reprorun.tracking.artifacts import real_chain

        resolve_under(self.root, raw)
        parts = safe_artifact_path(raw).parts
        below = parts[parts.index("artifacts") + 1 :] if "artifacts" in parts else parts
        boundary = self._boundary(raw)
        chain = None
        if boundary.is_relative_to(self.root):
            chain = real_chain(boundary, PurePosixPath(*below))
        if chain is None:
            raise invalid(f"Invalid artifact path {raw!r}: it leaves its artifact folder.")
        return chain

    def _resolve(self, raw: str) -> Path:
        return self._chain(raw)[-1]

    async def handle(self, request: Request) -> Response:
        raw = request.path_params.get("path")
        if raw is None:  # GET .../artifacts?path=...: a listing
            return await run_in_threadpool(self._list, request.query_params.get("path") or "")
        target = self._resolve(raw)
        if request.method != "GET" and target == self.root:
            raise invalid(
                f"Invalid artifact path {raw!r}: name a file or folder under the artifact root."
            )
        if request.method == "GET":
            if not target.is_file():
                raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"No artifact {raw!r}.")
            # An attachment with the file's type, never a page: an uploaded .html or .svg is
            # plain bytes, so it cannot run script in the origin the web UI shares.
            return FileResponse(
                target,
                filename=target.name,
                # As a header: a media_type of text/* would get "; charset=utf-8" appended.
                headers={**DOWNLOAD_HEADERS, "Content-Type": download_type(target.name)},
            )
        if request.method == "DELETE":
            # A link is deleted itself, never what it points to (``sub/loop -> ..`` would
            # otherwise take the run's whole folder with it).
            named = self._chain(raw)[-2] / safe_artifact_path(raw).name
            await run_in_threadpool(_delete, named)
            return json_response(200, {})
        await self._upload(request, target)
        return json_response(200, {})

    def _list(self, raw: str) -> Response:
        from reprorun.tracking.artifacts import entries_inside, loops

        chain = self._chain(raw) if raw else [self.root]
        base = chain[-1]
        files = []
        # Symbolic links pointing out of the artifact folder (or nowhere) are not shown, and a
        # path through a link back to a folder it passes already has no entries (as a local
        # recursive listing shows it): a client walking these listings comes to an end.
        if base.is_dir() and not loops(chain):
            for entry in entries_inside(base, chain[0]):
                info: dict[str, Any] = {"path": entry.name, "is_dir": entry.is_dir}
                if not entry.is_dir:
                    info["file_size"] = entry.size
                files.append(info)
        elif base.is_file():
            files.append({"path": base.name, "is_dir": False, "file_size": base.stat().st_size})
        return json_response(200, {"files": files})

    async def _upload(self, request: Request, target: Path) -> None:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise too_large(self.max_bytes)
        _check_writable(self.root, target)
        # Write beside the target and rename: a failed upload never leaves a partial file.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise too_large(self.max_bytes)
                    out.write(chunk)
            Path(tmp).replace(target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _delete(target: Path) -> None:
    import shutil

    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        shutil.rmtree(target)


def storage_failure(exc: Exception) -> ApiError:
    """The answer for a failed artifact operation: the storage's failure is the server's
    (503, with what to check), anything else as ``error_for`` says."""
    from reprorun.errors import ArtifactStorageError

    if isinstance(exc, ArtifactStorageError):
        return ApiError(503, "TEMPORARILY_UNAVAILABLE", str(exc))
    return error_for(exc)
