"""Backends: where a run's command executes (this version: the local machine)."""

from reprorun.backends.base import BACKENDS, Backend, LaunchSpec, SubmittedRun, get_backend

__all__ = ["BACKENDS", "Backend", "LaunchSpec", "SubmittedRun", "get_backend"]
