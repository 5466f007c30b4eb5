"""The server's small HTTP helpers: JSON responses in MLflow's error shape, bounded body
reads, and the errors for a missing endpoint, a body too large and a limit hit."""

from __future__ import annotations

import math
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from reprorun import _json as fastjson
from reprorun.tracking.mlflow_api.errors import ApiError

MiB = 1024 * 1024


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def json_response(status: int, body: dict[str, Any]) -> Response:
    # Non-finite doubles are already "NaN"/"Infinity" strings (mlflow_api renders them).
    return Response(
        fastjson.dumps(body),
        status_code=status,
        media_type="application/json",
    )


def error_response(error: ApiError) -> Response:
    return json_response(error.status, error.body())


def has_body(request: Request) -> bool:
    length = request.headers.get("content-length", "0").strip()
    return "transfer-encoding" in request.headers or length not in ("", "0")


def no_endpoint(method: str, path: str) -> ApiError:
    return ApiError(404, "ENDPOINT_NOT_FOUND", f"No API endpoint {method} {path}.")


def too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "REQUEST_LIMIT_EXCEEDED",
        f"The request body is larger than this server accepts ({limit} bytes).",
    )


def retry_later(status: int, what: str, seconds: float) -> Response:
    wait = max(1, math.ceil(seconds))
    response = json_response(
        status,
        {
            "error_code": "REQUEST_LIMIT_EXCEEDED",
            "message": f"{what}; retry in {wait} s.",
        },
    )
    response.headers["Retry-After"] = str(wait)
    return response
