"""A run's artifact listing (files themselves go through the server's artifact proxy), and
MLflow 3's presigned upload and download URLs for runs whose artifacts are in S3: the client
moves the bytes straight to or from the bucket, the server only signs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from reprorun.tracking.mlflow_api.context import ApiContext
from reprorun.tracking.mlflow_api.errors import ApiError, Json, invalid
from reprorun.tracking.mlflow_api.parsing import (
    _file_info,
    _int_or,
    _need,
    _text,
)
from reprorun.tracking.mlflow_api.routing import route

# MLflow's words when the artifact repository cannot sign (a folder): its clients match them.
NO_PRESIGNED_UPLOAD = "Presigned upload is not supported for the current artifact repository"
NO_PRESIGNED_DOWNLOAD = "Presigned download is not supported for the current artifact repository"
MAX_EXPIRATION = 604800  # 7 days: S3 refuses longer-lived signatures when the URL is used

if TYPE_CHECKING:
    from reprorun.tracking.s3 import Location


@route("GET", "/artifacts/list")
def list_artifacts(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """List a run's artifacts under a path."""
    from reprorun.tracking.artifacts import list_artifacts as listing

    run = api.store.get_run(api.run_id(body))
    path = _text(body, "path") or ""
    files = listing(run.info.artifact_uri, path)
    return {
        "root_uri": api.uris.public(run.info.artifact_uri),
        "files": [_file_info(f.path, f.is_dir, f.file_size) for f in files],
    }


def _signed_location(artifact_uri: str, raw: str, unsupported: str) -> Location:
    from reprorun.tracking.artifacts import is_s3, safe_relative

    rel = safe_relative(raw)
    if not rel.parts:
        raise invalid(f"Invalid path {raw!r}: name a file.")
    if not is_s3(artifact_uri):
        raise ApiError(501, "NOT_IMPLEMENTED", unsupported)
    from reprorun.tracking import s3

    return s3.Location.parse(artifact_uri).join(rel)


def _expiration(body: Json, default: int) -> int:
    seconds = _int_or(body, "expiration", default)
    if not 1 <= seconds <= MAX_EXPIRATION:
        raise invalid(f"expiration must be between 1 and {MAX_EXPIRATION} seconds (got {seconds}).")
    return seconds


@route("POST", "/artifacts/presigned-upload-url")
def presigned_upload_url(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """MLflow 3's presigned upload: a URL to PUT one file of a run's (``run_id``) or logged
    model's (``model_id``) artifacts straight into S3, and the headers to send with it."""
    from reprorun.tracking import s3, s3_multipart

    run_id, model_id = _text(body, "run_id"), _text(body, "model_id")
    if bool(run_id) == bool(model_id):
        raise invalid("Exactly one of run_id and model_id must be provided.")
    raw = _need(body, "path")
    expires = _expiration(body, 900)
    if run_id:
        uri = api.store.get_run(run_id).info.artifact_uri
    else:
        uri = api.store.get_logged_model(str(model_id)).artifact_location
    where = _signed_location(uri, raw, NO_PRESIGNED_UPLOAD)
    kind = s3.content_type(where.key) or "application/octet-stream"
    url = s3_multipart.presign(where, "put_object", expires, ContentType=kind)
    return {"presigned_url": url, "headers": {"Content-Type": kind}}


@route("POST", "/artifacts/presigned-download-url")
def presigned_download_url(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """MLflow 3's presigned download: a URL to GET one file of a run's artifacts straight
    from S3 (as an attachment), with its size."""
    from reprorun.tracking import s3, s3_multipart

    run = api.store.get_run(_need(body, "run_id"))
    raw = _need(body, "path")
    expires = _expiration(body, 300)
    where = _signed_location(run.info.artifact_uri, raw, NO_PRESIGNED_DOWNLOAD)
    size = s3.head(where)
    if size is None:
        raise ApiError(
            404, "RESOURCE_DOES_NOT_EXIST", f"No artifact {raw!r} in run {run.info.run_id}."
        )
    name = where.key.rsplit("/", 1)[-1].replace("\\", "\\\\").replace('"', '\\"')
    url = s3_multipart.presign(
        where, "get_object", expires, ResponseContentDisposition=f'attachment; filename="{name}"'
    )
    return {"presigned_url": url, "headers": {}, "file_size": size}
