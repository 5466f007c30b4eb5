"""What every handler works with: the store, how artifact locations are shown, the stale-run
refresh the builder passes in, and MLflow's JSON rendering of experiments, runs and logged
models."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from reprorun.tracking.entities import Experiment, LoggedModel, Run
from reprorun.tracking.mlflow_api.errors import Json
from reprorun.tracking.mlflow_api.parsing import _json_double, _json_tag, _need
from reprorun.tracking.search import INPUTS_TAG
from reprorun.tracking.store.base import TrackingStore

OUTPUTS_TAG = "reprorun.outputs"  # JSON [{"model_id", "step"}]
# A run as it is now: whoever builds the API may close runs whose process died (the server
# passes backends.status.refresh); the tracking layer cannot ask a backend itself.
Refresh = Callable[[Run], Run]


def _as_stored(run: Run) -> Run:
    return run


# --- artifact URIs as clients see them ----------------------------------------------------------


@dataclass(frozen=True)
class ArtifactUris:
    """How stored artifact locations are shown to clients.

    With ``proxied`` (``reprorun server``), locations under the artifact root are shown as
    ``mlflow-artifacts:/<relative path>`` so remote clients upload and download through the
    server's proxy; otherwise (the per-run endpoint, same machine) they are shown as stored.
    """

    root: str  # the store's artifact root (a file:// URI or a path)
    proxied: bool

    @property
    def root_dir(self) -> Path:
        from reprorun.tracking.artifacts import local_dir

        return local_dir(self.root)

    def public(self, stored: str) -> str:
        # A string prefix test, no file-system call: locations under the root were made by
        # joining onto it (resolving paths cost more than the whole search of 100 runs).
        root = self.root.rstrip("/")
        if not self.proxied or not stored.startswith(root + "/"):
            return stored
        return "mlflow-artifacts:/" + stored[len(root) + 1 :]


class ApiContext:
    """The store behind the API and MLflow's rendering of its entities (``MlflowApi`` adds
    the dispatch of requests to the handlers)."""

    def __init__(self, store: TrackingStore, uris: ArtifactUris, refresh: Refresh | None = None):
        self.store = store
        self.uris = uris
        self.refresh = refresh or _as_stored

    def experiment(self, exp: Experiment) -> Json:
        result: Json = {
            "experiment_id": exp.experiment_id,
            "name": exp.name,
            "artifact_location": self.uris.public(exp.artifact_location),
            "lifecycle_stage": exp.lifecycle_stage,
            "tags": [{"key": k, "value": v} for k, v in exp.tags.items()],
        }
        if exp.creation_time is not None:
            result["creation_time"] = exp.creation_time
        if exp.last_update_time is not None:
            result["last_update_time"] = exp.last_update_time
        return result

    def run_info(self, run: Run) -> Json:
        info = run.info
        result: Json = {
            "run_id": info.run_id,
            "run_uuid": info.run_id,
            "run_name": info.run_name,
            "experiment_id": info.experiment_id,
            "user_id": info.user_id,
            "status": info.status.value,
            "start_time": info.start_time,
            "artifact_uri": self.uris.public(info.artifact_uri),
            "lifecycle_stage": info.lifecycle_stage,
        }
        if info.end_time is not None:
            result["end_time"] = info.end_time
        return result

    def metric_points(self, runs: Sequence[Run]) -> dict[str, dict[str, tuple[int, int]]]:
        """(timestamp, step) of the runs' latest metrics, when the store keeps them."""
        points = getattr(self.store, "latest_metric_points", None)
        return points([r.info.run_id for r in runs]) if points else {}

    def run(self, run: Run, points: Mapping[str, tuple[int, int]] | None = None) -> Json:
        """A run as MLflow renders it; ``points``: its latest metrics' (timestamp, step)."""
        data = run.data
        metrics = []
        for key, value in data.metrics.items():
            metric: Json = {"key": key, "value": _json_double(value)}
            if points and key in points:
                metric["timestamp"], metric["step"] = points[key]
            metrics.append(metric)
        # Inputs and outputs are kept in two tags; MLflow shows them as their own fields.
        inputs = _json_tag(data.tags, INPUTS_TAG, dict)
        outputs = _json_tag(data.tags, OUTPUTS_TAG, list)
        return {
            "info": self.run_info(run),
            "data": {
                "metrics": metrics,
                "params": [{"key": k, "value": v} for k, v in data.params.items()],
                "tags": [
                    {"key": k, "value": v}
                    for k, v in data.tags.items()
                    if k not in (INPUTS_TAG, OUTPUTS_TAG)
                ],
            },
            "inputs": {
                "dataset_inputs": inputs.get("datasets", []),
                "model_inputs": inputs.get("models", []),
            },
            "outputs": {"model_outputs": outputs},
        }

    def logged_model(self, model: LoggedModel) -> Json:
        status = {"PENDING": "LOGGED_MODEL_PENDING", "READY": "LOGGED_MODEL_READY"}.get(
            model.status.value, "LOGGED_MODEL_UPLOAD_FAILED"
        )
        info: Json = {
            "model_id": model.model_id,
            "experiment_id": model.experiment_id,
            "name": model.name,
            "creation_timestamp_ms": model.creation_timestamp,
            "last_updated_timestamp_ms": model.last_updated_timestamp,
            "artifact_uri": self.uris.public(model.artifact_location),
            "status": status,
            "tags": [{"key": k, "value": v} for k, v in model.tags.items()],
        }
        for key, value in (
            ("model_type", model.model_type),
            ("source_run_id", model.source_run_id),
            ("status_message", model.status_message),
        ):
            if value:
                info[key] = value
        metrics = []
        for m in model.metrics:
            point: Json = {
                "key": m.key,
                "value": _json_double(m.value),
                "timestamp": m.timestamp,
                "step": m.step,
                "model_id": model.model_id,
                "run_id": m.run_id,
            }
            if m.dataset_name:
                point["dataset_name"] = m.dataset_name
            if m.dataset_digest:
                point["dataset_digest"] = m.dataset_digest
            metrics.append(point)
        return {
            "info": info,
            "data": {
                "params": [{"key": k, "value": v} for k, v in model.params.items()],
                "metrics": metrics,
            },
        }

    def run_id(self, body: Json) -> str:
        run_id = _need(body, "run_id", "run_uuid")
        return run_id
