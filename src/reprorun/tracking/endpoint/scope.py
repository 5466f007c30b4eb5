"""What the per-run endpoint lets a run's code do: its own run, and what that code may
legitimately make and read, never the administration of the store.

Allowed (anything else MLflow's REST API offers is refused with 403 PERMISSION_DENIED):

- writes (log metric/param/batch/model/inputs/outputs, set/delete tag, update status or name)
  to the run itself, to the runs created through this endpoint (``mlflow.start_run(
  nested=True)``, ``MlflowClient().create_run``) and to the steps its code started with
  ``mlflow.run()`` (runs of its experiment tagged ``mlflow.parentRunId`` = one of those);
- creating runs in the run's experiment;
- creating logged models in the run's experiment from those runs, and finalizing them, setting
  their tags and logging their params (``mlflow.<flavor>.log_model``);
- metrics attached to logged models (``model_id``) of the run's experiment only;
- reads of the run's experiment: the experiment itself (by id, or by its name), its runs, their
  metric histories and artifact listings, its logged models;
- the model registry: reading it (``mlflow.pyfunc.load_model("models:/iris@champion")``),
  creating registered models, and versions made from its own runs' or logged models' files
  (``log_model(registered_model_name=...)``, ``mlflow.register_model``).

Refused: creating, renaming, deleting, restoring or tagging experiments, searching every
experiment, deleting or restoring runs, deleting logged models, and any write to a run or
logged model this endpoint did not create; in the registry, everything that changes what others
load (aliases, stages, descriptions, tags, renames, deletions) and versions of other files.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from reprorun.tracking.mlflow_api.routes import routes
from reprorun.tracking.mlflow_api.routing import path_pattern

API = "/api/2.0/mlflow"
PARENT_TAG = "mlflow.parentRunId"
# The model registry's reads: any run's code may load a registered model.
REGISTRY_READS = (
    ("GET", "/registered-models/get"),
    ("GET", "/registered-models/search"),
    ("POST", "/registered-models/search"),
    ("GET", "/registered-models/alias"),
    ("GET", "/registered-models/get-latest-versions"),
    ("POST", "/registered-models/get-latest-versions"),
    ("GET", "/model-versions/get"),
    ("GET", "/model-versions/search"),
    ("GET", "/model-versions/get-download-uri"),
)
Request = Mapping[str, Any]


def _field(request: Request, *names: str) -> Any:
    """The first of ``names`` present and not null, as MLflowApi reads it."""
    for name in names:
        if request.get(name) is not None:
            return request[name]
    return None


def _ids(value: Any) -> list[str] | None:
    """An ``experiment_ids`` value as MLflowApi reads it (None when it is not a list of ids)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(
        isinstance(v, (str, int)) and not isinstance(v, bool) for v in value
    ):
        return [str(v) for v in value]
    return None


class RunScope:
    """The policy of one run's endpoint; ``refusal`` decides, ``record`` remembers what the run
    created. Thread-safe (the endpoint answers each connection in its own thread)."""

    def __init__(self, store: Any, run_id: str):
        self.store = store
        self.run_id = run_id
        self._lock = threading.Lock()
        self._runs = {run_id}  # runs this endpoint may write to
        self._models: set[str] = set()  # logged models it may write to
        self._experiment_id: str | None = None
        Check = Callable[[Request, dict[str, str]], str | None]
        run_write: Check = lambda r, _: self._own_run(r)  # noqa: E731
        run_read: Check = lambda r, _: self._readable_run(r)  # noqa: E731
        model_write: Check = lambda _, p: self._own_model(p["model_id"])  # noqa: E731
        model_read: Check = lambda _, p: self._readable_model(p["model_id"])  # noqa: E731
        allowed: dict[tuple[str, str], Check] = {
            ("GET", "/runs/get"): run_read,
            ("GET", "/metrics/get-history"): run_read,
            ("GET", "/artifacts/list"): run_read,
            ("GET", "/runs/search"): lambda r, _: self._in_experiment(r, "experiment_ids"),
            ("POST", "/runs/search"): lambda r, _: self._in_experiment(r, "experiment_ids"),
            ("POST", "/runs/create"): lambda r, _: self._creates_in_experiment(r),
            ("GET", "/experiments/get"): lambda r, _: self._is_experiment(r),
            ("GET", "/experiments/get-by-name"): lambda r, _: self._is_experiment_name(r),
            ("POST", "/logged-models"): lambda r, _: self._creates_model(r),
            ("POST", "/logged-models/search"): lambda r, _: self._in_experiment(
                r, "experiment_ids"
            ),
            ("GET", "/logged-models/{model_id}"): model_read,
            ("GET", "/logged-models/{model_id}/artifacts/directories"): model_read,
            ("PATCH", "/logged-models/{model_id}"): model_write,
            ("PATCH", "/logged-models/{model_id}/tags"): model_write,
            ("DELETE", "/logged-models/{model_id}/tags/{tag_key}"): model_write,
            ("POST", "/logged-models/{model_id}/params"): model_write,
        }
        for name in (
            "update",
            "log-metric",
            "log-parameter",
            "set-tag",
            "delete-tag",
            "log-batch",
            "log-model",
            "log-inputs",
            "outputs",
        ):
            allowed[("POST", f"/runs/{name}")] = run_write
        for name in ("log-metric", "log-batch"):
            allowed[("POST", f"/runs/{name}")] = lambda r, _: self._writes_metrics(r)
        anyone: Check = lambda _, __: None  # noqa: E731
        for method, path in REGISTRY_READS:
            allowed[(method, path)] = anyone
        allowed[("POST", "/registered-models/create")] = anyone
        allowed[("POST", "/model-versions/create")] = lambda r, _: self._registers_own(r)
        self._allowed = [
            (method, path_pattern(API + path), check) for (method, path), check in allowed.items()
        ]

    # --- the decision --------------------------------------------------------------------

    def refusal(self, method: str, path: str, request: Request) -> str | None:
        """Why ``method path`` with ``request`` (query and JSON body merged, as MLflowApi
        reads them) is refused; None when the endpoint may answer it."""
        for allowed_method, pattern, check in self._allowed:
            match = pattern.match(path)
            if match is not None and allowed_method == method:
                why = check(request, match.groupdict())
                return None if why is None else self._message(method, path, why)
        return self._message(method, path, "it is not part of what a run's code may do")

    def record(self, method: str, path: str, answer: Mapping[str, Any]) -> None:
        """Remember the run or logged model a successful create answered."""
        if method != "POST":
            return
        if path == API + "/runs/create":
            run_id = answer.get("run", {}).get("info", {}).get("run_id")
            if isinstance(run_id, str):
                with self._lock:
                    self._runs.add(run_id)
        elif path == API + "/logged-models":
            model_id = answer.get("model", {}).get("info", {}).get("model_id")
            if isinstance(model_id, str):
                with self._lock:
                    self._models.add(model_id)

    def _message(self, method: str, path: str, why: str) -> str:
        return (
            f"{method} {path.removeprefix(API)} is refused: {why}. This endpoint serves run "
            f"{self.run_id} only: its code may log to that run, create runs and logged models "
            f"in its experiment ({self.experiment_id}) and read that experiment. To manage the "
            "store (other experiments and runs), use `reprorun server` or the reprorun CLI; to "
            "log into another experiment, start the run with `reprorun run --experiment-name`."
        )

    # --- what the run owns and may read -----------------------------------------------------

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            self._experiment_id = str(self.store.get_run(self.run_id).info.experiment_id)
        return self._experiment_id

    def _own_run(self, request: Request) -> str | None:
        run_id = _field(request, "run_id", "run_uuid")
        with self._lock:
            if isinstance(run_id, str) and run_id in self._runs:
                return None
        if isinstance(run_id, str) and self._is_step(run_id):
            with self._lock:
                self._runs.add(run_id)
            return None
        return f"run {run_id!r} is neither this run nor one its code created"

    def _writes_metrics(self, request: Request) -> str | None:
        """Metrics to a run it may write to; those naming a logged model (``model_id``) are
        attached to it, so that model must be of this run's experiment."""
        why = self._own_run(request)
        metrics = request.get("metrics")
        for point in metrics if isinstance(metrics, list) else [request]:
            model_id = point.get("model_id") if isinstance(point, dict) else None
            if why is None and isinstance(model_id, str) and model_id:
                why = self._readable_model(model_id)
        return why

    def _is_step(self, run_id: str) -> bool:
        """Whether ``run_id`` is a step this run's code started with ``mlflow.run()`` (run by
        reprorun as a run of this experiment tagged as a child of a run this endpoint owns)."""
        try:
            run = self.store.get_run(run_id)
        except Exception:
            return False
        parent = run.data.tags.get(PARENT_TAG)
        with self._lock:
            owned = parent in self._runs
        return owned and str(run.info.experiment_id) == self.experiment_id

    def _readable_run(self, request: Request) -> str | None:
        run_id = _field(request, "run_id", "run_uuid")
        with self._lock:
            if isinstance(run_id, str) and run_id in self._runs:
                return None
        if not isinstance(run_id, str):
            return None  # MLflowApi refuses it as invalid
        try:
            experiment = self.store.get_run(run_id).info.experiment_id
        except Exception:
            return None  # MLflowApi answers the same error (not found) without revealing more
        if str(experiment) == self.experiment_id:
            return None
        return f"run {run_id!r} is in another experiment ({experiment})"

    def _own_model(self, model_id: str) -> str | None:
        with self._lock:
            if model_id in self._models:
                return None
        return f"logged model {model_id!r} was not created by this run's code"

    def _readable_model(self, model_id: str) -> str | None:
        with self._lock:
            if model_id in self._models:
                return None
        try:
            experiment = self.store.get_logged_model(model_id, allow_deleted=True).experiment_id
        except Exception:
            return None  # not found: MLflowApi says so
        if str(experiment) == self.experiment_id:
            return None
        return f"logged model {model_id!r} is in another experiment ({experiment})"

    def _registers_own(self, request: Request) -> str | None:
        """A new model version made from a logged model this run's code created, or from the
        files of a run it may write to (the server checks the source is inside them)."""
        model_id = _field(request, "model_id")
        if isinstance(model_id, str) and model_id:
            return self._own_model(model_id)
        if _field(request, "run_id") is None:
            return "a model version must name the run (run_id) or logged model it comes from"
        return self._own_run(request)

    def _is_experiment(self, request: Request) -> str | None:
        wanted = _field(request, "experiment_id")
        if wanted is None or wanted == self.experiment_id:
            return None  # a missing id: MLflowApi refuses it as invalid
        return f"experiment {wanted!r} is not this run's experiment"

    def _is_experiment_name(self, request: Request) -> str | None:
        name = _field(request, "experiment_name")
        if name is None or name == self.store.get_experiment(self.experiment_id).name:
            return None
        return f"experiment {name!r} is not this run's experiment"

    def _in_experiment(self, request: Request, field: str) -> str | None:
        ids = _ids(_field(request, field))
        if ids and set(ids) == {self.experiment_id}:
            return None
        return f"it must name this run's experiment only ({field}: [{self.experiment_id!r}])"

    def _creates_in_experiment(self, request: Request) -> str | None:
        wanted = _field(request, "experiment_id") or "0"  # MLflowApi's default
        if wanted == self.experiment_id:
            return None
        return f"runs may be created in this run's experiment only, not in {wanted!r}"

    def _creates_model(self, request: Request) -> str | None:
        wanted = _field(request, "experiment_id")
        if wanted is not None and wanted != self.experiment_id:
            return f"logged models may be created in this run's experiment only, not {wanted!r}"
        source = _field(request, "source_run_id")
        if source is None:
            return None
        return self._own_run({"run_id": source})


_KNOWN = [path_pattern(template) for _, template, _ in routes()]


def known_route(path: str) -> bool:
    """Whether MLflowApi serves ``path`` (with any method)."""
    return any(pattern.match(path) for pattern in _KNOWN)
