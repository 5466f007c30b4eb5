"""Metric histories: one run's, several runs' (bulk) and sampled for charts."""

from __future__ import annotations

from reprorun.tracking.entities import Metric
from reprorun.tracking.mlflow_api.context import ApiContext
from reprorun.tracking.mlflow_api.errors import Json, bad_value, invalid
from reprorun.tracking.mlflow_api.parsing import (
    _int,
    _int_or,
    _json_double,
    _need,
    _text,
)
from reprorun.tracking.mlflow_api.routing import route


@route("GET", "/metrics/get-history")
def get_metric_history(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """Every value a run logged for one metric."""
    from reprorun.tracking.search import decode_page_token, encode_page_token

    key = _need(body, "metric_key")
    history = api.store.get_metric_history(api.run_id(body), key)
    offset = decode_page_token(_text(body, "page_token"))
    limit = _int_or(body, "max_results", max(len(history), 1))
    if limit < 1:
        raise invalid(f"max_results must be a positive integer, got {limit}.")
    page = history[offset : offset + limit]
    result: Json = {
        "metrics": [
            {"key": m.key, "value": _json_double(m.value), "timestamp": m.timestamp, "step": m.step}
            for m in page
        ]
    }
    if offset + limit < len(history):
        result["next_page_token"] = encode_page_token(offset + limit)
    return result


MAX_BULK_RUNS = 100  # run ids per bulk history request (MLflow's limit)
MAX_BULK_RESULTS = 25000  # points per run of a bulk history (MLflow's default and limit)
MAX_INTERVAL_RESULTS = 2500  # sampled steps per run of an interval history (MLflow's)


def _run_ids(body: Json, name: str) -> list[str]:
    value = body.get(name)
    ids = value if isinstance(value, list) else [] if value in (None, "") else [value]
    if not all(isinstance(i, str) for i in ids):
        raise bad_value(value, name, "expected a list of run ids")
    return ids


def _point(metric: Metric, run_id: str) -> Json:
    return {
        "key": metric.key,
        "value": _json_double(metric.value),
        "timestamp": metric.timestamp,
        "step": metric.step,
        "run_id": run_id,
    }


def _history(api: ApiContext, run_id: str, key: str) -> list[Metric]:
    points = api.store.get_metric_history(run_id, key)
    return sorted(points, key=lambda m: (m.timestamp, m.step, m.value))


@route("GET", "/metrics/get-history-bulk")
def get_metric_history_bulk(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """One metric's history for several runs (?run_id= repeated), by run id."""
    run_ids = _run_ids(body, "run_id")
    if not run_ids:
        raise invalid("GetMetricHistoryBulk request must specify at least one run_id.")
    if len(run_ids) > MAX_BULK_RUNS:
        raise invalid(
            f"GetMetricHistoryBulk request cannot specify more than {MAX_BULK_RUNS} run_ids. "
            f"Received {len(run_ids)} run_ids."
        )
    key = _text(body, "metric_key")
    if not key:
        raise invalid("GetMetricHistoryBulk request must specify a metric_key.")
    limit = _int_or(body, "max_results", MAX_BULK_RESULTS)
    if not 1 <= limit <= MAX_BULK_RESULTS:
        raise bad_value(limit, "max_results", f"expected 1 to {MAX_BULK_RESULTS}")
    return {
        "metrics": [
            _point(m, run_id)
            for run_id in sorted(run_ids)
            for m in _history(api, run_id, key)[:limit]
        ]
    }


def sampled_steps(steps: list[int], start: int, end: int, count: int) -> set[int]:
    """At most ``count`` of the sorted ``steps`` within [start, end], evenly spaced, and
    the last of them (MLflow's sampling, so a chart shows the same points)."""
    inside = [s for s in steps if start <= s <= end]
    if len(inside) <= count:
        return set(inside)
    interval = len(inside) / count
    return {inside[int(i * interval)] for i in range(count)} | {inside[-1]}


@route("GET", "/metrics/get-history-bulk-interval")
def get_metric_history_bulk_interval(api: ApiContext, body: Json, _: dict[str, str]) -> Json:
    """One metric of several runs (?run_ids=) at sampled steps, for charts."""
    run_ids = _run_ids(body, "run_ids")
    if not run_ids:
        raise invalid("Missing value for required parameter 'run_ids'.")
    if len(run_ids) > MAX_BULK_RUNS:
        raise invalid(
            f"GetMetricHistoryBulkInterval request must specify at most {MAX_BULK_RUNS} "
            f"run_ids. Received {len(run_ids)} run_ids."
        )
    key = _need(body, "metric_key")
    if not key:
        raise invalid("Missing value for required parameter 'metric_key'.")
    count = _int_or(body, "max_results", MAX_INTERVAL_RESULTS)
    if not 1 <= count <= MAX_INTERVAL_RESULTS:
        raise invalid(f"max_results must be between 1 and {MAX_INTERVAL_RESULTS}.")
    start, end = _int(body, "start_step"), _int(body, "end_step")
    if (start is None) != (end is None):
        raise invalid("If either start step or end step are specified, both must be specified.")
    if start is not None and end is not None and start > end:
        raise invalid(
            f"end_step must be greater than start_step. Found start_step={start} and "
            f"end_step={end}."
        )
    histories = {run_id: _history(api, run_id, key) for run_id in run_ids}
    steps = sorted({m.step for points in histories.values() for m in points})
    if start is None or end is None:
        start, end = 0, (steps[-1] if steps else 0)
    # Each run's first and last step are always kept.
    ends = {
        step
        for points in histories.values()
        if points
        for step in (min(m.step for m in points), max(m.step for m in points))
        if start <= step <= end
    }
    keep = sampled_steps(steps, start, end, count) | ends
    return {
        "metrics": [
            _point(m, run_id)
            for run_id, points in histories.items()
            for m in sorted(points, key=lambda m: (m.step, m.timestamp))
            if m.step in keep
        ]
    }
