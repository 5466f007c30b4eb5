"""Reading results back, as MLflow users do: ``reprorun.search_runs`` and ``reprorun.get_run``.

``search_runs`` takes MLflow's arguments and returns what ``mlflow.search_runs`` returns: a
pandas DataFrame with the same columns (``run_id``, ``experiment_id``, ``status``,
``artifact_uri``, ``start_time``, ``end_time``, then ``metrics.*``, ``params.*``, ``tags.*``),
or, when pandas is not installed (or ``output_format="list"``), the list of runs.
The filter and order_by grammars are MLflow's (``reprorun.tracking.search``); a bad one raises
``SearchError`` naming the position.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

from reprorun.errors import UserInputError
from reprorun.tracking.entities import Run, ViewType
from reprorun.tracking.store.base import TrackingStore

SEARCH_MAX_RESULTS = 100_000  # MLflow's default for search_runs into a DataFrame
RUNS_PER_PAGE = 10_000  # MLflow fetches this many per request

_log = logging.getLogger(__name__)


def _store(tracking_uri: str | None) -> TrackingStore:
    from reprorun.tracking import fluent, run_context
    from reprorun.tracking.store import open_store

    active = fluent.active_run()
    if tracking_uri is None and active is not None:
        return active.store
    return open_store(tracking_uri or run_context.tracking_uri())


def get_run(run_id: str, *, tracking_uri: str | None = None) -> Run:
    """The run ``run_id`` with its parameters, latest metrics and tags (``mlflow.get_run``)."""
    return _store(tracking_uri).get_run(run_id)


def _default_experiment_ids(store: TrackingStore) -> list[str]:
    """The experiment new runs of this process go to: the active run's, else the one
    ``reprorun run`` names in the environment, else the Default experiment ("0")."""
    from reprorun.config import experiment_name
    from reprorun.tracking import fluent, run_context

    active = fluent.active_run()
    if active is not None:
        return [active.info.experiment_id]
    name = experiment_name()
    if name:
        found = store.get_experiment_by_name(name)
        return [found.experiment_id] if found is not None else []
    return [run_context.experiment_id() or "0"]


def experiment_ids_for(
    store: TrackingStore,
    experiment_ids: Sequence[str] | None,
    experiment_names: Sequence[str] | None,
    *,
    search_all_experiments: bool = False,
) -> list[str]:
    """The experiments to search, as MLflow picks them: ids or names (not both); neither
    means the default experiment (every active experiment with ``search_all_experiments``).
    An unknown name is skipped with a warning, as MLflow does."""
    if experiment_ids and experiment_names:
        raise UserInputError("Give experiment_ids or experiment_names, not both.")
    if isinstance(experiment_ids, str) or isinstance(experiment_names, str):
        raise UserInputError("experiment_ids and experiment_names take lists, not one string.")
    if experiment_ids:
        return [str(e) for e in experiment_ids]
    if experiment_names:
        ids = []
        for name in experiment_names:
            found = store.get_experiment_by_name(name)
            if found is None:
                _log.warning("No experiment named %r: skipped.", name)
            else:
                ids.append(found.experiment_id)
        return ids
    if search_all_experiments:
        return [e.experiment_id for e in store.list_experiments()]
    return _default_experiment_ids(store)


def find_runs(
    store: TrackingStore,
    experiment_ids: Sequence[str],
    filter_string: str | None = None,
    *,
    run_view_type: ViewType = ViewType.ACTIVE_ONLY,
    max_results: int = SEARCH_MAX_RESULTS,
    order_by: Sequence[str] | None = None,
) -> list[Run]:
    """Up to ``max_results`` matching runs, fetched page by page."""
    if isinstance(max_results, bool) or not isinstance(max_results, int) or max_results < 1:
        raise UserInputError(f"max_results must be a positive integer, got {max_results!r}.")
    if isinstance(order_by, str):
        raise UserInputError(f"order_by takes a list of clauses, e.g. [{order_by!r}].")
    runs: list[Run] = []
    token: str | None = None
    while len(runs) < max_results:
        page = store.search_runs(
            list(experiment_ids),
            filter_string or None,
            run_view_type=run_view_type,
            max_results=min(RUNS_PER_PAGE, max_results - len(runs)),
            order_by=order_by,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token or not page:
            break
    return runs


def search_runs(
    experiment_ids: Sequence[str] | None = None,
    filter_string: str = "",
    run_view_type: ViewType | str = ViewType.ACTIVE_ONLY,
    max_results: int = SEARCH_MAX_RESULTS,
    order_by: Sequence[str] | None = None,
    output_format: Literal["pandas", "list"] = "pandas",
    search_all_experiments: bool = False,
    experiment_names: Sequence[str] | None = None,
    *,
    tracking_uri: str | None = None,
) -> Any:
    """Search runs as ``mlflow.search_runs`` does; a DataFrame, or a list of runs without pandas.

    ``filter_string`` and ``order_by`` use MLflow's grammar, for example
    ``filter_string="metrics.accuracy > 0.9 and params.max_depth = '3'"`` and
    ``order_by=["metrics.accuracy DESC"]``. With neither ``experiment_ids`` nor
    ``experiment_names``, the default experiment is searched.
    """
    if output_format not in ("pandas", "list"):
        raise UserInputError(f"output_format must be 'pandas' or 'list', got {output_format!r}.")
    try:
        view = ViewType(run_view_type)
    except ValueError:
        choices = ", ".join(v.value for v in ViewType)
        raise UserInputError(
            f"run_view_type must be one of {choices}, got {run_view_type!r}."
        ) from None
    store = _store(tracking_uri)
    ids = experiment_ids_for(
        store, experiment_ids, experiment_names, search_all_experiments=search_all_experiments
    )
    runs = (
        find_runs(
            store,
            ids,
            filter_string,
            run_view_type=view,
            max_results=max_results,
            order_by=order_by,
        )
        if ids
        else []
    )
    if output_format == "list":
        return runs
    import importlib

    try:
        pandas = importlib.import_module("pandas")  # optional: not a dependency of reprorun
    except ImportError:
        return runs
    return runs_frame(runs, pandas)


def runs_frame(runs: Sequence[Run], pandas: Any) -> Any:
    """The DataFrame ``mlflow.search_runs`` builds: one row a run; a missing metric is NaN,
    a missing param or tag None; times are UTC datetimes (NaT while a run has no end)."""
    info: dict[str, list[Any]] = {
        "run_id": [],
        "experiment_id": [],
        "status": [],
        "artifact_uri": [],
        "start_time": [],
        "end_time": [],
    }
    groups: dict[str, dict[str, list[Any]]] = {"metrics": {}, "params": {}, "tags": {}}
    missing = {"metrics": float("nan"), "params": None, "tags": None}
    for i, run in enumerate(runs):
        info["run_id"].append(run.info.run_id)
        info["experiment_id"].append(run.info.experiment_id)
        info["status"].append(run.info.status.value)
        info["artifact_uri"].append(run.info.artifact_uri)
        info["start_time"].append(pandas.to_datetime(run.info.start_time, unit="ms", utc=True))
        info["end_time"].append(pandas.to_datetime(run.info.end_time, unit="ms", utc=True))
        values: dict[str, dict[str, Any]] = {
            "metrics": dict(run.data.metrics),
            "params": dict(run.data.params),
            "tags": dict(run.data.tags),
        }
        for group, columns in groups.items():
            for key in sorted(values[group]):
                columns.setdefault(key, [missing[group]] * i)
            for key, column in columns.items():
                column.append(values[group].get(key, missing[group]))
    data: dict[str, list[Any]] = dict(info)
    for group, columns in groups.items():
        data.update({f"{group}.{key}": column for key, column in columns.items()})
    return pandas.DataFrame(data)
