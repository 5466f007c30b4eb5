"""The few calls of the Databricks REST API the backend makes, through reprorun's HTTP client
(tracking/http.py): the Jobs API and DBFS, where what a run needs is uploaded once by content."""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
from collections.abc import Callable, Mapping
from typing import IO, Any

from reprorun.backends.databricks.credentials import Credentials
from reprorun.errors import ExecutionError, WorkspaceError
from reprorun.tracking.http import HttpClient, Retries

JOBS_API = "/api/2.1/jobs"
DBFS_API = "/api/2.0/dbfs"
BLOCK_SIZE = 1 << 20  # DBFS takes at most 1 MB per put or add-block call

_TIMEOUT = 60.0  # seconds for one API call
# When the workspace is busy (429, 5xx), seconds; a Retry-After header takes precedence. A
# workspace that cannot be reached fails at once.
_RETRIES = Retries(delays=(1.0, 2.0, 4.0), unreachable=False, retry_after=True)


class WorkspaceApi:
    """The few calls of the Databricks REST API the backend makes."""

    def __init__(self, creds: Credentials):
        self.host = creds.host
        self.source = creds.source
        self._http = HttpClient(
            creds.host,
            timeout=_TIMEOUT,
            auth={"Authorization": f"Bearer {creds.token}"},
            retries=_RETRIES,
            unreachable=_unreachable,
            keep_alive=False,
        )

    def call(
        self,
        method: str,
        path: str,
        payload: Mapping[str, Any] | None = None,
        *,
        query: Mapping[str, Any] | None = None,
        what: str = "",
        retry: bool = True,
    ) -> dict[str, Any]:
        """One call; retried (bounded) when the workspace is busy (429, 5xx). A workspace
        that cannot be reached raises ExecutionError naming it."""
        data = json.dumps(payload).encode("utf-8") if payload is not None else None
        what = what or f"{method} {path}"
        try:
            response = self._http.request(
                method,
                path,
                query=query,
                body=data,
                headers={"Content-Type": "application/json"},
                retry=retry,
            )
        except _Unreachable as exc:
            raise ExecutionError(
                f"Could not reach the Databricks workspace {self.host} ({what}: {exc}). "
                f"Check the host (from {self.source}) and this machine's network or proxy."
            ) from None
        body: bytes = response.data  # type: ignore[attr-defined]
        if response.status >= 400:
            raise self._error(response.status, body, what)
        return self._json(body, what)

    def _json(self, data: bytes, what: str) -> dict[str, Any]:
        try:
            parsed = json.loads(data or b"{}")
        except ValueError:
            raise ExecutionError(
                f"{self.host} answered {what} with something other than JSON: is it the URL "
                f"of a Databricks workspace (from {self.source})? It said: {data[:200]!r}"
            ) from None
        return parsed if isinstance(parsed, dict) else {}

    def _error(self, status: int, data: bytes, what: str) -> WorkspaceError:
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            code = str(parsed.get("error_code") or status)
            said = str(parsed.get("message") or "").strip() or "(no message)"
        else:
            code = str(status)
            said = data.decode("utf-8", "replace").strip()[:300] or "(no message)"
        if status in (401, 403):
            return WorkspaceError(
                f"The Databricks workspace {self.host} refused the token from {self.source} "
                f"({what}: HTTP {status} {code}: {said}). The token is wrong, expired or "
                "revoked, or lacks the permission: create a personal access token (Settings > "
                "Developer > Access tokens) and set DATABRICKS_TOKEN or the profile's token.",
                status,
                code,
            )
        return WorkspaceError(
            f"The Databricks workspace {self.host} refused {what}: HTTP {status} {code}: {said}",
            status,
            code,
        )

    # --- DBFS ----------------------------------------------------------------------------

    def exists(self, path: str) -> bool:
        try:
            self.call("GET", f"{DBFS_API}/get-status", query={"path": path}, what=f"DBFS {path}")
        except WorkspaceError as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or exc.status == 404:
                return False
            raise
        return True

    def upload(self, source: IO[bytes], size: int, path: str) -> None:
        """Write ``source`` to DBFS ``path``: one ``put`` up to 1 MB, else the streaming
        ``create``, ``add-block`` (1 MB each), ``close``."""
        what = f"uploading {path} ({size} bytes) to DBFS"
        if size <= BLOCK_SIZE:
            contents = base64.b64encode(source.read()).decode("ascii")
            body = {"path": path, "contents": contents, "overwrite": True}
            self.call("POST", f"{DBFS_API}/put", body, what=what)
            return
        handle = self.call(
            "POST", f"{DBFS_API}/create", {"path": path, "overwrite": True}, what=what
        )
        for block in iter(lambda: source.read(BLOCK_SIZE), b""):
            data = base64.b64encode(block).decode("ascii")
            # Not retried: a block the workspace took before failing would be written twice.
            self.call(
                "POST",
                f"{DBFS_API}/add-block",
                {"handle": handle.get("handle"), "data": data},
                what=what,
                retry=False,
            )
        self.call("POST", f"{DBFS_API}/close", {"handle": handle.get("handle")}, what=what)

    def publish(self, folder: str, suffix: str, write: Callable[[IO[bytes]], None]) -> str:
        """Store what ``write`` produces as ``<folder>/<sha256><suffix>`` unless DBFS has it
        already (the same content, the same name); returns the DBFS path."""
        with tempfile.TemporaryFile(prefix="reprorun-databricks-") as out:
            write(out)
            size = out.tell()
            out.seek(0)
            digest = hashlib.sha256()
            for chunk in iter(lambda: out.read(BLOCK_SIZE), b""):
                digest.update(chunk)
            path = f"{folder}/{digest.hexdigest()}{suffix}"
            if not self.exists(path):
                out.seek(0)
                self.upload(out, size, path)
        return path


class _Unreachable(Exception):
    """The workspace did not answer; the message is why (the caller names the call)."""


def _unreachable(what: str, exc: Exception) -> _Unreachable:
    # HTTPException: something that is not an HTTP server answered
    return _Unreachable(str(exc) if isinstance(exc, OSError) and str(exc) else repr(exc))
