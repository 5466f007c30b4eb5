"""MLflow's error answers: ``ApiError`` and the code and status of each reprorun error."""

from __future__ import annotations

import json
from typing import Any

from reprorun.errors import (
    ArtifactStorageError,
    ParamConflict,
    ResourceAlreadyExists,
    ResourceNotFound,
    ServerUnavailable,
    StoreFileError,
    TrackingError,
    UserInputError,
)

Json = dict[str, Any]


class ApiError(Exception):
    """An error answered to the client in MLflow's format."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> Json:
        return {"error_code": self.code, "message": self.message}


def invalid(message: str) -> ApiError:
    return ApiError(400, "INVALID_PARAMETER_VALUE", message)


def error_for(exc: Exception) -> ApiError:
    """MLflow's code and status for a reprorun error."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ResourceNotFound):
        return ApiError(404, "RESOURCE_DOES_NOT_EXIST", str(exc))
    if isinstance(exc, ResourceAlreadyExists):
        return ApiError(400, "RESOURCE_ALREADY_EXISTS", str(exc))
    if isinstance(exc, (UserInputError, ParamConflict)):
        return invalid(str(exc))
    if isinstance(exc, RecursionError):  # JSON nested deeper than Python can follow
        return invalid("The request nests arrays or objects too deeply.")
    if isinstance(exc, (ServerUnavailable, StoreFileError, ArtifactStorageError)):
        return ApiError(503, "TEMPORARILY_UNAVAILABLE", str(exc))
    if isinstance(exc, TrackingError):
        return ApiError(400, "INVALID_STATE", str(exc))
    return ApiError(500, "INTERNAL_ERROR", f"{type(exc).__name__}: {exc}")


def _shown(value: Any) -> str:
    """A request value as MLflow's messages show it: as JSON (``31``, ``"foo"``)."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def bad_value(value: Any, name: str, expected: str) -> ApiError:
    """MLflow's message for a parameter of the wrong type or range, which its clients match:
    ``Invalid value 31 for parameter 'run_id' supplied``."""
    return invalid(f"Invalid value {_shown(value)} for parameter '{name}' supplied: {expected}.")
