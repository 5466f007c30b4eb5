"""Projects: the MLproject model, parameters, and running a project (``reprorun.projects.run``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reprorun.projects.launch import run
    from reprorun.projects.planning import RunPlan
    from reprorun.projects.planning import plan_uri as plan
    from reprorun.projects.spec import EntryPoint, Project, load_project

__all__ = ["EntryPoint", "Project", "RunPlan", "load_project", "plan", "run"]

_LAZY = {
    "run": "reprorun.projects.launch",
    "plan": "reprorun.projects.planning:plan_uri",  # the pipeline's plan takes a RunRequest
    "RunPlan": "reprorun.projects.planning",
    "load_project": "reprorun.projects.spec",
    "Project": "reprorun.projects.spec",
    "EntryPoint": "reprorun.projects.spec",
}


def __getattr__(name: str) -> Any:
    # Lazy: `import reprorun` in user code must not pay for YAML and the runner.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'reprorun.projects' has no attribute {name!r}")
    import importlib

    module, _, attribute = module.partition(":")
    return getattr(importlib.import_module(module), attribute or name)
