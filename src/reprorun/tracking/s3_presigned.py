"""Large files to a tracking server whose artifacts are in S3, straight to the bucket: the
server signs (MLflow's ``mlflow-artifacts/mpu/create|complete|abort``), this client PUTs each
part to its presigned URL, so the bytes never pass through the server.

Used by the artifact proxy's client (``artifacts.log_file``/``log_dir`` on an
``mlflow-artifacts:`` location) for files of ``DIRECT_BYTES`` or more. A server over a folder
answers 501 (MLflow's "Multipart upload is not supported"), and a bucket the client cannot
reach (an endpoint on the server's own network) fails the first part: either way the upload
is aborted and the file goes through the proxy instead, as before. Set
``MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD=false`` to always use the proxy. Standard library only
(a job's node needs no boto3 nor credentials).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any

from reprorun.errors import ArtifactStorageError

DIRECT_BYTES = 64 * 1024 * 1024  # smaller files go through the proxy in one streamed PUT
PART_BYTES = 16 * 1024 * 1024
MAX_PARTS = 10_000
PARALLEL = 4  # parts in flight (each held in memory while it is sent)
MPU_PATH = "/api/2.0/mlflow-artifacts/mpu"
TIMEOUT = 300.0


class _Unsupported(Exception):
    """The server cannot sign (a folder root, an older server): use the proxy."""


def enabled() -> bool:
    return os.environ.get("MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD", "").lower() not in (
        "false",
        "0",
    )


def upload(client: Any, folder: str, src: Path, rel: PurePosixPath) -> bool:
    """Upload ``src`` as ``rel`` under the proxied ``folder`` (its path under the artifact
    root) in presigned parts; False when the server or the network says to use the proxy
    (nothing was stored then), True once the object is complete."""
    size = src.stat().st_size
    part = max(PART_BYTES, math.ceil(size / MAX_PARTS))
    parts = max(1, math.ceil(size / part))
    where = "/".join(p for p in (folder.strip("/"), rel.parent.as_posix().strip(".")) if p)
    body = {"path": rel.name, "num_parts": parts}
    try:
        created = _post(client, f"{MPU_PATH}/create/{where}", body)
    except _Unsupported:
        return False
    upload_id = created.get("upload_id")
    credentials = created.get("credentials") or []
    if not isinstance(upload_id, str) or len(credentials) != parts:
        return False
    ids = {"path": rel.name, "upload_id": upload_id}
    try:
        with ThreadPoolExecutor(PARALLEL) as pool:
            sent = list(pool.map(lambda c: _send(src, part, c), credentials))
        _post(client, f"{MPU_PATH}/complete/{where}", {**ids, "parts": sent})
    except _Unsupported:  # the bucket cannot be reached from here: the proxy can
        _abort(client, where, ids)
        return False
    except BaseException:
        _abort(client, where, ids)
        raise
    return True


def _post(client: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    from reprorun.tracking.http import error_from_response

    response = client.request(
        "POST", path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    data: bytes = response.data
    if response.status in (404, 405, 501):  # not signed here: MLflow's 501, an older server
        raise _Unsupported
    if response.status >= 400:
        raise error_from_response(response.status, data, f"POST {path}")
    parsed = json.loads(data or b"{}")
    return parsed if isinstance(parsed, dict) else {}


def _send(src: Path, part: int, credential: dict[str, Any]) -> dict[str, Any]:
    """PUT one part to its presigned URL; its number and ETag for the completion."""
    number = int(credential["part_number"])
    with open(src, "rb") as f:
        f.seek((number - 1) * part)
        data = f.read(part)
    url = str(credential["url"])
    if not url.startswith(("http://", "https://")):  # a presigned URL is HTTP, nothing else
        raise ArtifactStorageError(f"The server signed part {number} for {url!r}: not HTTP.")
    headers = {"Content-Type": "application/octet-stream", **credential.get("headers", {})}
    request = urllib.request.Request(url, data=data, method="PUT", headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:  # noqa: S310
            etag = answer.headers.get("ETag", "")
    except urllib.error.HTTPError as exc:
        text = exc.read()[:500].decode("utf-8", "replace")
        raise ArtifactStorageError(
            f"The storage refused part {number} of {src} (HTTP {exc.code}): {text}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:  # unreachable from here
        raise _Unsupported from exc
    return {"part_number": number, "etag": etag, "url": url}


def _abort(client: Any, where: str, ids: dict[str, Any]) -> None:
    # Best effort: the upload failed already, and its error says why.
    with contextlib.suppress(Exception):
        _post(client, f"{MPU_PATH}/abort/{where}", ids)
