"""The backend interface: submit a prepared command, get back a handle on the running job."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprorun.errors import UnknownNameError, UserInputError
from reprorun.tracking.entities import RunStatus
from reprorun.tracking.store.base import TrackingStore

Echo = Callable[[bytes], None]


@dataclass(frozen=True)
class LaunchSpec:
    """Everything a backend needs; nothing about the CLI."""

    run_id: str
    command: str  # shell syntax by contract; every substituted value is already quoted
    cwd: Path
    env: Mapping[str, str]
    store: TrackingStore
    artifact_dir: Path
    log_path: str = "logs/run.log"  # relative to the run's artifacts
    echo: Echo | None = None  # receives the child's output as it arrives
    argv: list[str] | None = None  # run this instead of `bash -c command` (containers)
    stop_argv: list[str] | None = None  # run this too when the run is cancelled
    on_finish: Callable[[], None] | None = None  # once the run has ended (release resources)


class SubmittedRun(abc.ABC):
    """A run handed to a backend (MLflow's SubmittedRun: wait, get_status, cancel)."""

    @property
    @abc.abstractmethod
    def run_id(self) -> str: ...

    @abc.abstractmethod
    def wait(self) -> bool:
        """Block until the run ends; True when it FINISHED."""

    @abc.abstractmethod
    def get_status(self) -> RunStatus: ...

    @abc.abstractmethod
    def cancel(self, force: bool = False) -> None:
        """Stop the run (its whole process tree) and mark it KILLED; ``force``: at once."""


@dataclass(frozen=True)
class LocalBackendConfig:
    """Options of the local backend (``--backend-config``)."""

    stop_grace_seconds: float = 10.0  # SIGTERM first, SIGKILL after this long

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LocalBackendConfig:
        unknown = set(data) - {"stop_grace_seconds"}
        if unknown:
            raise UserInputError(
                f"Unknown local backend option(s): {', '.join(sorted(unknown))}. "
                "Valid: stop_grace_seconds."
            )
        grace = data.get("stop_grace_seconds", cls.stop_grace_seconds)
        if isinstance(grace, bool) or not isinstance(grace, (int, float)) or grace < 0:
            raise UserInputError(
                f"Local backend option stop_grace_seconds must be a number >= 0, got {grace!r}."
            )
        return cls(stop_grace_seconds=float(grace))


class Backend(abc.ABC):
    name: str

    def submit(self, spec: LaunchSpec) -> SubmittedRun:
        return self._submit(spec)

    @abc.abstractmethod
    def _submit(self, spec: LaunchSpec) -> SubmittedRun: ...


def _local(config: Mapping[str, Any]) -> Backend:
    from reprorun.backends.local import LocalBackend

    return LocalBackend(LocalBackendConfig.from_dict(config))


BACKENDS: dict[str, Callable[[Mapping[str, Any]], Backend]] = {"local": _local}


def get_backend(name: str | None, config: Mapping[str, Any] | None = None) -> Backend:
    """The backend called ``name``, configured and validated before any work starts."""
    key = (name or "local").lower()
    factory = BACKENDS.get(key)
    if factory is None:
        raise UnknownNameError("backend", name or "", sorted(BACKENDS))
    return factory(config or {})
