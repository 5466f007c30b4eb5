"""What every tracking store offers: ``SqlStore`` (a database) and ``RestStore`` (an http(s)
tracking server speaking MLflow's REST API) both satisfy this protocol."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from reprorun.errors import ResourceAlreadyExists, ResourceNotFound
from reprorun.tracking.entities import (
    Experiment,
    LoggedModel,
    LoggedModelStatus,
    Metric,
    Page,
    Run,
    RunStatus,
    ViewType,
)
from reprorun.tracking.store.registry_base import ModelRegistry


class TrackingStore(ModelRegistry, Protocol):
    artifact_root: str  # where new experiments keep artifacts ("" when the server decides)

    def close(self) -> None: ...

    # experiments
    def create_experiment(
        self, name: str, artifact_location: str | None = None, tags: Mapping[str, str] | None = None
    ) -> str: ...
    def get_experiment(self, experiment_id: str) -> Experiment: ...
    def get_experiment_by_name(self, name: str) -> Experiment | None: ...
    def get_or_create_experiment(self, name: str) -> str: ...
    def list_experiments(self) -> list[Experiment]: ...
    def search_experiments(
        self,
        *,
        view_type: ViewType = ...,
        max_results: int = ...,
        filter_string: str | None = ...,
        order_by: Sequence[str] | None = ...,
        page_token: str | None = ...,
    ) -> Page[Experiment]: ...
    def rename_experiment(self, experiment_id: str, new_name: str) -> None: ...
    def delete_experiment(self, experiment_id: str) -> None: ...
    def restore_experiment(self, experiment_id: str) -> None: ...
    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None: ...
    def delete_experiment_tag(self, experiment_id: str, key: str) -> None: ...

    # runs
    def create_run(
        self,
        experiment_id: str,
        *,
        run_name: str | None = ...,
        user_id: str = ...,
        start_time: int | None = ...,
        tags: Mapping[str, str] | None = ...,
        params: Mapping[str, str] | None = ...,
        status: RunStatus = ...,
        run_id: str | None = ...,
    ) -> Run: ...
    def get_run(self, run_id: str) -> Run: ...
    def resolve_run_id(self, prefix: str) -> str: ...
    def search_runs(
        self,
        experiment_ids: Sequence[str],
        filter_string: str | None = ...,
        *,
        run_view_type: ViewType = ...,
        max_results: int = ...,
        order_by: Sequence[str] | None = ...,
        page_token: str | None = ...,
    ) -> Page[Run]: ...
    def update_run(
        self,
        run_id: str,
        *,
        status: RunStatus | None = ...,
        end_time: int | None = ...,
        run_name: str | None = ...,
        only_if_status: RunStatus | None = ...,
    ) -> bool: ...
    def delete_run(self, run_id: str) -> None: ...
    def restore_run(self, run_id: str) -> None: ...

    # logging
    def log_batch(
        self,
        run_id: str,
        *,
        metrics: Sequence[Metric] = ...,
        params: Mapping[str, str] | None = ...,
        tags: Mapping[str, str] | None = ...,
    ) -> None: ...
    def log_param(self, run_id: str, key: str, value: str) -> None: ...
    def log_metric(self, run_id: str, metric: Metric) -> None: ...
    def set_tag(self, run_id: str, key: str, value: str) -> None: ...
    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None: ...
    def delete_tag(self, run_id: str, key: str) -> None: ...
    def get_metric_history(self, run_id: str, key: str) -> list[Metric]: ...

    # logged models
    def create_logged_model(
        self,
        experiment_id: str,
        *,
        name: str | None = ...,
        source_run_id: str | None = ...,
        tags: Mapping[str, str] | None = ...,
        params: Mapping[str, str] | None = ...,
        model_type: str | None = ...,
    ) -> LoggedModel: ...
    def get_logged_model(self, model_id: str, *, allow_deleted: bool = ...) -> LoggedModel: ...
    def finalize_logged_model(self, model_id: str, status: LoggedModelStatus) -> LoggedModel: ...
    def set_logged_model_tags(self, model_id: str, tags: Mapping[str, str]) -> None: ...
    def delete_logged_model_tag(self, model_id: str, key: str) -> None: ...
    def log_logged_model_params(self, model_id: str, params: Mapping[str, str]) -> None: ...
    def delete_logged_model(self, model_id: str) -> None: ...
    def search_logged_models(
        self,
        experiment_ids: Sequence[str],
        *,
        filter_string: str | None = ...,
        max_results: int = ...,
        order_by: Sequence[Mapping[str, Any]] | None = ...,
        page_token: str | None = ...,
        datasets: Sequence[Mapping[str, Any]] | None = ...,
    ) -> Page[LoggedModel]: ...


def get_or_create_experiment(store: TrackingStore, name: str) -> str:
    """The id of the experiment ``name``, created if missing (a race with another creator is
    settled by reading the winner's)."""
    found = store.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return store.create_experiment(name)
    except ResourceAlreadyExists:  # created by a concurrent run in between
        found = store.get_experiment_by_name(name)
        assert found is not None
        return found.experiment_id


def run_id_prefix(prefix: str) -> str:
    """A run id or a prefix of one, normalised; a prefix must be at least 4 hex digits."""
    prefix = prefix.strip().lower()
    if len(prefix) != 32 and (len(prefix) < 4 or not all(c in "0123456789abcdef" for c in prefix)):
        raise ResourceNotFound(
            f"No run with id {prefix!r} (give the full id or at least 4 hex digits)."
        )
    return prefix
