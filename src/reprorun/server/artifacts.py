"""The artifact proxy (``mlflow-artifacts``): uploads, downloads, listings and deletes of the
files under the server's artifact root, streamed to and from disk, with the path rules of
``server/files.py``; or, when the root is ``s3://bucket/prefix`` (``--artifacts-destination``),
to and from the bucket (``S3ArtifactProxy``), with MLflow's multipart-upload endpoints
(``mlflow-artifacts/mpu/create|complete|abort``) and presigned downloads
(``mlflow-artifacts/presigned``) so clients move large files straight to the bucket while the
server only signs. Over a folder those answer 501 with MLflow's own words, and MLflow's
clients fall back to uploading through the proxy."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Route

from reprorun.server.files import (
    DOWNLOAD_HEADERS,
    artifact_file,
    download_type,
    resolve_under,
    safe_artifact_path,
)
from reprorun.server.responses import MiB, error_response, json_response, too_large
from reprorun.tracking.mlflow_api.errors import ApiError, error_for, invalid

MPU_API = "/api/2.0/mlflow-artifacts/mpu"  # MLflow's multipart uploads: create|complete|abort
PRESIGNED_API = "/api/2.0/mlflow-artifacts/presigned"  # MLflow's presigned downloads
# MLflow's words when an artifact repository cannot do these (its clients match them and
# fall back to uploading through the proxy).
NO_MULTIPART = "Multipart upload is not supported for the current artifact repository"
NO_PRESIGNED_DOWNLOAD = "Multipart download is not supported for the current artifact repository"
PRESIGNED_DOWNLOAD_SECONDS = 300  # MLflow's MLFLOW_PRESIGNED_DOWNLOAD_URL_TTL_SECONDS default

_TOKEN_NAME = re.compile(r"[A-Za-z0-9!#$&+.^_`|~-]+")  # a file name HTTP needs no quotes for


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
    if _TOKEN_NAME.fullmatch(target.name):  # as MLflow (werkzeug) writes a plain name
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


# --- one artifact file of a run or model, wherever it is stored ---------------------------------


def read_artifact(artifact_uri: str, raw: str, start: int = 0, limit: int | None = None) -> bytes:
    """Up to ``limit`` bytes (all: None) from offset ``start`` of the file ``raw`` of an
    artifact location (a folder or S3); ApiError 404 when there is no such file."""
    from reprorun.tracking.artifacts import is_s3

    if not is_s3(artifact_uri):
        with open(artifact_file(artifact_uri, raw), "rb") as f:
            f.seek(start)
            return f.read(-1 if limit is None else limit)
    from reprorun.tracking import s3

    where = _s3_file(artifact_uri, raw)
    size = s3.head(where)
    if size is None:
        raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Artifact {raw!r} is not there.")
    end = size if limit is None else min(size, start + limit)
    if start >= end:
        return b""
    span = f"bytes={start}-{end - 1}"
    answer = s3.call(
        where, "read", lambda c: c.get_object(Bucket=where.bucket, Key=where.key, Range=span)
    )
    data: bytes = answer["Body"].read()
    return data


def artifact_size(artifact_uri: str, raw: str) -> int | None:
    """The size of the file ``raw`` of an artifact location; None if there is none."""
    from reprorun.tracking.artifacts import is_s3

    if not is_s3(artifact_uri):
        try:
            return artifact_file(artifact_uri, raw).stat().st_size
        except ApiError:
            return None
    from reprorun.tracking import s3

    return s3.head(_s3_file(artifact_uri, raw))


def _s3_file(artifact_uri: str, raw: str) -> Any:
    from reprorun.tracking import s3

    if not raw:
        raise invalid("Name the artifact with ?path=.")
    return s3.Location.parse(artifact_uri).join(safe_artifact_path(raw))


async def artifact_response(artifact_uri: str, raw: str) -> Response:
    """One file of an artifact location as a download with its type (see ``download_type``),
    streamed from the folder or the bucket; never a page."""
    from reprorun.tracking.artifacts import is_s3

    if not is_s3(artifact_uri):
        return download_response(artifact_file(artifact_uri, raw))
    where = _s3_file(artifact_uri, raw)
    return await run_in_threadpool(_s3_download, where, raw)


def _s3_download(where: Any, raw: str, inline_type: str | None = None) -> Response:
    """The object ``where`` streamed as a download (``inline_type``: shown inline as that
    type instead, for the UI's images)."""
    from reprorun.tracking import s3

    if s3.head(where) is None:
        raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"No artifact {raw!r}.")
    size, chunks = s3.stream(where)
    name = PurePosixPath(where.key).name
    headers = {
        **DOWNLOAD_HEADERS,
        "Content-Type": download_type(name),
        "Content-Length": str(size),
    }
    if inline_type is not None:
        headers = {
            "X-Content-Type-Options": "nosniff",
            "Content-Type": inline_type,
            "Content-Length": str(size),
            "Content-Disposition": "inline",
        }
    elif _TOKEN_NAME.fullmatch(name):
        headers["Content-Disposition"] = f"attachment; filename={name}"
    return StreamingResponse(chunks, headers=headers)


def s3_file_response(artifact_uri: str, raw: str, inline_type: str | None = None) -> Response:
    """One file of an S3 artifact location, streamed (see ``_s3_download``)."""
    return _s3_download(_s3_file(artifact_uri, raw), raw, inline_type)


def storage_failure(exc: Exception) -> ApiError:
    """The answer for a failed artifact operation: the storage's failure is the server's
    (503, with what to check), anything else as ``error_for`` says."""
    from reprorun.errors import ArtifactStorageError

    if isinstance(exc, ArtifactStorageError):
        return ApiError(503, "TEMPORARILY_UNAVAILABLE", str(exc))
    return error_for(exc)


# --- the proxy over a bucket ---------------------------------------------------------------------


def proxy_for(root_uri: str, max_bytes: int) -> ArtifactProxy | S3ArtifactProxy:
    """The artifact proxy over the server's artifact root (a folder or an S3 location)."""
    from reprorun.tracking.artifacts import is_s3, local_dir

    if is_s3(root_uri):
        return S3ArtifactProxy(root_uri, max_bytes)
    return ArtifactProxy(local_dir(root_uri), max_bytes)


class S3ArtifactProxy:
    """MLflow's ``mlflow-artifacts`` endpoints over ``s3://bucket/prefix``: paths are keys
    under the prefix (the same path rules as a folder's: no '..', nothing absolute). Uploads
    stream into a multipart upload (nothing visible until it completes, aborted on failure);
    downloads stream from the bucket."""

    def __init__(self, root_uri: str, max_bytes: int):
        from reprorun.tracking import s3

        self.root = s3.Location.parse(root_uri)
        self.max_bytes = max_bytes

    def _where(self, raw: str) -> Any:
        return self.root.join(safe_artifact_path(raw))

    async def handle(self, request: Request) -> Response:
        try:
            return await self._handle(request)
        except ApiError:
            raise
        except Exception as exc:
            raise storage_failure(exc) from exc

    async def _handle(self, request: Request) -> Response:
        raw = request.path_params.get("path")
        if raw is None:  # GET .../artifacts?path=...: a listing
            listed = await run_in_threadpool(self._list, request.query_params.get("path") or "")
            return json_response(200, {"files": listed})
        where = self._where(raw)
        if where == self.root and request.method != "GET":
            raise invalid(
                f"Invalid artifact path {raw!r}: name a file or folder under the artifact root."
            )
        if request.method == "GET":
            return await run_in_threadpool(_s3_download, where, raw)
        if request.method == "DELETE":
            from reprorun.tracking import s3

            await run_in_threadpool(s3.delete, where)
            return json_response(200, {})
        await self._upload(request, where)
        return json_response(200, {})

    def _list(self, raw: str) -> list[dict[str, Any]]:
        from reprorun.tracking import s3

        where = self._where(raw) if raw else self.root
        files = []
        for entry in s3.listing(where, recursive=False):
            info: dict[str, Any] = {"path": entry.name, "is_dir": entry.is_dir}
            if not entry.is_dir:
                info["file_size"] = entry.size
            files.append(info)
        if not files and raw:  # a file's own listing shows it, as over a folder
            size = s3.head(where)
            if size is not None:
                name = PurePosixPath(where.key).name
                files.append({"path": name, "is_dir": False, "file_size": size})
        return files

    async def _upload(self, request: Request, where: Any) -> None:
        from reprorun.tracking import s3

        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise too_large(self.max_bytes)
        upload = s3.StreamingUpload(where)
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.max_bytes:
                    raise too_large(self.max_bytes)
                upload.buffer += chunk
                if len(upload.buffer) >= s3.MULTIPART_BYTES:
                    await run_in_threadpool(upload.write, b"")
            await run_in_threadpool(upload.close)
        except BaseException:
            await run_in_threadpool(upload.abort)
            raise

    # MLflow's multipart uploads: the client PUTs each part to a presigned URL, then asks
    # the server to complete (or abort) the upload. The URL's path names the folder, the
    # body's ``path`` the local file (its name is the object's), as MLflow's S3 repository.

    def _mpu_target(self, raw: str, body: dict[str, Any]) -> Any:
        local = body.get("path")
        if not isinstance(local, str) or not local:
            raise invalid("Missing value for required parameter 'path'.")
        name = PurePosixPath(local.replace("\\", "/")).name
        safe_artifact_path(name, what="path")
        return self._where(raw).join(name)

    def create_multipart(self, raw: str, body: dict[str, Any]) -> dict[str, Any]:
        from reprorun.tracking import s3

        where = self._mpu_target(raw, body)
        parts = body.get("num_parts", 1)
        if isinstance(parts, str) and parts.isdigit():
            parts = int(parts)
        if not isinstance(parts, int) or isinstance(parts, bool) or not 1 <= parts <= 10_000:
            raise invalid(f"Invalid value {parts!r} for parameter 'num_parts': 1 to 10000.")
        upload_id = s3.create_multipart(where)
        credentials = [
            {
                "url": s3.presign(
                    where, "upload_part", 3600, PartNumber=number, UploadId=upload_id
                ),
                "part_number": number,
                "headers": {},
            }
            for number in range(1, parts + 1)
        ]
        return {"upload_id": upload_id, "credentials": credentials}

    def complete_multipart(self, raw: str, body: dict[str, Any]) -> dict[str, Any]:
        from reprorun.tracking import s3

        where = self._mpu_target(raw, body)
        upload_id = _upload_id(body)
        given = body.get("parts")
        if not isinstance(given, list) or not given:
            raise invalid("Missing value for required parameter 'parts'.")
        parts = []
        for part in given:
            if not isinstance(part, dict) or "part_number" not in part or "etag" not in part:
                raise invalid("Each of 'parts' needs a part_number and an etag.")
            parts.append({"PartNumber": int(part["part_number"]), "ETag": str(part["etag"])})
        s3.complete_multipart(where, upload_id, sorted(parts, key=lambda p: p["PartNumber"]))
        return {}

    def abort_multipart(self, raw: str, body: dict[str, Any]) -> dict[str, Any]:
        from reprorun.tracking import s3

        s3.abort_multipart(self._mpu_target(raw, body), _upload_id(body))
        return {}

    def presigned_download(self, raw: str) -> dict[str, Any]:
        """MLflow's ``GET mlflow-artifacts/presigned/<path>``: a URL to GET the file from the
        bucket (as an attachment), its headers and size."""
        from reprorun.tracking import s3

        where = self._where(raw)
        size = s3.head(where)
        if size is None:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"No artifact {raw!r}.")
        name = PurePosixPath(where.key).name.replace("\\", "\\\\").replace('"', '\\"')
        url = s3.presign(
            where,
            "get_object",
            PRESIGNED_DOWNLOAD_SECONDS,
            ResponseContentDisposition=f'attachment; filename="{name}"',
        )
        return {"url": url, "headers": {}, "file_size": size}


def _upload_id(body: dict[str, Any]) -> str:
    upload_id = body.get("upload_id")
    if not isinstance(upload_id, str) or not upload_id:
        raise invalid("Missing value for required parameter 'upload_id'.")
    return upload_id


def multipart_routes(proxy: ArtifactProxy | S3ArtifactProxy, serving: bool) -> list[Route]:
    """The routes of MLflow's multipart uploads and presigned downloads (``mpu/create``,
    ``mpu/complete``, ``mpu/abort``, ``presigned``) over ``proxy``: answered by an S3 root,
    501 in MLflow's words over a folder (its clients then upload through the proxy), 503 with
    ``--no-serve-artifacts``."""
    import json

    def endpoint(action: str) -> Any:
        async def answer(request: Request) -> Response:
            if not serving:
                return error_response(not_serving())
            raw = request.path_params["path"]
            try:
                if not isinstance(proxy, S3ArtifactProxy):
                    message = NO_PRESIGNED_DOWNLOAD if action == "presigned" else NO_MULTIPART
                    raise ApiError(501, "NOT_IMPLEMENTED", message)
                safe_artifact_path(raw)
                if action == "presigned":
                    result = await run_in_threadpool(proxy.presigned_download, raw)
                else:
                    try:
                        body = json.loads(await request.body() or b"{}")
                    except ValueError:
                        raise invalid("The request body is not JSON.") from None
                    if not isinstance(body, dict):
                        raise invalid("The request body must be a JSON object.")
                    handler = getattr(proxy, f"{action}_multipart")
                    result = await run_in_threadpool(handler, raw, body)
            except Exception as exc:
                return error_response(storage_failure(exc))
            return json_response(200, result)

        return answer

    return [
        *[
            Route(f"{MPU_API}/{action}/{{path:path}}", endpoint(action), methods=["POST"])
            for action in ("create", "complete", "abort")
        ],
        Route(PRESIGNED_API + "/{path:path}", endpoint("presigned"), methods=["GET"]),
    ]


MULTIPART_DOCS = [
    ("POST", MPU_API + "/create/{artifact_path}", "Start a multipart upload (presigned parts)."),
    ("POST", MPU_API + "/complete/{artifact_path}", "Complete a multipart upload."),
    ("POST", MPU_API + "/abort/{artifact_path}", "Abort a multipart upload."),
    ("GET", PRESIGNED_API + "/{artifact_path}", "A presigned download URL (S3 root)."),
]
