"""The tracking store behind an http(s) URI: MLflow's REST API, spoken to reprorun's server or
to any MLflow tracking server. Same methods and errors as ``SqlStore``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from reprorun.errors import ResourceNotFound
from reprorun.tracking.entities import (
    Experiment,
    LoggedModel,
    LoggedModelStatus,
    Metric,
    ModelMetric,
    Page,
    Run,
    RunData,
    RunInfo,
    RunStatus,
    SystemTags,
    ViewType,
    now_ms,
)
from reprorun.tracking.http import client_for
from reprorun.tracking.store.base import get_or_create_experiment, run_id_prefix
from reprorun.tracking.store.rest_registry import RestRegistry

API = "/api/2.0/mlflow"
_BATCH = 100  # params/tags per log-batch request (MLflow's limit)
_METRIC_BATCH = 1000


class RestStore(RestRegistry):
    """A remote tracking store. ``artifact_root`` is empty: the server chooses locations."""

    artifact_root = ""

    def __init__(self, uri: str):
        self.uri = uri
        self.http = client_for(uri)

    def close(self) -> None:
        self.http.close()

    def _get(self, path: str, **query: Any) -> dict[str, Any]:
        return self.http.call("GET", API + path, query)

    def _post(self, path: str, body: Mapping[str, Any], method: str = "POST") -> dict[str, Any]:
        return self.http.call(method, API + path, body)

    def _search(
        self,
        path: str,
        body: Mapping[str, Any],
        filter_string: str | None,
        order_by: Sequence[Any] | None,
        page_token: str | None,
    ) -> dict[str, Any]:
        """A search request: ``body`` plus the optional filter, ordering and page token."""
        optional = {
            "filter": filter_string,
            "order_by": list(order_by or ()),
            "page_token": page_token,
        }
        return self._post(path, {**body, **{k: v for k, v in optional.items() if v}})

    # --- experiments ----------------------------------------------------------------------

    def create_experiment(
        self, name: str, artifact_location: str | None = None, tags: Mapping[str, str] | None = None
    ) -> str:
        body: dict[str, Any] = {"name": name, "tags": _kv(tags or {})}
        if artifact_location:
            body["artifact_location"] = artifact_location
        return str(self._post("/experiments/create", body)["experiment_id"])

    def get_experiment(self, experiment_id: str) -> Experiment:
        return _experiment(self._get("/experiments/get", experiment_id=experiment_id)["experiment"])

    def get_experiment_by_name(self, name: str) -> Experiment | None:
        try:
            found = self._get("/experiments/get-by-name", experiment_name=name)
        except ResourceNotFound:
            return None
        return _experiment(found["experiment"])

    def get_or_create_experiment(self, name: str) -> str:
        return get_or_create_experiment(self, name)

    def list_experiments(self) -> list[Experiment]:
        result: list[Experiment] = []
        token: str | None = None
        while True:
            page = self.search_experiments(max_results=1000, page_token=token)
            result += page
            token = page.token
            if not token:
                return sorted(
                    result, key=lambda e: int(e.experiment_id) if e.experiment_id.isdigit() else 0
                )

    def search_experiments(
        self,
        *,
        view_type: ViewType = ViewType.ACTIVE_ONLY,
        max_results: int = 1000,
        filter_string: str | None = None,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> Page[Experiment]:
        body = {"view_type": view_type.value, "max_results": max_results}
        found = self._search("/experiments/search", body, filter_string, order_by, page_token)
        return Page(
            [_experiment(e) for e in found.get("experiments", [])], found.get("next_page_token")
        )

    def rename_experiment(self, experiment_id: str, new_name: str) -> None:
        self._post("/experiments/update", {"experiment_id": experiment_id, "new_name": new_name})

    def delete_experiment(self, experiment_id: str) -> None:
        self._post("/experiments/delete", {"experiment_id": experiment_id})

    def restore_experiment(self, experiment_id: str) -> None:
        self._post("/experiments/restore", {"experiment_id": experiment_id})

    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None:
        self._post(
            "/experiments/set-experiment-tag",
            {"experiment_id": experiment_id, "key": key, "value": value},
        )

    def delete_experiment_tag(self, experiment_id: str, key: str) -> None:
        self._post(
            "/experiments/delete-experiment-tag", {"experiment_id": experiment_id, "key": key}
        )

    # --- runs -----------------------------------------------------------------------------

    def create_run(
        self,
        experiment_id: str,
        *,
        run_name: str | None = None,
        user_id: str = "",
        start_time: int | None = None,
        tags: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        status: RunStatus = RunStatus.RUNNING,
        run_id: str | None = None,
    ) -> Run:
        """Create the run, then its params (MLflow's create takes tags only)."""
        all_tags = dict(tags or {})
        if run_name:
            all_tags[SystemTags.RUN_NAME] = run_name
        if user_id:
            all_tags.setdefault(SystemTags.USER, user_id)
        body: dict[str, Any] = {
            "experiment_id": experiment_id,
            "tags": _kv(all_tags),
            # MLflow's server stores 0 when the client sends no start time.
            "start_time": now_ms() if start_time is None else start_time,
        }
        if run_name:
            body["run_name"] = run_name
        if user_id:
            body["user_id"] = user_id
        run = _run(self._post("/runs/create", body)["run"])
        if params:
            self.log_batch(run.info.run_id, params=params)
        if status is not RunStatus.RUNNING:
            self.update_run(run.info.run_id, status=status)
        return self.get_run(run.info.run_id) if params else run

    def get_run(self, run_id: str) -> Run:
        return _run(self._get("/runs/get", run_id=run_id)["run"])

    def resolve_run_id(self, prefix: str) -> str:
        """A full run id from a unique prefix (at least 4 hex digits)."""
        prefix = run_id_prefix(prefix)
        if len(prefix) == 32:
            return prefix
        ids = [e.experiment_id for e in self.list_experiments()]
        found = self.search_runs(
            ids, f"attributes.run_id LIKE '{prefix}%'", run_view_type=ViewType.ALL, max_results=3
        )
        if not found:
            raise ResourceNotFound(f"No run id starts with {prefix!r}.")
        if len(found) > 1:
            raise ResourceNotFound(f"Run id prefix {prefix!r} is ambiguous; give more digits.")
        return found[0].info.run_id

    def search_runs(
        self,
        experiment_ids: Sequence[str],
        filter_string: str | None = None,
        *,
        run_view_type: ViewType = ViewType.ACTIVE_ONLY,
        max_results: int = 1000,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> Page[Run]:
        body: dict[str, Any] = {
            "experiment_ids": list(experiment_ids),
            "run_view_type": run_view_type.value,
            "max_results": max_results,
        }
        found = self._search("/runs/search", body, filter_string, order_by, page_token)
        return Page([_run(r) for r in found.get("runs", [])], found.get("next_page_token"))

    def update_run(
        self,
        run_id: str,
        *,
        status: RunStatus | None = None,
        end_time: int | None = None,
        run_name: str | None = None,
        only_if_status: RunStatus | None = None,
    ) -> bool:
        """As ``SqlStore.update_run``; the ``only_if_status`` guard is checked, then written
        (the REST API has no conditional update)."""
        if only_if_status is not None and self.get_run(run_id).info.status is not only_if_status:
            return False
        body: dict[str, Any] = {"run_id": run_id, "run_uuid": run_id}
        if status is not None:
            body["status"] = status.value
        if end_time is not None:
            body["end_time"] = end_time
        if run_name is not None:
            body["run_name"] = run_name
        if len(body) == 2:
            return False
        self._post("/runs/update", body)
        return True

    def delete_run(self, run_id: str) -> None:
        self._post("/runs/delete", {"run_id": run_id})

    def restore_run(self, run_id: str) -> None:
        self._post("/runs/restore", {"run_id": run_id})

    # --- logging --------------------------------------------------------------------------

    def log_batch(
        self,
        run_id: str,
        *,
        metrics: Sequence[Metric] = (),
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """One request when within MLflow's limits; larger batches are split (params first,
        so a conflicting parameter fails before any metric is written)."""
        param_items = list((params or {}).items())
        tag_items = list((tags or {}).items())
        metric_items = list(metrics)
        while param_items or tag_items or metric_items:
            body: dict[str, Any] = {"run_id": run_id}
            if param_items:
                body["params"] = _kv(dict(param_items[:_BATCH]))
                param_items = param_items[_BATCH:]
            if tag_items:
                body["tags"] = _kv(dict(tag_items[:_BATCH]))
                tag_items = tag_items[_BATCH:]
            room = _METRIC_BATCH - len(body.get("params", ())) - len(body.get("tags", ()))
            if metric_items and room > 0:
                body["metrics"] = [_metric_json(m) for m in metric_items[:room]]
                metric_items = metric_items[room:]
            self._post("/runs/log-batch", body)

    def log_param(self, run_id: str, key: str, value: str) -> None:
        self._post("/runs/log-parameter", {"run_id": run_id, "key": key, "value": value})

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self._post("/runs/set-tag", {"run_id": run_id, "key": key, "value": value})

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self.log_batch(run_id, tags=tags)

    def delete_tag(self, run_id: str, key: str) -> None:
        self._post("/runs/delete-tag", {"run_id": run_id, "key": key})

    def log_metric(self, run_id: str, metric: Metric) -> None:
        self._post("/runs/log-metric", {"run_id": run_id, **_metric_json(metric)})

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        result: list[Metric] = []
        token: str | None = None
        while True:
            found = self._get(
                "/metrics/get-history", run_id=run_id, metric_key=key, page_token=token
            )
            result += [_metric(m) for m in found.get("metrics", [])]
            token = found.get("next_page_token")
            if not token:
                return result

    # --- logged models --------------------------------------------------------------------

    def create_logged_model(
        self,
        experiment_id: str,
        *,
        name: str | None = None,
        source_run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        model_type: str | None = None,
    ) -> LoggedModel:
        body: dict[str, Any] = {
            "experiment_id": experiment_id,
            "tags": _kv(tags or {}),
            "params": _kv(params or {}),
        }
        for key, value in (
            ("name", name),
            ("source_run_id", source_run_id),
            ("model_type", model_type),
        ):
            if value:
                body[key] = value
        return _logged_model(self._post("/logged-models", body)["model"])

    def get_logged_model(self, model_id: str, *, allow_deleted: bool = False) -> LoggedModel:
        query = {"allow_deleted": "true"} if allow_deleted else {}
        return _logged_model(self._get(f"/logged-models/{model_id}", **query)["model"])

    def finalize_logged_model(self, model_id: str, status: LoggedModelStatus) -> LoggedModel:
        proto = {
            LoggedModelStatus.READY: "LOGGED_MODEL_READY",
            LoggedModelStatus.FAILED: "LOGGED_MODEL_UPLOAD_FAILED",
            LoggedModelStatus.PENDING: "LOGGED_MODEL_PENDING",
        }[status]
        found = self._post(
            f"/logged-models/{model_id}", {"model_id": model_id, "status": proto}, method="PATCH"
        )
        return _logged_model(found["model"])

    def set_logged_model_tags(self, model_id: str, tags: Mapping[str, str]) -> None:
        self._post(f"/logged-models/{model_id}/tags", {"tags": _kv(tags)}, method="PATCH")

    def delete_logged_model_tag(self, model_id: str, key: str) -> None:
        from urllib.parse import quote

        self._post(f"/logged-models/{model_id}/tags/{quote(key, safe='')}", {}, method="DELETE")

    def log_logged_model_params(self, model_id: str, params: Mapping[str, str]) -> None:
        self._post(
            f"/logged-models/{model_id}/params", {"model_id": model_id, "params": _kv(params)}
        )

    def delete_logged_model(self, model_id: str) -> None:
        self._post(f"/logged-models/{model_id}", {"model_id": model_id}, method="DELETE")

    def search_logged_models(
        self,
        experiment_ids: Sequence[str],
        *,
        filter_string: str | None = None,
        max_results: int = 100,
        order_by: Sequence[Mapping[str, Any]] | None = None,
        page_token: str | None = None,
        datasets: Sequence[Mapping[str, Any]] | None = None,
    ) -> Page[LoggedModel]:
        body: dict[str, Any] = {"experiment_ids": list(experiment_ids), "max_results": max_results}
        if datasets:
            body["datasets"] = [dict(d) for d in datasets]
        orders = [dict(o) for o in order_by or ()]
        found = self._search("/logged-models/search", body, filter_string, orders, page_token)
        return Page(
            [_logged_model(m) for m in found.get("models", [])], found.get("next_page_token")
        )


# --- JSON <-> entities ----------------------------------------------------------------------------


def _kv(items: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in items.items()]


def _pairs(items: Any) -> dict[str, str]:
    return {i["key"]: i.get("value", "") for i in items or []}


def _double(value: Any) -> float:
    if isinstance(value, str):
        return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}.get(
            value, float(value) if value else 0.0
        )
    return float(value)


def _metric_json(m: Metric) -> dict[str, Any]:
    value: float | str = m.value
    if math.isnan(m.value):
        value = "NaN"
    elif math.isinf(m.value):
        value = "Infinity" if m.value > 0 else "-Infinity"
    found = {"key": m.key, "value": value, "timestamp": m.timestamp, "step": m.step}
    for name in ("model_id", "dataset_name", "dataset_digest"):
        if getattr(m, name):
            found[name] = getattr(m, name)
    return found


def _metric(m: Mapping[str, Any]) -> Metric:
    return Metric(
        m["key"], _double(m.get("value", 0)), int(m.get("timestamp", 0)), int(m.get("step", 0))
    )


def _experiment(e: Mapping[str, Any]) -> Experiment:
    return Experiment(
        experiment_id=str(e["experiment_id"]),
        name=e.get("name", ""),
        artifact_location=e.get("artifact_location", ""),
        lifecycle_stage=e.get("lifecycle_stage", "active"),
        creation_time=int(e["creation_time"]) if e.get("creation_time") is not None else None,
        last_update_time=(
            int(e["last_update_time"]) if e.get("last_update_time") is not None else None
        ),
        tags=_pairs(e.get("tags")),
    )


def _run(r: Mapping[str, Any]) -> Run:
    info = r.get("info", {})
    data = r.get("data", {})
    run_id = info.get("run_id") or info.get("run_uuid", "")
    tags = _pairs(data.get("tags"))
    return Run(
        RunInfo(
            run_id=run_id,
            experiment_id=str(info.get("experiment_id", "")),
            run_name=info.get("run_name") or tags.get(SystemTags.RUN_NAME, ""),
            status=RunStatus(info.get("status", "RUNNING")),
            start_time=int(info.get("start_time") or 0),
            end_time=int(info["end_time"]) if info.get("end_time") else None,
            artifact_uri=info.get("artifact_uri", ""),
            user_id=info.get("user_id", ""),
            lifecycle_stage=info.get("lifecycle_stage", "active"),
        ),
        RunData(
            params=_pairs(data.get("params")),
            metrics={m["key"]: _double(m.get("value", 0)) for m in data.get("metrics") or []},
            tags=tags,
        ),
    )


def _logged_model(m: Mapping[str, Any]) -> LoggedModel:
    info = m.get("info", {})
    status = {
        "LOGGED_MODEL_READY": LoggedModelStatus.READY,
        "LOGGED_MODEL_UPLOAD_FAILED": LoggedModelStatus.FAILED,
    }.get(info.get("status", ""), LoggedModelStatus.PENDING)
    return LoggedModel(
        model_id=info["model_id"],
        experiment_id=str(info.get("experiment_id", "")),
        name=info.get("name", ""),
        artifact_location=info.get("artifact_uri", ""),
        creation_timestamp=int(info.get("creation_timestamp_ms", 0)),
        last_updated_timestamp=int(info.get("last_updated_timestamp_ms", 0)),
        status=status,
        source_run_id=info.get("source_run_id"),
        model_type=info.get("model_type"),
        status_message=info.get("status_message"),
        tags=_pairs(info.get("tags")),
        params=_pairs(m.get("data", {}).get("params")),
        metrics=[
            ModelMetric(
                key=p["key"],
                value=_double(p.get("value", 0)),
                timestamp=int(p.get("timestamp", 0)),
                step=int(p.get("step", 0)),
                run_id=p.get("run_id", ""),
                dataset_name=p.get("dataset_name"),
                dataset_digest=p.get("dataset_digest"),
            )
            for p in m.get("data", {}).get("metrics") or []
        ],
    )
