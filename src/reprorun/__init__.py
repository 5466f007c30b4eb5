"""reprorun: reproducible, schedulable machine-learning runs from MLproject files.

In a project's code::

    import reprorun
    depth = reprorun.param("max_depth", 3)
    reprorun.log_metric("accuracy", 0.93)
    reprorun.log_model(model, "model")

In a notebook::

    runs = reprorun.search_runs(filter_string="metrics.accuracy > 0.9",
                                order_by=["metrics.accuracy DESC"])   # a pandas DataFrame
    reprorun.projects.run("examples/iris", parameters={"max_depth": 4})

Names load lazily: ``import reprorun`` costs almost nothing until a function is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reprorun import projects, tracking
    from reprorun._version import __version__
    from reprorun.tracking.fluent import (
        ActiveRun,
        active_run,
        end_run,
        get_artifact_uri,
        log_artifact,
        log_artifacts,
        log_metric,
        log_metrics,
        log_param,
        log_params,
        log_text,
        param,
        set_tag,
        set_tags,
        start_run,
    )
    from reprorun.tracking.models import load_model, log_model
    from reprorun.tracking.registry import register_model
    from reprorun.tracking.search_api import get_run, search_runs

_FLUENT = "reprorun.tracking.fluent"
_MODELS = "reprorun.tracking.models"
_SEARCH = "reprorun.tracking.search_api"
_REGISTRY = "reprorun.tracking.registry"
# Subpackages reachable as attributes after a bare `import reprorun`, as `mlflow.projects` is.
_SUBPACKAGES = ("projects", "tracking")
_LAZY = {
    "ActiveRun": _FLUENT,
    "active_run": _FLUENT,
    "end_run": _FLUENT,
    "get_artifact_uri": _FLUENT,
    "log_artifact": _FLUENT,
    "log_artifacts": _FLUENT,
    "log_metric": _FLUENT,
    "log_metrics": _FLUENT,
    "log_param": _FLUENT,
    "log_params": _FLUENT,
    "log_text": _FLUENT,
    "param": _FLUENT,
    "set_tag": _FLUENT,
    "set_tags": _FLUENT,
    "start_run": _FLUENT,
    "load_model": _MODELS,
    "log_model": _MODELS,
    "register_model": _REGISTRY,
    "get_run": _SEARCH,
    "search_runs": _SEARCH,
}

__all__ = [
    "ActiveRun",
    "__version__",
    "active_run",
    "end_run",
    "get_artifact_uri",
    "get_run",
    "load_model",
    "log_artifact",
    "log_artifacts",
    "log_metric",
    "log_metrics",
    "log_model",
    "log_param",
    "log_params",
    "log_text",
    "param",
    "projects",
    "register_model",
    "search_runs",
    "set_tag",
    "set_tags",
    "start_run",
    "tracking",
]


def __getattr__(name: str) -> Any:
    import importlib

    if name == "__version__":  # in a leaf module, which the layers below read too
        return importlib.import_module("reprorun._version").__version__
    if name in _SUBPACKAGES:
        return importlib.import_module(f"reprorun.{name}")  # also sets the attribute
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'reprorun' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
