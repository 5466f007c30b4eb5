"""Tracking: entities, stores, artifacts and the in-run API."""

from reprorun.tracking.entities import (
    Experiment,
    Metric,
    Run,
    RunData,
    RunInfo,
    RunStatus,
    SystemTags,
)

__all__ = ["Experiment", "Metric", "Run", "RunData", "RunInfo", "RunStatus", "SystemTags"]
