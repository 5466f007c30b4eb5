"""Artifacts on S3 or an S3-compatible server (``s3://bucket/prefix``), through boto3.

boto3 is what MLflow's own S3 repository uses, so a deployment configured for MLflow works
unchanged: credentials come from boto3's usual chain (``AWS_ACCESS_KEY_ID``/
``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, ``AWS_PROFILE`` and ``~/.aws/credentials``/
``~/.aws/config``, SSO, instance and container roles), the region from ``AWS_REGION``/
``AWS_DEFAULT_REGION`` or the profile, and the endpoint of an S3-compatible server from
``MLFLOW_S3_ENDPOINT_URL`` as MLflow reads it (else boto3's ``AWS_ENDPOINT_URL_S3``/
``AWS_ENDPOINT_URL``); ``MLFLOW_S3_IGNORE_TLS=true`` skips certificate checks, as MLflow's.
boto3 is imported on first use only (~150 ms): never on the path of a run whose artifacts are
elsewhere.

Files go up through s3transfer: a file of ``MULTIPART_BYTES`` or more streams in parts of that
size (a few at once), and a failed part aborts the whole upload, so S3 never shows a partial
object (a single PUT is all-or-nothing too). Every failure becomes an ``ArtifactStorageError``
that names the bucket, the endpoint and what to check (missing bucket, refused or missing
credentials, an endpoint that cannot be reached).
"""

from __future__ import annotations

import mimetypes
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar
from urllib.parse import urlparse

from reprorun.errors import ArtifactStorageError, UserInputError

MULTIPART_BYTES = 8 * 1024 * 1024  # S3 takes parts of 5 MiB at least (the last excepted)
_CLIENTS: dict[tuple[str | None, ...], Any] = {}
_LOCK = threading.Lock()
T = TypeVar("T")


@dataclass(frozen=True)
class Location:
    """A place in a bucket: ``key`` has no leading or trailing '/' ('' is the bucket)."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> Location:
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise UserInputError(f"{uri!r} is not an S3 location (s3://BUCKET/PREFIX).")
        return cls(parsed.netloc, parsed.path.strip("/"))

    def join(self, rel: PurePosixPath | str) -> Location:
        tail = PurePosixPath(rel).as_posix().strip("/")
        if tail in ("", "."):
            return self
        return Location(self.bucket, f"{self.key}/{tail}" if self.key else tail)

    @property
    def folder(self) -> str:
        """The key prefix of what lies under this location."""
        return f"{self.key}/" if self.key else ""

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def endpoint_url() -> str | None:
    """The S3-compatible server to talk to (None: AWS's own, or boto3's AWS_ENDPOINT_URL*)."""
    return os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None


def _where() -> str:
    """The endpoint in messages: the one boto3 is given or finds itself, else AWS's."""
    env = os.environ.get
    return endpoint_url() or env("AWS_ENDPOINT_URL_S3") or env("AWS_ENDPOINT_URL") or "AWS S3"


def client() -> Any:
    """A boto3 S3 client, one per endpoint and credentials in the environment (tests and
    long-lived processes may change them)."""
    ignore_tls = os.environ.get("MLFLOW_S3_IGNORE_TLS", "").lower() in ("true", "1")
    key = (
        endpoint_url(),
        str(ignore_tls),
        *(
            os.environ.get(name)
            for name in (
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN",
                "AWS_PROFILE",
                "AWS_REGION",
                "AWS_DEFAULT_REGION",
                "AWS_ENDPOINT_URL",
                "AWS_ENDPOINT_URL_S3",
                "AWS_CONFIG_FILE",
                "AWS_SHARED_CREDENTIALS_FILE",
            )
        ),
    )
    with _LOCK:
        found = _CLIENTS.get(key)
        if found is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError:
                raise ArtifactStorageError(
                    "Artifacts on S3 need boto3, which this Python environment lacks: "
                    "pip install 'reprorun[s3]' (or boto3) where reprorun runs; in a run's own "
                    "environment add boto3 to its dependencies (as MLflow's S3 artifacts need "
                    "it), or log through a tracking server (reprorun server "
                    "--artifacts-destination s3://...)."
                ) from None
            config = Config(
                signature_version="s3v4",
                connect_timeout=10,
                read_timeout=60,
                retries={"max_attempts": 3, "mode": "standard"},
                max_pool_connections=16,
            )
            found = boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint_url(),
                verify=False if ignore_tls else None,
                config=config,
            )
            _CLIENTS[key] = found
    return found


# --- errors ---------------------------------------------------------------------------------

_MISSING = ("NoSuchBucket",)  # and a 404 to HeadBucket (a HEAD answer has no body)
_DENIED = (
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AllAccessDisabled",
    "403",
)


def _code(exc: BaseException) -> tuple[str, str] | None:
    """(code, message) of a ClientError (also one an s3transfer error wraps)."""
    seen: BaseException | None = exc
    while seen is not None:
        response = getattr(seen, "response", None)
        if isinstance(response, dict) and "Error" in response:
            error = response["Error"]
            return str(error.get("Code", "")), str(error.get("Message", ""))
        seen = seen.__cause__ or seen.__context__
    return None


def storage_error(exc: BaseException, where: Location, action: str) -> ArtifactStorageError:
    """The error a user can act on for a failed S3 call (``action`` on ``where``)."""
    from botocore import exceptions as boto

    endpoint = _where()
    head = f"Cannot {action} {where} ({endpoint})"
    found = _code(exc)
    if isinstance(exc, boto.NoCredentialsError | boto.PartialCredentialsError):
        return ArtifactStorageError(
            f"{head}: no AWS credentials found. Set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or ~/.aws/credentials)."
        )
    if found is not None:
        code, message = found
        if code in _MISSING or (code in ("404", "NotFound") and action == "open"):
            return ArtifactStorageError(
                f"{head}: the bucket {where.bucket!r} does not exist. Create it, or point "
                "the artifact root at an existing one."
            )
        if code in _DENIED:
            return ArtifactStorageError(
                f"{head}: the credentials were refused ({code}: {message or 'access denied'}). "
                "Check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and that they "
                f"may read and write s3://{where.bucket}."
            )
        return ArtifactStorageError(f"{head}: {code}: {message}".rstrip(": "))
    if isinstance(
        exc,
        boto.EndpointConnectionError
        | boto.ConnectionClosedError
        | boto.ConnectTimeoutError
        | boto.ReadTimeoutError
        | ConnectionError,
    ):
        return ArtifactStorageError(
            f"{head}: the storage endpoint could not be reached or broke the connection "
            f"({exc}). Check MLFLOW_S3_ENDPOINT_URL / the network; nothing partial is kept."
        )
    return ArtifactStorageError(f"{head}: {exc}")


@contextmanager
def _failing(where: Location, action: str) -> Iterator[None]:
    try:
        yield
    except (ArtifactStorageError, UserInputError):
        raise
    except Exception as exc:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError
        from s3transfer.exceptions import RetriesExceededError, S3UploadFailedError

        failures = (BotoCoreError, ClientError, Boto3Error, RetriesExceededError)
        if isinstance(exc, (*failures, S3UploadFailedError, ConnectionError)):
            raise storage_error(exc, where, action) from exc
        raise


def call(where: Location, action: str, fn: Callable[[Any], T]) -> T:
    """``fn(client)`` with its failure said as an ``ArtifactStorageError``."""
    with _failing(where, action):
        return fn(client())


# --- files ----------------------------------------------------------------------------------


def content_type(name: str) -> str | None:
    guessed, _ = mimetypes.guess_type(name)
    return guessed


def _transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(
        multipart_threshold=MULTIPART_BYTES,
        multipart_chunksize=MULTIPART_BYTES,
        max_concurrency=PARALLEL,
        use_threads=True,
    )


PARALLEL = 8  # parts of one large file, or small files of a folder, sent at once


def upload_file(where: Location, src: Path) -> None:
    """Upload a file as the object ``where``: one PUT when small, else in parts (a few at
    once) through s3transfer; never half-visible."""
    extra = {"ContentType": t} if (t := content_type(src.name)) else {}
    if src.stat().st_size < MULTIPART_BYTES:  # no thread pool for one request

        def put(s3: Any) -> None:
            with open(src, "rb") as body:
                s3.put_object(Bucket=where.bucket, Key=where.key, Body=body, **extra)

        call(where, f"upload {src} to", put)
        return
    from s3transfer.manager import TransferManager

    def run(s3: Any) -> None:
        with TransferManager(s3, _transfer_config()) as manager:
            manager.upload(str(src), where.bucket, where.key, extra_args=extra).result()

    call(where, f"upload {src} to", run)


def upload_files(pairs: list[tuple[Location, Path]]) -> None:
    """Upload many files, ``PARALLEL`` at a time; the first failure is raised once the
    uploads under way have ended (each file is whole or absent)."""
    _each(pairs, upload_file)


def download_files(pairs: list[tuple[Location, Path, int | None]]) -> None:
    """Download many objects (with their sizes when known), ``PARALLEL`` at a time."""
    _each(pairs, lambda where, dest, size: download_file(where, dest, size))


def _each(items: list[Any], fn: Callable[..., None]) -> None:
    if len(items) <= 1:
        for item in items:
            fn(*item)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(PARALLEL) as pool:
        futures = [pool.submit(fn, *item) for item in items]
        failed = next((f.exception() for f in futures if f.exception() is not None), None)
    if failed is not None:
        raise failed


def put_bytes(where: Location, data: bytes) -> None:
    extra = {"ContentType": t} if (t := content_type(where.key)) else {}
    call(
        where,
        "write",
        lambda s3: s3.put_object(Bucket=where.bucket, Key=where.key, Body=data, **extra),
    )


def head(where: Location) -> int | None:
    """The size of the object ``where``; None if there is none (the bucket must exist)."""
    from botocore.exceptions import ClientError

    with _failing(where, "read"):
        try:
            answer = client().head_object(Bucket=where.bucket, Key=where.key)
        except ClientError as exc:
            code = (_code(exc) or ("", ""))[0]
            if code in ("404", "NoSuchKey", "NotFound"):
                if where.key:
                    check_bucket(where)
                return None
            raise
    return int(answer["ContentLength"])


def check_bucket(where: Location) -> None:
    """Raise the ``ArtifactStorageError`` a missing or forbidden bucket gives."""
    call(where, "open", lambda s3: s3.head_bucket(Bucket=where.bucket))


def preflight(where: Location) -> None:
    """Before a run: fail at once when its artifacts could not be stored (boto3 or
    credentials missing, the bucket missing, the endpoint unreachable). A 403 passes: a
    policy may allow writing under a prefix but not HeadBucket, and a write will tell."""
    try:
        check_bucket(where)
    except ArtifactStorageError as exc:
        if (_code(exc) or ("", ""))[0] in ("403", "AccessDenied"):
            return
        raise


@dataclass(frozen=True)
class Listed:
    """An entry under a location: ``name`` relative to it, '/'-separated."""

    name: str
    is_dir: bool
    size: int | None


def listing(where: Location, recursive: bool) -> list[Listed]:
    """What lies under ``where`` (a folder-like prefix): one level, or every file and folder
    below it. Keys ending in '/' (folder markers some tools write) are not files."""
    prefix = where.folder
    found: dict[str, Listed] = {}

    def run(s3: Any) -> None:
        paginator = s3.get_paginator("list_objects_v2")
        args: dict[str, Any] = {"Bucket": where.bucket, "Prefix": prefix}
        if not recursive:
            args["Delimiter"] = "/"
        for page in paginator.paginate(**args):
            for sub in page.get("CommonPrefixes", []):
                name = sub["Prefix"][len(prefix) :].strip("/")
                if name:
                    found[name] = Listed(name, True, None)
            for obj in page.get("Contents", []):
                name = obj["Key"][len(prefix) :]
                if not name or name.endswith("/"):
                    if recursive and name.strip("/"):
                        _folders(found, name.strip("/") + "/x")
                    continue
                found[name] = Listed(name, False, int(obj["Size"]))
                if recursive:
                    _folders(found, name)

    call(where, "list", run)
    return sorted(found.values(), key=lambda e: e.name)


def _folders(found: dict[str, Listed], name: str) -> None:
    parts = name.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        folder = "/".join(parts[:i])
        found.setdefault(folder, Listed(folder, True, None))


def download_file(where: Location, dest: Path, size: int | None = None) -> None:
    """Download the object ``where`` (of ``size`` bytes, when known) to ``dest``, written
    beside it then renamed: one GET when small, else in ranges through s3transfer."""
    partial = dest.with_name(dest.name + ".part")

    def get(s3: Any) -> None:
        body = s3.get_object(Bucket=where.bucket, Key=where.key)["Body"]
        try:
            with open(partial, "wb") as out:
                for chunk in body.iter_chunks(1024 * 1024):
                    out.write(chunk)
        finally:
            body.close()

    def ranges(s3: Any) -> None:
        from s3transfer.manager import TransferManager
        from s3transfer.subscribers import BaseSubscriber

        class Sized(BaseSubscriber):  # type: ignore[misc]
            def on_queued(self, future: Any, **kwargs: Any) -> None:
                if size is not None:  # known already: s3transfer need not ask again
                    future.meta.provide_transfer_size(size)

        with TransferManager(s3, _transfer_config()) as manager:
            manager.download(where.bucket, where.key, str(partial), subscribers=[Sized()]).result()

    try:
        small = size is not None and size < MULTIPART_BYTES
        call(where, "download", get if small else ranges)
        partial.replace(dest)
    finally:
        partial.unlink(missing_ok=True)


def stream(where: Location, chunk: int = 1024 * 1024) -> tuple[int, Iterator[bytes]] | None:
    """The object's size and its bytes in chunks (for a server's download response); None
    when there is no such object (one request either way)."""
    from botocore.exceptions import ClientError

    with _failing(where, "read"):
        try:
            answer = client().get_object(Bucket=where.bucket, Key=where.key)
        except ClientError as exc:
            if (_code(exc) or ("", ""))[0] in ("NoSuchKey", "404"):
                return None
            raise
    body = answer["Body"]

    def chunks() -> Iterator[bytes]:
        try:
            with _failing(where, "read"):
                yield from body.iter_chunks(chunk)
        finally:
            body.close()

    return int(answer["ContentLength"]), chunks()


def delete(where: Location) -> None:
    """Delete the object ``where`` and everything under it as a folder."""

    def run(s3: Any) -> None:
        keys = [where.key] if where.key else []
        paginator = s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=where.bucket, Prefix=where.folder):
            keys += [obj["Key"] for obj in page.get("Contents", [])]
        for start in range(0, len(keys), 1000):  # DeleteObjects takes 1,000 keys at most
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            s3.delete_objects(Bucket=where.bucket, Delete={"Objects": batch, "Quiet": True})

    call(where, "delete", run)
