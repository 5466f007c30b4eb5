"""What to run: a ``RunRequest``, the one input of the run pipeline.

The CLI, the Python API (``reprorun.projects.run``) and rerun each build one; the pipeline
plans it (``projects.planning.plan``) and launches the plan (``projects.launch``). A request
holds only data: what to run, where, and how it is recorded. What the caller wants to hear
while the run goes (its output, warnings, progress) is passed to the execution, not stored here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from reprorun.errors import UserInputError

DEFAULT_ENTRY_POINT = "main"
BackendConfig = Mapping[str, Any] | str | Path | None
_PATHS = ("patch", "env_lock")


@dataclass(frozen=True)
class RunRequest:
    """A run to make, as given (parameters are raw: the plan casts and checks them)."""

    uri: str  # a directory, a git URL or an archive
    entry_point: str = DEFAULT_ENTRY_POINT
    parameters: Mapping[str, Any] = field(default_factory=dict)
    version: str | None = None  # a branch, tag or commit of a git source
    experiment_id: str | None = None
    experiment_name: str | None = None
    env_manager: str | None = None  # None: the project's own kind
    backend: str = "local"
    backend_config: BackendConfig = None  # a mapping of options, or a JSON/YAML file
    reuse: bool = False  # return a FINISHED run with the same fingerprint instead
    tags: Mapping[str, str] = field(default_factory=dict)
    run_name: str | None = None
    tracking_uri: str | None = None
    synchronous: bool = True  # wait for the run to end
    detach: bool = False  # local backend: a supervisor process of its own owns the command
    max_parallel: int | None = None  # local backend: wait while that many such runs run
    patch: Path | None = None  # a git diff applied to the run's working copy (rerun)
    env_lock: Path | None = None  # build the environment from this lock (rerun)
    archive_sha256: str | None = None  # the archive source must have this digest
    timeout: float | None = None  # seconds the command may run (--timeout): reason timeout
    system_metrics: bool = True  # log system/* metrics while the command runs (any backend)
    notify: tuple[str, ...] = ()  # where the run's end is notified (backends/notify.py)
    # docker_env projects: options for `docker run`, as MLflow's --docker-args (NAME=VALUE
    # or NAME: memory=2g, gpus=all), recorded on the run (reprorun.docker.args) for reruns.
    docker_args: tuple[str, ...] = ()
    # Retries by class (projects/retry.py): how many more attempts an attempt that ended for
    # one of ``retry_on`` (None: the default classes) gets, each a run of its own; an OOM
    # retry multiplies the backend's memory request by ``retry_memory``; the first wait is
    # ``retry_backoff`` seconds (None: 10), doubling, capped at 10 minutes.
    retries: int = 0
    retry_on: tuple[str, ...] | None = None
    retry_memory: float | None = None
    retry_backoff: float | None = None

    def __post_init__(self) -> None:
        # A copy nobody else holds: the request stays what it was when it was made.
        object.__setattr__(self, "parameters", MappingProxyType(dict(self.parameters or {})))
        object.__setattr__(self, "tags", MappingProxyType(dict(self.tags or {})))
        object.__setattr__(self, "notify", tuple(self.notify))  # (a list, from JSON)
        object.__setattr__(self, "docker_args", tuple(self.docker_args))
        if self.retry_on is not None:  # (a list, from JSON)
            object.__setattr__(self, "retry_on", tuple(self.retry_on))

    def to_json(self) -> str:
        """The request for another process (a sweep's trial), as JSON; parameters and
        options must be JSON values."""
        import json
        from dataclasses import fields

        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["parameters"], data["tags"] = dict(self.parameters), dict(self.tags)
        config = self.backend_config
        data["backend_config"] = dict(config) if isinstance(config, Mapping) else config
        for name in ("backend_config", *_PATHS):
            if isinstance(data[name], Path):
                data[name] = str(data[name])
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> RunRequest:
        """The request ``to_json`` wrote."""
        import json

        data = json.loads(text)
        for name in _PATHS:
            if data.get(name) is not None:
                data[name] = Path(data[name])
        return cls(**data)

    def check(self) -> None:
        """Refuse what is wrong with the request itself, before anything is looked up."""
        if self.experiment_id is not None and self.experiment_name is not None:
            raise UserInputError("Give either an experiment id or an experiment name, not both.")
        if self.timeout is not None and not self.timeout > 0:
            raise UserInputError(f"The timeout must be a positive duration, got {self.timeout}.")
        if self.notify and not self.synchronous:
            raise UserInputError(
                "--notify is heard by the process that waits for the run, and a detached run "
                "has none: set REPRORUN_NOTIFY or tag the experiment reprorun.notify instead "
                "(a detached local run's supervisor honours both)."
            )
        if self.docker_args:
            from reprorun.envs.docker import run_options

            run_options(self.docker_args)  # a name that is no option is bad input
        if self.notify:
            from reprorun.backends.notify import parse_target

            for target in self.notify:
                parse_target(target)  # a target of no known kind is bad input


def parse_duration(text: str) -> float:
    """Seconds in a duration as ``--timeout`` takes it: a number with a unit, ``90s``,
    ``10m``, ``2h``, ``1d``, or several (``1h30m``); a bare number is seconds."""
    import re

    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    given = text.strip().lower()
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhd]?)", given)
    matched = re.fullmatch(r"(?:\d+(?:\.\d+)?\s*[smhd]?\s*)+", given)
    seconds = sum(float(number) * units[unit or "s"] for number, unit in parts)
    if not matched or (len(parts) > 1 and not all(unit for _, unit in parts)) or seconds <= 0:
        raise UserInputError(
            f"Not a duration: {text!r}. Give a number with a unit, e.g. 90s, 10m, 2h, 1d or "
            "1h30m (a bare number is seconds), greater than zero."
        )
    return seconds


def load_backend_config(config: BackendConfig) -> tuple[Mapping[str, Any], str]:
    """The backend's options and where they came from (for error messages)."""
    if config is None:
        return {}, ""
    if isinstance(config, Mapping):
        return config, ""
    path = Path(config)
    if not path.is_file():
        raise UserInputError(f"Backend config {path}: no such file.")
    import yaml  # JSON is YAML too

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UserInputError(f"Backend config {path} is not valid JSON/YAML: {exc}") from exc
    if data is None:
        return {}, str(path)
    if not isinstance(data, dict):
        raise UserInputError(f"Backend config {path} must hold a mapping of options.")
    return data, str(path)


def default_experiment_name() -> str:
    """The experiment of a request that names none."""
    from reprorun.config import experiment_name
    from reprorun.tracking.store import DEFAULT_EXPERIMENT_NAME

    return experiment_name() or DEFAULT_EXPERIMENT_NAME
