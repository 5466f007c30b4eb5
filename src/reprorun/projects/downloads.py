"""``path`` parameters given a URL: downloaded to a local file before the command runs.

As MLflow does, a ``path`` parameter may be an ``http(s)://``, ``s3://`` or ``gs://`` URL: the
command receives the local copy, the run records the URL (so a rerun downloads again). Copies
are kept by content, ``$REPRORUN_HOME/downloads/<sha256>/<file name>``: the run's fingerprint
hashes the content as it does a local path's, two runs of one file share one copy, and a
detached run or a rerun finds its file where the command was told it is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import os
import re
import shutil
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import unquote, urlparse

from reprorun.errors import UserInputError
from reprorun.params import is_remote

if TYPE_CHECKING:
    from reprorun.projects.params import Parameter, ResolvedParam

TIMEOUT = 60  # seconds without a byte before a download is given up
CHUNK = 1024 * 1024
MAX_NAME = 200  # characters of a downloaded file's name kept


def downloads_root() -> Path:
    from reprorun.config import home

    return home() / "downloads"


def download_path_params(
    params: Sequence[ResolvedParam],
    declared: Mapping[str, Parameter],
    progress: Callable[[str], None] | None = None,
) -> list[ResolvedParam]:
    """``params`` with each ``path`` parameter given a URL downloaded: its value and the text
    the command receives become the local copy; the text the run records stays the URL."""
    from reprorun.params import ParamType

    found = []
    for p in params:
        spec = declared.get(p.name)
        if spec is not None and spec.type is ParamType.PATH and is_remote(str(p.value)):
            if progress:
                progress(f"downloading {p.value} (parameter {p.name})")
            local = str(download(p.name, str(p.value)))
            p = dataclasses.replace(p, value=local, command_text=local)
        found.append(p)
    return found


def download(name: str, url: str) -> Path:
    """Download ``url`` into the content-addressed folder; UserInputError naming the
    parameter and the URL when it cannot be."""
    root = downloads_root()
    partial = root / f"tmp-{uuid.uuid4().hex}"
    partial.mkdir(parents=True, exist_ok=True)
    try:
        target = partial / _file_name(url)
        if target.parent != partial:  # _file_name's promise, checked where it matters
            raise UserInputError(f"Parameter {name!r} (path): unusable file name in {url}")
        with target.open("wb") as out:
            _fetch(name, url, out)
        digest = hashlib.sha256()
        with target.open("rb") as read:
            while block := read.read(CHUNK):
                digest.update(block)
        final = root / digest.hexdigest() / target.name
        if not final.is_file():
            final.parent.mkdir(parents=True, exist_ok=True)
            target.replace(final)  # atomic: a concurrent run sees the whole file or none
        return final
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _file_name(url: str) -> str:
    """The URL's last path segment (the command may look at the extension), decoded first and
    then reduced to a plain file name: an encoded ``/`` (``..%2F..%2F.bashrc``, ``%2Fetc``)
    must not lead the file out of its folder."""
    last = PurePosixPath(unquote(urlparse(url).path)).name
    safe = re.sub(r"[^A-Za-z0-9._+-]", "_", last)[:MAX_NAME].lstrip(".")
    return safe or "download"


def _fetch(name: str, url: str, out: BinaryIO) -> None:
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()

    def fail(why: object) -> UserInputError:
        return UserInputError(f"Parameter {name!r} (path): could not download {url}: {why}")

    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT) as response:  # noqa: S310
                shutil.copyfileobj(response, out, CHUNK)
        except urllib.error.HTTPError as exc:
            raise fail(f"HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise fail(exc.reason) from None
        except (OSError, ValueError) as exc:
            raise fail(exc) from None
        return
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    if not bucket or not key:
        raise fail(f"expected {scheme}://bucket/key")
    if scheme == "s3":
        boto3 = _optional(name, url, "boto3", "boto3")
        endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None
        try:
            boto3.client("s3", endpoint_url=endpoint).download_fileobj(bucket, key, out)
        except Exception as exc:  # botocore's errors: credentials, no such key, network
            raise fail(exc) from None
        return
    storage = _optional(name, url, "google.cloud.storage", "google-cloud-storage")
    try:
        storage.Client().bucket(bucket).blob(key).download_to_file(out)
    except Exception as exc:  # google's errors: credentials, no such object, network
        raise fail(exc) from None


def _optional(name: str, url: str, module: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserInputError(
            f"Parameter {name!r} (path) is {url}: downloading it needs the {package} package, "
            f"which is not installed where reprorun runs (pip install {package}), or give a "
            "local path."
        ) from None
