"""Multipart uploads and presigned URLs on S3 (``tracking/s3.py`` gives the client and the
errors): the server signs URLs for clients that move the bytes themselves (MLflow's
``mpu/create|complete|abort``, ``presigned``, MLflow 3's presigned upload and download), and
``StreamingUpload`` writes an object from a stream of unknown length (a proxied PUT) in parts,
never visible before it is complete."""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from reprorun.errors import ArtifactStorageError, UserInputError
from reprorun.tracking.s3 import MULTIPART_BYTES, Location, call, content_type, put_bytes

MAX_PARTS = 10_000  # S3's limit on the parts of one upload


def presign(where: Location, method: str, expires: int, **params: Any) -> str:
    """A presigned URL for ``method`` (a client method: put_object, get_object, upload_part)."""
    url: str = call(
        where,
        "sign a URL for",
        lambda s3: s3.generate_presigned_url(
            method,
            Params={"Bucket": where.bucket, "Key": where.key, **params},
            ExpiresIn=expires,
        ),
    )
    return url


def create_multipart(where: Location) -> str:
    extra = {"ContentType": t} if (t := content_type(where.key)) else {}
    answer = call(
        where,
        "start a multipart upload to",
        lambda s3: s3.create_multipart_upload(Bucket=where.bucket, Key=where.key, **extra),
    )
    return str(answer["UploadId"])


def complete_multipart(where: Location, upload_id: str, parts: list[dict[str, Any]]) -> None:
    call(
        where,
        "complete the multipart upload to",
        lambda s3: s3.complete_multipart_upload(
            Bucket=where.bucket,
            Key=where.key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
        ),
    )


def abort_multipart(where: Location, upload_id: str) -> None:
    call(
        where,
        "abort the multipart upload to",
        lambda s3: s3.abort_multipart_upload(
            Bucket=where.bucket, Key=where.key, UploadId=upload_id
        ),
    )


class StreamingUpload:
    """An object written from a stream of chunks of unknown length (a proxied PUT): bodies
    below ``MULTIPART_BYTES`` go up in one PUT, longer ones in parts of that size; ``abort``
    (or a failure) removes the parts, so nothing partial is ever visible."""

    def __init__(self, where: Location):
        self.where = where
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []

    def write(self, chunk: bytes) -> None:
        """Take ``chunk``; sends a part when enough has come (blocking: call in a thread)."""
        self.buffer += chunk
        while len(self.buffer) >= MULTIPART_BYTES:
            part = bytes(self.buffer[:MULTIPART_BYTES])
            del self.buffer[:MULTIPART_BYTES]
            self._send(part)

    def _send(self, part: bytes) -> None:
        if self.upload_id is None:
            self.upload_id = create_multipart(self.where)
        number = len(self.parts) + 1
        if number > MAX_PARTS:
            raise UserInputError(f"Cannot upload {self.where}: too large for S3.")
        upload_id = self.upload_id
        answer = call(
            self.where,
            "upload a part to",
            lambda s3: s3.upload_part(
                Bucket=self.where.bucket,
                Key=self.where.key,
                UploadId=upload_id,
                PartNumber=number,
                Body=part,
            ),
        )
        self.parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def close(self) -> None:
        """Send what is left and make the object visible."""
        if self.upload_id is None:
            put_bytes(self.where, bytes(self.buffer))
            return
        if self.buffer:
            self._send(bytes(self.buffer))
            self.buffer.clear()
        complete_multipart(self.where, self.upload_id, self.parts)
        self.upload_id = None

    def abort(self) -> None:
        """Drop the parts sent so far (best effort: S3 also expires abandoned uploads when
        the bucket has a lifecycle rule)."""
        if self.upload_id is not None:
            upload_id, self.upload_id = self.upload_id, None
            with suppress(ArtifactStorageError):
                abort_multipart(self.where, upload_id)
