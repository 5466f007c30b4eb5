"""MLflow's REST API 2.0 over a tracking store, independent of any web framework.

``api.MlflowApi.handle(method, path, query, body)`` returns ``(status, json_dict)``; the
server's Starlette app and the per-run endpoint (``tracking.endpoint``) are thin adapters
around it. Request and response shapes follow MLflow's protos as its server renders them in
JSON: int64 as numbers (numeric strings accepted too), doubles that are not finite as
"NaN"/"Infinity", repeated fields as lists of ``{"key", "value"}``. Errors use MLflow's body
``{"error_code": ..., "message": ...}`` and its HTTP statuses.

One module per resource (``experiments``, ``runs``, ``metrics``, ``datasets``, ``artifacts``,
``logged_models``), each registering its handlers with ``routing.route``; ``routes`` imports
them all and answers which handler serves a path; ``parsing`` reads request fields,
``errors`` maps reprorun's errors to MLflow's, ``context`` renders entities.
"""
