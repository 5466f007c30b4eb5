"""``MlflowApi``: one call per request, ``handle(method, path, query, body) -> (status, json)``,
every failure answered as MLflow's error body."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from reprorun.tracking.mlflow_api.context import ApiContext
from reprorun.tracking.mlflow_api.errors import Json, error_for
from reprorun.tracking.mlflow_api.parsing import parse_request
from reprorun.tracking.mlflow_api.routes import find


class MlflowApi(ApiContext):
    """The REST API over a tracking store."""

    def handle(
        self, method: str, path: str, query: Mapping[str, list[str]], body: bytes
    ) -> tuple[int, Json]:
        try:
            return 200, self._dispatch(method, path, query, body)
        except Exception as exc:  # every failure becomes MLflow's error body, never a traceback
            error = error_for(exc)
            if error.status >= 500:  # a bug or an outage: the operator needs the traceback
                logging.getLogger("reprorun.server").exception("%s %s failed", method, path)
            return error.status, error.body()

    def _dispatch(
        self, method: str, path: str, query: Mapping[str, list[str]], body: bytes
    ) -> Json:
        handler, params = find(method, path.replace("/ajax-api/", "/api/", 1))
        return handler(self, parse_request(method, query, body), params)
