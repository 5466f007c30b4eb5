"""The route registry: handlers register with ``route(method, path)``; ``{name}`` segments of
a path become path parameters. ``routes.py`` imports every handler module, so it is complete."""

from __future__ import annotations

import re
from collections.abc import Callable

from reprorun.tracking.mlflow_api.context import ApiContext
from reprorun.tracking.mlflow_api.errors import Json

API = "/api/2.0/mlflow"
API3 = "/api/3.0/mlflow"  # MLflow 3's newer endpoints (server-info)
# The MLflow version whose REST API this server answers, reported by GET /version: MLflow's
# clients turn features off for older servers (reprorun's own version is in /health).
MLFLOW_API_VERSION = "3.17.2"
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"

Handler = Callable[[ApiContext, Json, dict[str, str]], Json]
_ROUTES: list[tuple[str, str, re.Pattern[str], Handler]] = []


def path_pattern(template: str) -> re.Pattern[str]:
    """The pattern of a route's path: ``{name}`` segments become path parameters."""
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+)" for i, part in enumerate(parts)
    )
    return re.compile(f"^{regex}\\Z")  # \Z: "runs/get\n" is not a route


def route(method: str, path: str, prefix: str = API) -> Callable[[Handler], Handler]:
    """Register a handler for ``method prefix+path``; ``{name}`` segments become path
    parameters."""
    pattern = path_pattern(prefix + path)

    def register(fn: Handler) -> Handler:
        _ROUTES.append((method, prefix + path, pattern, fn))
        return fn

    return register
