"""Ray's Jobs REST API (``/api/jobs/``, ``/api/packages/``) through reprorun's HTTP client,
and the zip of a tree uploaded as a job's working directory or ``py_modules`` package."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl

from reprorun.errors import ExecutionError, UserInputError
from reprorun.tracking.http import HttpClient, Retries

_TIMEOUT = 30.0  # seconds for one API call


_UPLOAD_TIMEOUT = 600.0  # the project's zip can be large


_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so the same tree gives the same package name


_EXCEPTION_LINE = re.compile(r"^[\w.]+(Error|Exception): ")


class JobsApi:
    """The few calls of Ray's Jobs REST API that reprorun needs."""

    def __init__(self, address: str):
        self.address = address
        auth = _auth_header()
        # Not retried: Ray's answers are judged by the caller, a dead address fails at once.
        options: dict[str, Any] = {
            "auth": auth,
            "retries": Retries(delays=()),
            "unreachable": self._unreachable,
            "keep_alive": False,
        }
        self._http = HttpClient(address, timeout=_TIMEOUT, **options)
        self._uploads = HttpClient(address, timeout=_UPLOAD_TIMEOUT, **options)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | IO[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        upload: bool = False,
    ) -> tuple[int, bytes]:
        """One call: (HTTP status, body). An address that does not answer raises
        ExecutionError; HTTP errors are returned for the caller to judge. ``upload``: a
        large body, given more time."""
        path, _, query = path.partition("?")
        client = self._uploads if upload else self._http
        response = client.request(
            method, path, query=dict(parse_qsl(query)), body=body, headers=headers
        )
        return int(response.status), bytes(response.data)  # type: ignore[attr-defined]

    def _unreachable(self, what: str, exc: Exception) -> ExecutionError:
        # HTTPException: something that is not an HTTP server answered (a GCS port)
        reason = str(exc) if isinstance(exc, OSError) and str(exc) else repr(exc)
        return ExecutionError(
            f"Could not reach the Ray Jobs API at {self.address} ({what}: "
            f"{reason}). Check that the cluster is up (`ray status` on its head node) and "
            f"that {self.address} opens the Ray dashboard (the dashboard's port, 8265 by "
            "default, not the GCS port 6379 or the ray:// client port 10001)."
        )

    def call(self, method: str, path: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        data = json.dumps(payload).encode("utf-8")
        status, answer = self.request(
            method, path, data, headers={"Content-Type": "application/json"}
        )
        return self.json_of(status, answer, f"{method} {path}")

    def json_of(self, status: int, data: bytes, what: str) -> dict[str, Any]:
        if status >= 400:
            raise self.error(status, data, what)
        try:
            parsed = json.loads(data or b"{}")
        except ValueError:
            raise ExecutionError(
                f"{self.address} answered {what} with something other than JSON: is it a Ray "
                f"dashboard? It said: {data[:200]!r}"
            ) from None
        return parsed if isinstance(parsed, dict) else {}

    def error(self, status: int, data: bytes, what: str) -> ExecutionError:
        # Ray answers errors with plain text, often Python tracebacks (nested, when the head
        # relays its agent's): the last exception line says what went wrong.
        lines = [line.strip() for line in data.decode("utf-8", "replace").splitlines()]
        errors = [line for line in lines if _EXCEPTION_LINE.match(line)]
        said = (errors or [line for line in lines if line] or ["(no details)"])[-1][:1000]
        hint = ""
        if status in (401, 403):
            hint = " The cluster asks for a token: set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH)."
        return ExecutionError(
            f"Ray at {self.address} refused {what}: HTTP {status}: {said.rstrip('.')}.{hint}"
        )

    def upload_tree(self, root: Path, what: str = "the project's files") -> str:
        """Ship ``root`` (without .git and Python's caches) as a content-addressed package;
        returns its URI for ``runtime_env.working_dir`` or ``py_modules``. A package the
        cluster already has is not sent again."""
        with tempfile.TemporaryFile(prefix="reprorun-ray-") as package:
            zip_tree(root, package)
            size = package.tell()
            package.seek(0)
            digest = hashlib.sha1(usedforsecurity=False)
            while chunk := package.read(1 << 20):
                digest.update(chunk)
            name = f"_ray_pkg_{digest.hexdigest()}.zip"
            path = f"/api/packages/gcs/{name}"
            status, data = self.request("GET", path)
            if status == 404:
                package.seek(0)
                status, data = self.request(
                    "PUT",
                    path,
                    package,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Length": str(size),
                    },
                    upload=True,
                )
            if status >= 400:
                raise self.error(status, data, f"{what} ({root}, {size} bytes zipped)")
        return f"gcs://{name}"


def zip_tree(root: Path, out: IO[bytes]) -> None:
    """Zip ``root``'s files (not .git, nor Python's caches, which the job's Python makes
    anew) into ``out``, in a stable order with fixed dates and the files' modes (Ray restores
    them: scripts stay executable)."""
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in (".git", "__pycache__"))
            here = Path(folder)
            rel = here.relative_to(root)
            if not dirs and not files and rel.parts:
                archive.writestr(zipfile.ZipInfo(f"{rel.as_posix()}/", _ZIP_TIME), b"")
            for name in sorted(files):
                path = here / name
                if name == ".git" or not path.is_file():  # a submodule's link, a dead link
                    continue
                stat = path.stat()
                info = zipfile.ZipInfo((rel / name).as_posix(), _ZIP_TIME)
                info.external_attr = (stat.st_mode & 0xFFFF) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                with (
                    path.open("rb") as src,
                    archive.open(info, "w", force_zip64=stat.st_size > 1 << 30) as dst,
                ):
                    shutil.copyfileobj(src, dst, 1 << 20)


def _auth_header() -> dict[str, str]:
    """A cluster with token authentication (RAY_AUTH_MODE=token): the token from Ray's own
    variables, never from the backend config (which is stored with the run)."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    token_path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if not token and token_path:
        try:
            token = Path(token_path).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UserInputError(f"RAY_AUTH_TOKEN_PATH: cannot read {token_path}: {exc}") from None
    return {"Authorization": f"Bearer {token}"} if token else {}
