"""Backends: where a run's command executes (local, Ray, Slurm, Kubernetes, Databricks)."""

from reprorun.backends.base import Backend, LaunchSpec, SubmittedRun
from reprorun.backends.registry import backend_names, get_backend

__all__ = ["Backend", "LaunchSpec", "SubmittedRun", "backend_names", "get_backend"]
