"""Tracking entities: plain frozen data, shaped like MLflow's so both sides map one to one."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def now_ms() -> int:
    return int(time.time() * 1000)


class RunStatus(str, Enum):
    RUNNING = "RUNNING"
    SCHEDULED = "SCHEDULED"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"

    @property
    def is_terminal(self) -> bool:
        return self in (RunStatus.FINISHED, RunStatus.FAILED, RunStatus.KILLED)


class ExitReason(str, Enum):
    """Why a run ended: one per ended run, in the ``reprorun.exitReason`` tag (issue 18).

    The exit code, the signal and the engine's own words are kept beside it
    (``reprorun.exitCode``, ``reprorun.exitSignal``, ``reprorun.exitDetail``)."""

    SUCCEEDED = "succeeded"  # exit 0
    CODE_ERROR = "code-error"  # the user's command failed (non-zero exit, an exception)
    OUT_OF_MEMORY = "out-of-memory"  # the OOM killer, a memory limit, the engine's OOM state
    TIMEOUT = "timeout"  # reprorun's --timeout, the engine's time limit
    PREEMPTED = "preempted"  # the engine took the node back (Slurm PREEMPTED, eviction)
    NODE_LOST = "node-lost"  # the node died or stopped answering (a lost heartbeat)
    CANCELLED = "cancelled"  # runs kill, Ctrl-C, SIGTERM
    LAUNCH_ERROR = "launch-error"  # environment, image, submission or source failed first

    @property
    def is_infrastructure(self) -> bool:
        """Not the code's fault: worth retrying by default (``--retry-on``'s default)."""
        return self in (ExitReason.PREEMPTED, ExitReason.NODE_LOST, ExitReason.LAUNCH_ERROR)


class ViewType(str, Enum):
    """Which lifecycle stages a search returns (MLflow's names)."""

    ACTIVE_ONLY = "ACTIVE_ONLY"
    DELETED_ONLY = "DELETED_ONLY"
    ALL = "ALL"

    @property
    def stages(self) -> tuple[str, ...]:
        return {"ACTIVE_ONLY": ("active",), "DELETED_ONLY": ("deleted",)}.get(
            self.value, ("active", "deleted")
        )


class Page(list[T], Generic[T]):
    """One page of search results; ``token`` fetches the next one (None: this is the last)."""

    def __init__(self, items: list[T], token: str | None = None):
        super().__init__(items)
        self.token = token


@dataclass(frozen=True)
class Experiment:
    experiment_id: str
    name: str
    artifact_location: str
    lifecycle_stage: str = "active"
    creation_time: int | None = None
    last_update_time: int | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "experiment_id": self.experiment_id,
            "name": self.name,
            "artifact_location": self.artifact_location,
            "lifecycle_stage": self.lifecycle_stage,
            "creation_time": self.creation_time,
            "last_update_time": self.last_update_time,
            "tags": dict(self.tags),
        }


@dataclass(frozen=True)
class Metric:
    """One metric point; ``model_id`` (with the dataset it was measured on) also attaches it
    to that logged model, as MLflow 3 does."""

    key: str
    value: float
    timestamp: int
    step: int = 0
    model_id: str | None = None
    dataset_name: str | None = None
    dataset_digest: str | None = None


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    experiment_id: str
    run_name: str
    status: RunStatus
    start_time: int
    end_time: int | None
    artifact_uri: str
    user_id: str = ""
    lifecycle_stage: str = "active"

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "run_name": self.run_name,
            "status": self.status.value,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "artifact_uri": self.artifact_uri,
        }


@dataclass(frozen=True)
class RunData:
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # latest value per key
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Run:
    info: RunInfo
    data: RunData

    def to_dict(self) -> dict[str, Any]:
        return {
            "info": self.info.to_dict(),
            "data": {
                "params": dict(self.data.params),
                "metrics": dict(self.data.metrics),
                "tags": dict(self.data.tags),
            },
        }


class LoggedModelStatus(str, Enum):
    PENDING = "PENDING"
    READY = "READY"
    FAILED = "FAILED"


@dataclass(frozen=True)
class LoggedModel:
    """A model logged by MLflow 3's ``log_model`` (or reprorun's): files plus its metadata."""

    model_id: str
    experiment_id: str
    name: str
    artifact_location: str
    creation_timestamp: int
    last_updated_timestamp: int
    status: LoggedModelStatus
    source_run_id: str | None = None
    model_type: str | None = None
    status_message: str | None = None
    lifecycle_stage: str = "active"
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: list[ModelMetric] = field(default_factory=list)


@dataclass(frozen=True)
class ModelMetric:
    """A metric point attached to a logged model: logged by run ``run_id`` with the model's
    id, on the dataset ``dataset_name``/``dataset_digest`` when given."""

    key: str
    value: float
    timestamp: int
    step: int
    run_id: str
    dataset_name: str | None = None
    dataset_digest: str | None = None


class SystemTags:
    """Tag names shared with MLflow, so its clients and UIs understand reprorun's runs."""

    SOURCE_NAME = "mlflow.source.name"
    SOURCE_TYPE = "mlflow.source.type"
    GIT_COMMIT = "mlflow.source.git.commit"
    GIT_REPO_URL = "mlflow.source.git.repoURL"
    GIT_BRANCH = "mlflow.source.git.branch"
    LEGACY_GIT_BRANCH = "mlflow.gitBranchName"
    LEGACY_GIT_REPO_URL = "mlflow.gitRepoURL"
    ENTRY_POINT = "mlflow.project.entryPoint"
    ENV = "mlflow.project.env"
    BACKEND = "mlflow.project.backend"
    USER = "mlflow.user"
    RUN_NAME = "mlflow.runName"
    LOGGED_MODELS = "mlflow.log-model.history"
    # reprorun's own
    GIT_DIRTY = "reprorun.git.dirty"
    GIT_DIFF = "reprorun.git.diff"  # artifact path of a dirty checkout's changes
    SOURCE_KIND = "reprorun.source.kind"  # local | git | archive
    SOURCE_URI = "reprorun.source.uri"
    SOURCE_VERSION = "reprorun.source.version"
    SOURCE_SUBDIRECTORY = "reprorun.source.subdirectory"
    SOURCE_ARCHIVE_SHA256 = "reprorun.source.archiveSha256"
    SOURCE_REF_CHECK = "reprorun.source.refCheck"  # remote | cache-offline | commit (git)
    SOURCE_REF_CHECK_WARNING = "reprorun.source.refCheckWarning"  # why the cache was trusted
    RERUN_OF = "reprorun.rerunOf"
    ENV_HASH = "reprorun.env.hash"  # the environment cache key
    ENV_PYTHON = "reprorun.env.python"
    ENV_LOCK = "reprorun.env.lock"  # artifact path of the exact package set
    ENV_IMAGE = "reprorun.env.image"
    RUN_PARAMS = "reprorun.runParams"  # JSON: the parameters the runner passed (for rerun)
    COMMAND = "reprorun.command"
    VERSION = "reprorun.version"
    PROJECT_DIR = "reprorun.project.dir"  # where the project was read from
    WORK_DIR = "reprorun.workDir"  # where the command ran, when that is a copy
    SUPERVISOR = "reprorun.supervisor"  # host:pid:start of the reprorun process owning the run
    EXIT_CODE = "reprorun.exitCode"
    EXIT_REASON = "reprorun.exitReason"  # an ExitReason value
    EXIT_SIGNAL = "reprorun.exitSignal"  # the signal's name (SIGKILL) when a signal ended it
    EXIT_DETAIL = "reprorun.exitDetail"  # the engine's own words (Slurm state, OOMKilled, ...)
    ATTEMPT = "reprorun.attempt"  # 1, 2, ...: retries of one run are runs of their own
    ATTEMPT_OF = "reprorun.attemptOf"  # the first attempt's run id (on attempts 2, 3, ...)
    HEARTBEAT = "reprorun.heartbeat"  # ms since the epoch of a remote job's last sign of life
    # A remote job's command ended with this exit status (as a shell gives it), said by its
    # heartbeat wrapper once the log is stored: its silence from then on is no lost node.
    COMMAND_EXIT = "reprorun.commandExit"
    DOCKER_ARGS = "reprorun.docker.args"  # --docker-args as given (a JSON list), for reruns
    PEAK_MEMORY = "reprorun.peakMemoryMB"  # the run's process tree's peak resident memory
    NOTIFY_ERROR = "reprorun.notifyError"  # a notification that could not be delivered
    LOG_ARTIFACT = "reprorun.log"
