"""The web UI: one static page (``ui/static``, no build step, nothing fetched from the
internet) and the few read-only endpoints it needs beyond MLflow's REST API, under
``/ui-api``: experiment summaries, the keys of an experiment's runs, a run's log from an
offset, its artifact files and logged models, and the model registry (``ui_models``).

Everything a user typed reaches the page as JSON and is rendered as text by ``app.js``; the
artifact endpoints serve only files under the run's (or model's) artifact folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from reprorun.errors import TrackingError, UserInputError
from reprorun.server.bucket import artifact_size, read_artifact, s3_file_response
from reprorun.server.files import DOWNLOAD_HEADERS, artifact_file
from reprorun.server.ui_models import registry_routes
from reprorun.tracking.artifacts import is_remote, is_s3
from reprorun.tracking.entities import SystemTags
from reprorun.tracking.mlflow_api.errors import ApiError, error_for, invalid

STATIC = Path(__file__).parent / "ui" / "static"
LOG_CHUNK = 256 * 1024  # the most log text one request returns
PREVIEW_BYTES = 512 * 1024  # the most of a file the page previews


def ui_routes(store: Any, json_response: Callable[[int, Any], Response]) -> list[Any]:
    """Routes for the page and its endpoints over ``store`` (a SqlStore)."""

    def endpoint(fn: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def call(request: Request) -> Response:
            try:
                result = await run_in_threadpool(fn, request)
            except Exception as exc:  # a clear message for the page, never a traceback
                error = error_for(exc)
                return json_response(error.status, error.body())
            return result if isinstance(result, Response) else json_response(200, result)

        return call

    def experiments(request: Request) -> Any:
        view = request.query_params.get("view", "active")
        if view not in ("active", "deleted", "all"):
            raise invalid(f"Invalid view {view!r}: use active, deleted or all.")
        return {"experiments": store.experiment_summaries(view)}

    def keys(request: Request) -> Any:
        ids = request.query_params.getlist("experiment_id")
        if not ids:
            raise invalid("Name at least one experiment_id.")
        return store.run_keys(ids)

    def log(request: Request) -> Any:
        run = store.get_run(request.path_params["run_id"])
        offset = _int_param(request, "offset", 0)
        path = run.data.tags.get("reprorun.log", "logs/run.log")
        status = run.info.status.value
        reason = run.data.tags.get(SystemTags.EXIT_REASON)  # why it ended, once it has
        uri = _live_log_folder(run.info.run_id, run.info.artifact_uri, path)
        size = artifact_size(uri, path)  # a folder's or S3's
        if size is None:  # no log (yet): the run did not start, or logs elsewhere
            return {
                "text": "",
                "offset": 0,
                "size": 0,
                "status": status,
                "exit_reason": reason,
                "exists": False,
            }
        start = offset if 0 <= offset <= size else 0
        # Only the tail of a huge log on the first request; the page follows from there.
        if offset == 0 and size > LOG_CHUNK:
            start = size - LOG_CHUNK
        data = read_artifact(uri, path, start, LOG_CHUNK)
        # Whole characters only: a UTF-8 sequence cut by the chunk's start or end (or by a
        # writer mid-write) is skipped at the start and left for the next read at the end.
        if start > 0 and offset == 0:
            skip = next((i for i, b in enumerate(data[:4]) if b & 0xC0 != 0x80), 0)
            data, start = data[skip:], start + skip
        data = data[: _complete_utf8(data)]
        return {
            "text": data.decode("utf-8", errors="replace"),
            "start": start,
            "offset": start + len(data),
            "size": size,
            "status": status,
            "exit_reason": reason,
            "exists": True,
        }

    def artifact(request: Request) -> Any:
        run = store.get_run(request.path_params["run_id"])
        return _file_response(request, run.info.artifact_uri)

    def model_artifact(request: Request) -> Any:
        model = store.get_logged_model(request.path_params["model_id"])
        return _file_response(request, model.artifact_location)

    def models(request: Request) -> Any:
        """The run's logged models (MLflow 3), each with its MLmodel description."""
        from reprorun.tracking.models import load_hint, mlmodel_flavors

        run_id = request.path_params["run_id"]
        run = store.get_run(run_id)
        found = store.search_logged_models(
            [run.info.experiment_id],
            filter_string=f"source_run_id = '{run.info.run_id}'",
            max_results=100,
        )
        result: list[dict[str, Any]] = []
        for model in found:
            uri = f"runs:/{run.info.run_id}/{model.name}"
            description = _mlmodel(model.artifact_location, "MLmodel")
            flavors = mlmodel_flavors(description)
            result.append(
                {
                    "model_id": model.model_id,
                    "name": model.name,
                    "status": model.status.value,
                    "model_type": model.model_type or ", ".join(sorted(flavors)),
                    "artifact_location": model.artifact_location,
                    "uri": uri,
                    "load": load_hint(uri, flavors),
                    "description": description,
                }
            )
        # Models logged the MLflow 2 way (reprorun.log_model too) live among the run's
        # artifacts, listed in the mlflow.log-model.history tag.
        for entry in _model_history(run.data.tags.get("mlflow.log-model.history")):
            path = str(entry.get("artifact_path") or "")
            if not path or any(m["name"] == path for m in result):
                continue
            listed = entry.get("flavors")
            flavors = listed if isinstance(listed, dict) else {}
            uri = f"runs:/{run.info.run_id}/{path}"
            result.append(
                {
                    "model_id": str(entry.get("model_uuid") or ""),
                    "name": path,
                    "status": "READY",
                    "model_type": ", ".join(sorted(flavors)),
                    "artifact_location": f"{run.info.artifact_uri.rstrip('/')}/{path}",
                    "uri": uri,
                    "load": load_hint(uri, flavors),
                    "description": _mlmodel(run.info.artifact_uri, f"{path}/MLmodel"),
                }
            )
        return {"models": result}

    async def index(_: Request) -> Response:
        # No framing by other sites (the page's own CSP, in a <meta>, cannot say that).
        headers = {
            "Cache-Control": "no-cache",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": "frame-ancestors 'none'",
        }
        return FileResponse(STATIC / "index.html", headers=headers)

    async def ui_root(_: Request) -> Response:
        return RedirectResponse("/")

    return [
        Route("/", index),
        Route("/ui", ui_root),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
        Route("/ui-api/experiments", endpoint(experiments)),
        Route("/ui-api/keys", endpoint(keys)),
        Route("/ui-api/runs/{run_id}/log", endpoint(log)),
        Route("/ui-api/runs/{run_id}/artifact", endpoint(artifact)),
        Route("/ui-api/runs/{run_id}/models", endpoint(models)),
        Route("/ui-api/models/{model_id}/artifact", endpoint(model_artifact)),
        *registry_routes(store, endpoint),
    ]


def _complete_utf8(data: bytes) -> int:
    """The length of ``data`` without a trailing incomplete UTF-8 sequence."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:  # a continuation byte: look further back for the lead
            continue
        needed = (
            2
            if byte >> 5 == 0b110
            else 3
            if byte >> 4 == 0b1110
            else 4
            if byte >> 3 == 0b11110
            else 1
        )
        return len(data) - back if needed > back else len(data)
    return len(data)


def _live_log_folder(run_id: str, artifact_uri: str, path: str) -> str:
    """Where a run's log is read from: a run of this machine whose artifacts are in S3 or
    behind a server writes it in its staging folder until it ends (then uploads it)."""
    if not is_remote(artifact_uri):
        return artifact_uri
    from reprorun.config import home
    from reprorun.tracking.artifacts import safe_relative

    staged = home() / "staging" / run_id
    try:
        found = (staged / safe_relative(path)).is_file()
    except (OSError, UserInputError):
        found = False
    return staged.as_uri() if found else artifact_uri


def _mlmodel(artifact_uri: str, path: str) -> str | None:
    """The text of a model's MLmodel file (its flavors, signature, sizes), if it has one."""
    try:
        data = read_artifact(artifact_uri, path, 0, PREVIEW_BYTES)
    except (ApiError, OSError, TrackingError):  # none, or its storage cannot be read now
        return None
    text = data.decode("utf-8", errors="replace")
    return text[:PREVIEW_BYTES]


def _model_history(tag: str | None) -> list[dict[str, Any]]:
    import json

    try:
        entries = json.loads(tag or "[]")
    except ValueError:
        return []
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise invalid(f"Invalid {name} {raw!r}: expected an integer.") from None


def _file_response(request: Request, artifact_uri: str) -> Response:
    raw = request.query_params.get("path", "")
    # ?preview=1: the file's first bytes, as text, for the page to show.
    if request.query_params.get("preview"):
        data = read_artifact(artifact_uri, raw, 0, PREVIEW_BYTES)
        truncated = "1" if (artifact_size(artifact_uri, raw) or 0) > len(data) else "0"
        return Response(
            data,
            media_type="application/octet-stream",
            headers={
                **DOWNLOAD_HEADERS,
                "Content-Disposition": "attachment",
                "X-Truncated": truncated,
            },
        )
    disposition = "inline" if request.query_params.get("inline") else "attachment"
    # Only images are shown in the page; everything else downloads as bytes, so an uploaded
    # .html or .svg artifact can never run script in the UI's origin.
    media_type = _image_type(Path(raw)) if disposition == "inline" else None
    if is_s3(artifact_uri):
        return s3_file_response(artifact_uri, raw, media_type)
    target = artifact_file(artifact_uri, raw)
    return FileResponse(
        target,
        filename=target.name,
        media_type=media_type or "application/octet-stream",
        content_disposition_type=disposition if media_type else "attachment",
        headers=DOWNLOAD_HEADERS if media_type is None else {"X-Content-Type-Options": "nosniff"},
    )


def _image_type(path: Path) -> str | None:
    return {
        ".png": "image/png",
        ".jpg": "image/jpeg",
        ".jpeg": "image/jpeg",
        ".gif": "image/gif",
        ".webp": "image/webp",
        ".bmp": "image/bmp",
    }.get(path.suffix.lower())
