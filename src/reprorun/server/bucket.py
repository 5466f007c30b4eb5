"""Artifacts in S3 as the server serves them: the artifact proxy over an ``s3://bucket/prefix``
root (``--artifacts-destination``), streamed to and from the bucket, with MLflow's
multipart-upload endpoints (``mlflow-artifacts/mpu/create|complete|abort``) and presigned
downloads (``mlflow-artifacts/presigned``) so clients move large files straight to the bucket
while the server only signs (over a folder those answer 501 in MLflow's own words, and its
clients fall back to the proxy); and one file of a run or logged model read or served
wherever it is stored (a folder or S3), for MLflow's single-file endpoints and the UI."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from reprorun.server.artifacts import (
    TOKEN_NAME,
    ArtifactProxy,
    download_response,
    not_serving,
    storage_failure,
)
from reprorun.server.files import (
    DOWNLOAD_HEADERS,
    artifact_file,
    download_type,
    safe_artifact_path,
)
from reprorun.server.responses import error_response, json_response, too_large
from reprorun.tracking.mlflow_api.errors import ApiError, invalid

MPU_API = "/api/2.0/mlflow-artifacts/mpu"  # MLflow's multipart uploads: create|complete|abort
PRESIGNED_API = "/api/2.0/mlflow-artifacts/presigned"  # MLflow's presigned downloads
# MLflow's words when an artifact repository cannot do these (its clients match them and
# fall back to uploading through the proxy).
NO_MULTIPART = "Multipart upload is not supported for the current artifact repository"
NO_PRESIGNED_DOWNLOAD = "Multipart download is not supported for the current artifact repository"
PRESIGNED_DOWNLOAD_SECONDS = 300  # MLflow's MLFLOW_PRESIGNED_DOWNLOAD_URL_TTL_SECONDS default


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

    found = s3.stream(where)
    if found is None:
        raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"No artifact {raw!r}.")
    size, chunks = found
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
    elif TOKEN_NAME.fullmatch(name):
        headers["Content-Disposition"] = f"attachment; filename={name}"
    return StreamingResponse(chunks, headers=headers)


def s3_file_response(artifact_uri: str, raw: str, inline_type: str | None = None) -> Response:
    """One file of an S3 artifact location, streamed (see ``_s3_download``)."""
    return _s3_download(_s3_file(artifact_uri, raw), raw, inline_type)


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
        from reprorun.tracking import s3, s3_multipart

        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise too_large(self.max_bytes)
        upload = s3_multipart.StreamingUpload(where)
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
        from reprorun.tracking import s3_multipart

        where = self._mpu_target(raw, body)
        parts = body.get("num_parts", 1)
        if isinstance(parts, str) and parts.isdigit():
            parts = int(parts)
        if not isinstance(parts, int) or isinstance(parts, bool) or not 1 <= parts <= 10_000:
            raise invalid(f"Invalid value {parts!r} for parameter 'num_parts': 1 to 10000.")
        upload_id = s3_multipart.create_multipart(where)
        credentials = [
            {
                "url": s3_multipart.presign(
                    where, "upload_part", 3600, PartNumber=number, UploadId=upload_id
                ),
                "part_number": number,
                "headers": {},
            }
            for number in range(1, parts + 1)
        ]
        return {"upload_id": upload_id, "credentials": credentials}

    def complete_multipart(self, raw: str, body: dict[str, Any]) -> dict[str, Any]:
        from reprorun.tracking import s3_multipart

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
        s3_multipart.complete_multipart(
            where, upload_id, sorted(parts, key=lambda p: p["PartNumber"])
        )
        return {}

    def abort_multipart(self, raw: str, body: dict[str, Any]) -> dict[str, Any]:
        from reprorun.tracking import s3_multipart

        s3_multipart.abort_multipart(self._mpu_target(raw, body), _upload_id(body))
        return {}

    def presigned_download(self, raw: str) -> dict[str, Any]:
        """MLflow's ``GET mlflow-artifacts/presigned/<path>``: a URL to GET the file from the
        bucket (as an attachment), its headers and size."""
        from reprorun.tracking import s3, s3_multipart

        where = self._where(raw)
        size = s3.head(where)
        if size is None:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"No artifact {raw!r}.")
        name = PurePosixPath(where.key).name.replace("\\", "\\\\").replace('"', '\\"')
        url = s3_multipart.presign(
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
