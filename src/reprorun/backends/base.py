"""The backend interface: submit a prepared command, get back a handle on the running job.

A backend is built from its options (``--backend-config``), checked before anything is
submitted. ``submit`` starts the job; ``attach`` rebuilds the handle of a job submitted by
another process from the run's tags, which is how ``reprorun runs status|logs|kill`` work for
every backend.
"""

from __future__ import annotations

import abc
import dataclasses
import difflib
import json
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from reprorun.errors import UserInputError
from reprorun.tracking.entities import Run, RunStatus
from reprorun.tracking.store.base import TrackingStore

Echo = Callable[[bytes], None]

# Tags every submitted run carries, so any process can find its job again.
JOB_ID_TAG = "reprorun.backend.jobId"
JOB_URL_TAG = "reprorun.backend.jobUrl"
CONFIG_TAG = "reprorun.backend.config"  # the validated options, JSON (never credentials)
FAILURE_TAG = "reprorun.failureReason"  # why the run FAILED or was KILLED, when not its exit code
LOG_ERROR_TAG = "reprorun.logError"  # the run's log could not be (fully) stored, and why


@dataclass(frozen=True)
class LaunchSpec:
    """Everything a backend needs; nothing about the CLI."""

    run_id: str
    command: str  # shell syntax by contract; every substituted value is already quoted
    cwd: Path
    env: Mapping[str, str]  # the whole environment of a local child
    store: TrackingStore
    artifact_dir: Path
    log_path: str = "logs/run.log"  # relative to the run's artifacts
    echo: Echo | None = None  # receives the child's output as it arrives
    argv: list[str] | None = None  # run this instead of `bash -c command` (containers)
    stop_argv: list[str] | None = None  # run this too when the run is cancelled
    container: bool = False  # argv runs a docker_env container (named after the run)
    on_finish: Callable[[], None] | None = None  # once the run has ended (release resources)
    # For jobs that run elsewhere (remote backends):
    experiment_id: str = "0"
    artifact_uri: str = ""  # the run's artifact location (the job's log is stored there)
    tracking_uri: str = ""  # the tracking URI the job logs into, as the cluster reaches it
    job_env: Mapping[str, str] = field(default_factory=dict)  # only what the job must get
    source_root: Path | None = None  # the project's tree to ship (cwd is inside it)
    path_prefix: tuple[str, ...] = ()  # the built environment's folders for PATH
    lock_text: str | None = None  # the environment's exact package set
    python_version: str | None = None
    docker_image: str | None = None  # docker_env projects: the image to run in
    project_name: str | None = None  # the MLproject's name (names a Kubernetes job)
    # The local backend's queue: wait while this many local runs (asking the same) run.
    max_parallel: int | None = None
    # --timeout: the command is stopped after this many seconds of running (exit reason
    # ``timeout``); remote backends map it to their engine's own limit.
    timeout_seconds: float | None = None
    interrupted: Callable[[], None] | None = None  # raises if the submitter was told to stop
    # The calling thread waits for the command to end (a synchronous run, a supervisor): the
    # command is killed if that thread's process dies (the parent-death signal).
    tied_to_caller: bool = False
    # Log system/* metrics of the machine and the command's process tree (every backend).
    system_metrics: bool = True

    @property
    def root(self) -> Path:
        return self.source_root or self.cwd

    @property
    def subdirectory(self) -> str:
        """Where the command runs, relative to the shipped tree ("" for its top)."""
        rel = self.cwd.relative_to(self.root).as_posix()
        return "" if rel == "." else rel

    # Not in the JSON: the live objects of the process that runs the command, and whether
    # that process waits for it; ``from_json`` takes them from that process.
    _LIVE = ("store", "echo", "on_finish", "interrupted", "tied_to_caller")
    _PATHS = ("cwd", "artifact_dir", "source_root")

    def to_json(self) -> str:
        """The spec for another process (a detached run's supervisor), as JSON."""
        import json
        from dataclasses import fields

        data: dict[str, Any] = {}
        for spec_field in fields(self):
            value = getattr(self, spec_field.name)
            if spec_field.name in self._LIVE:
                continue
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            data[spec_field.name] = value
        return json.dumps(data)

    @classmethod
    def from_json(
        cls,
        text: str,
        *,
        store: TrackingStore,
        echo: Echo | None = None,
        on_finish: Callable[[], None] | None = None,
        interrupted: Callable[[], None] | None = None,
        tied_to_caller: bool = False,
    ) -> LaunchSpec:
        """The spec ``to_json`` wrote, with this process's store and callbacks."""
        import json

        data = json.loads(text)
        for name in cls._PATHS:
            if data.get(name) is not None:
                data[name] = Path(data[name])
        data["path_prefix"] = tuple(data.get("path_prefix", ()))
        return cls(
            **data,
            store=store,
            echo=echo,
            on_finish=on_finish,
            interrupted=interrupted,
            tied_to_caller=tied_to_caller,
        )


class SubmittedRun(abc.ABC):
    """A run handed to a backend (MLflow's SubmittedRun: wait, get_status, cancel)."""

    backend: str = "local"
    job_url: str | None = None  # where the engine shows the job, when it has a page
    # Remote jobs (issue 18): the waiting process's --notify targets, told (with the
    # setting's and the experiment's) by whichever handle writes the run's end; and whether
    # this handle did (else the process that did told its own targets).
    notify_targets: tuple[str, ...] = ()
    ended_here: bool = False

    @property
    @abc.abstractmethod
    def run_id(self) -> str: ...

    @property
    def job_id(self) -> str:
        """The backend's own id of the job (a process id, a Slurm job id, ...)."""
        return self.run_id

    @abc.abstractmethod
    def wait(self) -> bool:
        """Block until the run ends; True when it is stored FINISHED."""

    @abc.abstractmethod
    def get_status(self) -> RunStatus:
        """RUNNING (or SCHEDULED) while the job runs, even if its code has ended the run;
        once the job has ended, the run's stored status (``ends_over``)."""

    @abc.abstractmethod
    def cancel(self, force: bool = False) -> None:
        """Stop the run (its whole process tree) and mark it KILLED; ``force``: at once."""

    def logs(self, start: int = 0) -> bytes:
        """The job's output so far (all of it once the run has ended), from byte ``start``."""
        return b""

    def abandon(self) -> None:
        """The run was closed without its engine (a lost heartbeat): stop following the job,
        and ask the engine to stop it where it can. Nothing to do for local runs."""
        return None


class Backend(abc.ABC):
    name: str
    # The job runs outside this process tree, maybe on another machine: the run is tagged
    # with its job id, and its status follows the job's.
    remote: bool = False
    # Whether the job can see this machine's files (a SQLite store, the built environment).
    # None: only if the cluster is this machine or shares its file system.
    shares_filesystem: bool | None = True
    # The tracking URI the job logs into, when the config sets one.
    tracking_uri: str | None = None

    def submit(self, spec: LaunchSpec) -> SubmittedRun:
        return self._submit(spec)

    @abc.abstractmethod
    def _submit(self, spec: LaunchSpec) -> SubmittedRun: ...

    def check_env(self, env_manager: str) -> None:
        """Refuse, before the run exists, an environment this backend cannot provide."""
        if self.remote and env_manager == "docker":
            raise UserInputError(
                f"The {self.name} backend does not run docker_env projects (they run on the "
                "local and kubernetes backends); use --env-manager uv or local."
            )

    def attach(self, run: Run, store: TrackingStore) -> SubmittedRun:
        """The handle of ``run``'s job, rebuilt from its tags (for another process)."""
        raise UserInputError(f"The {self.name} backend cannot follow runs it did not start.")

    def options_json(self) -> str:
        """The options to keep on the run (``CONFIG_TAG``), so ``attach`` can rebuild us."""
        config = getattr(self, "config", None)
        if config is None or not dataclasses.is_dataclass(config):
            return "{}"
        # Under their names in the config file, which is what parse_options reads back.
        return json.dumps(
            {
                f.metadata.get("key", f.name): getattr(config, f.name)
                for f in dataclasses.fields(config)
            },
            default=str,
        )


def ends_over(current: RunStatus, ending: RunStatus) -> bool:
    """Whether a job that ended ``ending`` replaces the run's ``current`` status. A run not
    ended yet takes it; a failed or killed job fails a run its code already ended FINISHED
    (mlflow's start_run context does that: a failure after it is still a failure); a success
    never overrides what the code chose, and nothing overrides a run ended FAILED or KILLED
    (runs kill, the code's ``end_run("FAILED")`` after a failed quality gate). Every backend
    then reports the stored status (``SubmittedRun.get_status`` once the run has ended), so
    `reprorun run` prints and exits by what the run says."""
    if not current.is_terminal:
        return True
    return current is RunStatus.FINISHED and ending is not RunStatus.FINISHED


def follow(submitted: SubmittedRun, write: Echo, poll_seconds: float = 1.0) -> RunStatus:
    """Write the run's log as it grows, until the run ends; returns its final status."""
    import time

    sent = 0
    while True:
        status = submitted.get_status()  # before the log: the last read then has it all
        text = submitted.logs(sent)
        if text:
            write(text)
            sent += len(text)
        if status.is_terminal:
            return status
        time.sleep(poll_seconds)


# --- options -------------------------------------------------------------------------------

T = TypeVar("T")


def parse_options(backend: str, cls: type[T], data: Mapping[str, Any], source: str = "") -> T:
    """Build the options dataclass ``cls`` from ``data``, rejecting unknown keys and values of
    the wrong type, naming the key. A field's ``metadata["key"]`` is its name in the file
    (MLflow's kubernetes config uses ``kube-context``)."""
    where = f"Backend config {source}: " if source else "Backend config: "
    hints = typing.get_type_hints(cls)
    by_key = {f.metadata.get("key", f.name): f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if not isinstance(data, Mapping):
        raise UserInputError(f"{where}expected a mapping of options, got {type(data).__name__}.")
    values: dict[str, Any] = {}
    for key, value in data.items():
        f = by_key.get(str(key))
        if f is None:
            close = difflib.get_close_matches(str(key), list(by_key), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UserInputError(
                f"{where}{key!r} is not an option of the {backend} backend.{hint} "
                f"Valid options: {', '.join(sorted(by_key))}."
            )
        expected = hints[f.name]
        if not _matches(value, expected):
            raise UserInputError(
                f"{where}option {key!r} of the {backend} backend must be "
                f"{_describe(expected)}, got {value!r} ({type(value).__name__})."
            )
        values[f.name] = value
    missing = [
        key
        for key, f in by_key.items()
        if f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and f.name not in values
    ]
    if missing:
        raise UserInputError(
            f"{where}the {backend} backend needs option(s) {', '.join(map(repr, missing))}."
        )
    return cls(**values)


def _matches(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp) or (Any, Any)
        return isinstance(value, dict) and all(
            _matches(k, key_tp) and _matches(v, value_tp) for k, v in value.items()
        )
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    return isinstance(value, tp)


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        parts = [_describe(a) for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(parts)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    plural = {str: "strings", int: "integers", float: "numbers", bool: "booleans"}
    if origin is list:
        return "a list of " + plural.get(typing.get_args(tp)[0], "values")
    if origin is dict:
        return "a mapping of names to " + plural.get(typing.get_args(tp)[1], "values")
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    return names.get(tp, "a value" if tp is Any else getattr(tp, "__name__", str(tp)))


@dataclass(frozen=True)
class LocalBackendConfig:
    """Options of the local backend (``--backend-config``)."""

    stop_grace_seconds: float = 10.0  # SIGTERM first, SIGKILL after this long

    def __post_init__(self) -> None:
        if not math.isfinite(self.stop_grace_seconds) or self.stop_grace_seconds < 0:
            raise UserInputError(
                "Local backend option stop_grace_seconds must be a number >= 0, "
                f"got {self.stop_grace_seconds!r}."
            )


def tracking_options(tracking_uri: str | None, env_vars: Mapping[str, str]) -> None:
    """Checks shared by the remote backends' common options."""
    if tracking_uri is not None and "://" not in tracking_uri:
        raise UserInputError(
            f"Backend config: tracking_uri must be a URI such as http://host:5000, "
            f"got {tracking_uri!r}."
        )
    for key in env_vars:
        if not key or "=" in key:
            raise UserInputError(f"Backend config: env_vars has an invalid name {key!r}.")
