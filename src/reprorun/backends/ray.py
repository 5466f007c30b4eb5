"""Run a project as a job of a Ray cluster, through the Jobs REST API of its dashboard.

The client is reprorun's own (tracking/http.py) speaking Ray's documented REST API
(``/api/jobs/``, ``/api/packages/``), not the ``ray`` package: that package is ~100 MB, and its
version must match the cluster's, while the REST API is the stable interface Ray's own SDK uses.

A submission ships the project's tree as the job's ``working_dir`` (a zip uploaded to the
cluster, as Ray's SDK does), asks Ray to build the run's environment on the worker from the
lock (``runtime_env.pip``), and names the job ``reprorun-<run id>``, so anyone can find it.
reprorun's in-run client (standard library only) goes with every job as a ``py_modules``
package, first on the job's PYTHONPATH: ``import reprorun`` works whatever Python the
cluster's nodes have.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shlex
import shutil
import tempfile
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl, quote, urlparse

from reprorun.backends.base import (
    JOB_ID_TAG,
    Backend,
    LaunchSpec,
    SubmittedRun,
    parse_options,
    tracking_options,
)
from reprorun.backends.heartbeat import interval as heartbeat_interval
from reprorun.backends.heartbeat import wrapped
from reprorun.backends.job import STOP_REASON_TAG, STOP_TAG, JobState, RemoteJob
from reprorun.envs.lock import read_lock_lines
from reprorun.errors import ExecutionError, UserInputError
from reprorun.tracking.entities import ExitReason, Run, RunStatus
from reprorun.tracking.http import HttpClient, Retries
from reprorun.tracking.store.base import TrackingStore

JOB_PREFIX = "reprorun-"
TIMEOUT_KEY = "reprorun.timeout_seconds"  # the job's metadata: --timeout, in seconds
_TIMEOUT = 30.0  # seconds for one API call
_UPLOAD_TIMEOUT = 600.0  # the project's zip can be large
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so the same tree gives the same package name

_EXCEPTION_LINE = re.compile(r"^[\w.]+(Error|Exception): ")

# Ray's job statuses (ray.job_submission.JobStatus) in reprorun's terms.
STATUSES = {
    "PENDING": RunStatus.SCHEDULED,  # waiting for resources or building the runtime_env
    "RUNNING": RunStatus.RUNNING,
    "SUCCEEDED": RunStatus.FINISHED,
    "FAILED": RunStatus.FAILED,
    "STOPPED": RunStatus.KILLED,
}


@dataclass(frozen=True)
class RayBackendConfig:
    """Options of the ray backend (``--backend-config``)."""

    # The dashboard's HTTP address (Jobs API), e.g. http://head:8265; default $RAY_ADDRESS.
    address: str | None = None
    # Resources reserved for the command (Ray's entrypoint_num_cpus, ...); None: Ray's default.
    num_cpus: float | None = None
    num_gpus: float | None = None
    memory: int | None = None  # bytes
    resources: dict[str, float] = field(default_factory=dict)  # custom resources
    tracking_uri: str | None = None
    env_vars: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("num_cpus", "num_gpus", "memory"):
            value = getattr(self, key)
            if value is not None and (not math.isfinite(value) or value < 0):
                raise UserInputError(
                    f"Backend config: option {key!r} of the ray backend must be >= 0, "
                    f"got {value!r}."
                )
        for key, amount in self.resources.items():
            if not math.isfinite(amount) or amount < 0:
                raise UserInputError(
                    f"Backend config: resources[{key!r}] of the ray backend must be >= 0, "
                    f"got {amount!r}."
                )


def create(config: Mapping[str, Any], source: str) -> Backend:
    options = parse_options("ray", RayBackendConfig, config, source)
    tracking_options(options.tracking_uri, options.env_vars)
    if options.address:
        address = jobs_address(options.address, "option 'address'")
    elif os.environ.get("RAY_ADDRESS"):
        address = jobs_address(os.environ["RAY_ADDRESS"], "RAY_ADDRESS")
    else:
        raise UserInputError(
            "The ray backend needs the address of the cluster's dashboard (its Jobs API), "
            "e.g. http://head-node:8265: set 'address' in the backend config or the "
            "RAY_ADDRESS environment variable."
        )
    # The resolved address is kept in the run's config tag: `reprorun runs status` in
    # another shell finds the job without RAY_ADDRESS.
    return RayBackend(replace(options, address=address))


def jobs_address(given: str, where: str) -> str:
    """The Jobs API's base URL from an address as Ray's CLI accepts it (host:port = http)."""
    address = given.strip().rstrip("/")
    if "://" not in address:
        address = f"http://{address}"
    parsed = urlparse(address)
    if parsed.scheme not in ("http", "https") or given.strip() in ("auto", "local"):
        raise UserInputError(
            f"{where} is {given!r}: the ray backend submits through the Jobs API of the "
            "cluster's dashboard, so it needs its HTTP address, e.g. http://head-node:8265 "
            "(not a ray:// client address, 'auto', or the GCS port 6379)."
        )
    return address


class RayBackend(Backend):
    name = "ray"
    remote = True
    shares_filesystem = None  # only when the cluster is this machine

    def __init__(self, config: RayBackendConfig):
        self.config = config
        self.tracking_uri = config.tracking_uri
        self.api = JobsApi(config.address or "")

    def check_env(self, env_manager: str) -> None:
        super().check_env(env_manager)
        if env_manager == "conda":
            raise UserInputError(
                "The ray backend rebuilds the run's environment on the workers with pip, "
                "from its lock; a conda lock is not a pip one. Use --env-manager uv or "
                "virtualenv (python_env.yaml), or local (the workers' own Python)."
            )

    def _submit(self, spec: LaunchSpec) -> SubmittedRun:
        from reprorun.envs.client import client_root

        requirements = lock_requirements(spec.lock_text)
        runtime_env: dict[str, Any] = {
            "working_dir": self.api.upload_tree(spec.root),
            # `import reprorun` in the job: the runner's own client (a folder holding the
            # package, uploaded once per version), which Ray puts first on PYTHONPATH.
            "py_modules": [self.api.upload_tree(client_root(), "reprorun's in-run client")],
            # The run's own variables win: they say which run the code logs into.
            "env_vars": {**self.config.env_vars, **spec.job_env},
        }
        if requirements:
            runtime_env["pip"] = requirements
        submission_id = JOB_PREFIX + spec.run_id
        self.api.call("POST", "/api/jobs/", self.job_request(spec, submission_id, runtime_env))
        # PENDING until Ray has the resources: the first poll says RUNNING once it runs.
        spec.store.update_run(
            spec.run_id, status=RunStatus.SCHEDULED, only_if_status=RunStatus.RUNNING
        )
        return self._job(spec.run_id, submission_id, spec.store, spec.artifact_uri)

    def job_request(
        self, spec: LaunchSpec, submission_id: str, runtime_env: dict[str, Any]
    ) -> dict[str, Any]:
        """The body of ``POST /api/jobs/``."""
        body: dict[str, Any] = {
            "entrypoint": entrypoint(spec.command, spec.subdirectory, heartbeat_interval()),
            "submission_id": submission_id,
            "runtime_env": runtime_env,
            "metadata": {
                "reprorun.run_id": spec.run_id,
                "reprorun.experiment_id": spec.experiment_id,
            },
        }
        if spec.timeout_seconds:
            # Ray has no time limit for a job: whoever follows it stops it (RayJob._state).
            body["metadata"][TIMEOUT_KEY] = f"{spec.timeout_seconds:g}"
        c = self.config
        for key, value in (
            ("entrypoint_num_cpus", c.num_cpus),
            ("entrypoint_num_gpus", c.num_gpus),
            ("entrypoint_memory", c.memory),
            ("entrypoint_resources", c.resources or None),
        ):
            if value is not None:
                body[key] = value
        return body

    def attach(self, run: Run, store: TrackingStore) -> SubmittedRun:
        job_id = run.data.tags.get(JOB_ID_TAG)
        if not job_id:
            raise UserInputError(
                f"Run {run.info.run_id} has no Ray job (no tag {JOB_ID_TAG}): its submission "
                "failed before Ray accepted it."
            )
        return self._job(run.info.run_id, job_id, store, run.info.artifact_uri)

    def _job(self, run_id: str, job_id: str, store: TrackingStore, artifact_uri: str) -> RayJob:
        # The job's log is stored in the run's artifacts through this process's store.
        store_uri = getattr(store, "uri", None)
        tracking_uri = store_uri if isinstance(store_uri, str) else None
        return RayJob(self.api, run_id, job_id, store, artifact_uri, tracking_uri)


class RayJob(RemoteJob):
    backend = "ray"
    # Ray stops a running job with SIGTERM, then SIGKILL after 3 s (RAY_JOB_STOP_WAIT_TIME_S).
    # A PENDING job is stopped only once it starts: no use waiting a minute for that.
    stop_timeout_seconds = 15.0

    def __init__(
        self,
        api: JobsApi,
        run_id: str,
        job_id: str,
        store: TrackingStore,
        artifact_uri: str,
        tracking_uri: str | None,
    ):
        super().__init__(run_id, job_id, store, artifact_uri, tracking_uri)
        self.api = api
        self.job_url = f"{api.address}/#/jobs/{quote(job_id)}"  # the dashboard's job page

    def _path(self, suffix: str = "") -> str:
        return f"/api/jobs/{self.job_id}{suffix}"  # the client quotes it

    def _state(self) -> JobState:
        status, data = self.api.request("GET", self._path())
        if status == 404:
            return JobState(
                RunStatus.FAILED,
                f"Ray at {self.api.address} no longer knows job {self.job_id} (the cluster "
                "was restarted or the job was deleted); its outcome is unknown.",
                exit_reason=ExitReason.NODE_LOST,
                detail=f"HTTP 404 for job {self.job_id}",
            )
        info = self.api.json_of(status, data, f"job {self.job_id}")
        state = job_state(info)
        over = overtime(info, time.time())
        if over is not None and not state.status.is_terminal:
            # Said first: whoever polls next reads the job's STOPPED as this stop.
            self.store.set_tags(
                self.run_id, {STOP_TAG: over, STOP_REASON_TAG: ExitReason.TIMEOUT.value}
            )
            self._stop()
            return JobState(
                RunStatus.FAILED,
                over,
                exit_reason=ExitReason.TIMEOUT,
                detail=f"{info.get('status')}; {over}",
            )
        return state

    def _read_log(self) -> bytes:
        status, data = self.api.request("GET", self._path("/logs"))
        logs = self.api.json_of(status, data, f"the log of job {self.job_id}").get("logs")
        return str(logs or "").encode("utf-8")

    def _stop(self) -> None:
        status, data = self.api.request("POST", self._path("/stop"))
        if status != 404:  # an unknown job: the next look at its state says so
            self.api.json_of(status, data, f"stopping job {self.job_id}")


def job_state(info: Mapping[str, Any]) -> JobState:
    """Ray's job details (``GET /api/jobs/<id>``) as reprorun's JobState, with why it ended
    (``exit_reason``) and Ray's own words."""
    ray_status = str(info.get("status"))
    status = STATUSES.get(ray_status)
    if status is None:
        raise ExecutionError(
            f"Ray reported status {ray_status!r} for job {info.get('submission_id')}, which "
            f"this reprorun does not know (known: {', '.join(STATUSES)})."
        )
    if not status.is_terminal:
        return JobState(status)
    exit_code = info.get("driver_exit_code")
    code = exit_code if isinstance(exit_code, int) else None
    why, signal = _exit_reason(info, code)
    return JobState(status, _reason(info), code, why, _words(info), signal)


# Ray's words for a worker its memory monitor killed (ray.exceptions.OutOfMemoryError, and
# the raylet's "... worker(s) were killed due to the node running low on memory").
_RAY_OOM = ("OutOfMemoryError", "running low on memory")
# error_type of a job whose command never ran: its environment, or its supervisor actor.
_LAUNCH = {
    "RUNTIME_ENV_SETUP_FAILURE",
    "JOB_SUPERVISOR_ACTOR_START_TIMEOUT",
    "JOB_SUPERVISOR_ACTOR_START_FAILURE",
    "JOB_SUPERVISOR_ACTOR_UNSCHEDULABLE",
    "JOB_ENTRYPOINT_COMMAND_START_ERROR",
}
_STOP_SIGNALS = {1, 2, 15}  # SIGHUP, SIGINT, SIGTERM: someone stopped the driver


def _exit_reason(info: Mapping[str, Any], code: int | None) -> tuple[ExitReason, int | None]:
    """Why an ended Ray job ended, and the signal that ended its driver (a negative return
    code, or the shell's 128+N)."""
    status = str(info.get("status"))
    if status == "SUCCEEDED":
        return ExitReason.SUCCEEDED, None
    if status == "STOPPED":
        return ExitReason.CANCELLED, None
    signal = -code if code is not None and code < 0 else None
    if code is not None and 128 < code < 160:
        signal = code - 128
    error_type = str(info.get("error_type") or "")
    message = str(info.get("message") or "")
    if any(words in message for words in _RAY_OOM):
        return ExitReason.OUT_OF_MEMORY, signal
    if error_type in _LAUNCH:
        return ExitReason.LAUNCH_ERROR, signal
    if error_type.startswith("JOB_SUPERVISOR_ACTOR"):
        # The actor that runs the driver died with its worker or its node.
        return ExitReason.NODE_LOST, signal
    if signal in _STOP_SIGNALS:
        return ExitReason.CANCELLED, signal  # stopped from outside Ray (kill, an admin)
    return ExitReason.CODE_ERROR, signal


def _words(info: Mapping[str, Any]) -> str:
    """Ray's own words for the end: status, error type and message, without the log's tail
    (the run keeps the whole log)."""
    message = str(info.get("message") or "").split(", last available logs", 1)[0].strip()
    parts = [str(info.get("status")), str(info.get("error_type") or ""), message[:1000]]
    return ": ".join(part for part in parts if part)


def overtime(info: Mapping[str, Any], now: float) -> str | None:
    """What to say when a job asked to stop after ``--timeout`` (its metadata) has run
    longer, counting from its submission (Ray's start_time); None otherwise."""
    metadata = info.get("metadata") or {}
    try:
        limit = float(metadata.get(TIMEOUT_KEY) or 0)
        started = float(info.get("start_time") or 0) / 1000
    except (TypeError, ValueError):
        return None
    if not limit or not started or now - started <= limit:
        return None
    return (
        f"stopped by reprorun: --timeout {limit:g} s passed (Ray has no time limit for a "
        "job; reprorun stops it when it follows the job past that time)"
    )


def _reason(info: Mapping[str, Any]) -> str | None:
    message = str(info.get("message") or "").strip()
    error_type = info.get("error_type")
    if error_type == "JOB_ENTRYPOINT_COMMAND_ERROR":
        # Ray appends the log's tail, which the run keeps whole as logs/run.log.
        return message.split(", last available logs", 1)[0] or None
    if "Traceback (most recent call last)" in message:
        # e.g. a pip install that failed: Ray's words, then the tool's own last lines.
        head, _, rest = message.partition("Traceback (most recent call last)")
        message = head.strip() + "\n...\n" + "\n".join(rest.strip().splitlines()[-15:])
    if error_type:
        return f"{error_type}: {message}"
    return message or None


def entrypoint(command: str, subdirectory: str, heartbeat: float | None = None) -> str:
    """The job's shell command: Ray runs it with /bin/sh in the shipped tree; the project's
    command is bash syntax, run in its subdirectory, under the heartbeat wrapper when
    ``heartbeat`` (seconds between beats) is given."""
    run = (
        f"exec bash -c {shlex.quote(command)}" if heartbeat is None else wrapped(command, heartbeat)
    )
    return f"cd {shlex.quote(subdirectory)} && {run}" if subdirectory else run


def lock_requirements(lock_text: str | None) -> list[str]:
    """The lock's requirement lines for ``runtime_env.pip``; refuses packages installed from
    this machine's files, which no worker can install."""
    lock = read_lock_lines(lock_text)
    if lock.local:
        raise ExecutionError(
            "The environment's lock installs packages from this machine's files, which the "
            f"Ray workers cannot install: {'; '.join(lock.local)}. Publish them to an index the "
            "cluster reaches (or a git URL), pin that in the project's environment, and rerun."
        )
    return lock.pip


class JobsApi:
    """The few calls of Ray's Jobs REST API that reprorun needs."""

    def __init__(self, address: str):
        self.address = address
        auth = _auth_header()
        # Not retried: Ray's answers are judged by the caller, a dead address fails at once.
        options: dict[str, Any] = {
            "auth": auth,
            "retries": Retries(delays=()),
            "unreachable": self._unreachable,
            "keep_alive": False,
        }
        self._http = HttpClient(address, timeout=_TIMEOUT, **options)
        self._uploads = HttpClient(address, timeout=_UPLOAD_TIMEOUT, **options)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | IO[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        upload: bool = False,
    ) -> tuple[int, bytes]:
        """One call: (HTTP status, body). An address that does not answer raises
        ExecutionError; HTTP errors are returned for the caller to judge. ``upload``: a
        large body, given more time."""
        path, _, query = path.partition("?")
        client = self._uploads if upload else self._http
        response = client.request(
            method, path, query=dict(parse_qsl(query)), body=body, headers=headers
        )
        return int(response.status), bytes(response.data)  # type: ignore[attr-defined]

    def _unreachable(self, what: str, exc: Exception) -> ExecutionError:
        # HTTPException: something that is not an HTTP server answered (a GCS port)
        reason = str(exc) if isinstance(exc, OSError) and str(exc) else repr(exc)
        return ExecutionError(
            f"Could not reach the Ray Jobs API at {self.address} ({what}: "
            f"{reason}). Check that the cluster is up (`ray status` on its head node) and "
            f"that {self.address} opens the Ray dashboard (the dashboard's port, 8265 by "
            "default, not the GCS port 6379 or the ray:// client port 10001)."
        )

    def call(self, method: str, path: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        data = json.dumps(payload).encode("utf-8")
        status, answer = self.request(
            method, path, data, headers={"Content-Type": "application/json"}
        )
        return self.json_of(status, answer, f"{method} {path}")

    def json_of(self, status: int, data: bytes, what: str) -> dict[str, Any]:
        if status >= 400:
            raise self.error(status, data, what)
        try:
            parsed = json.loads(data or b"{}")
        except ValueError:
            raise ExecutionError(
                f"{self.address} answered {what} with something other than JSON: is it a Ray "
                f"dashboard? It said: {data[:200]!r}"
            ) from None
        return parsed if isinstance(parsed, dict) else {}

    def error(self, status: int, data: bytes, what: str) -> ExecutionError:
        # Ray answers errors with plain text, often Python tracebacks (nested, when the head
        # relays its agent's): the last exception line says what went wrong.
        lines = [line.strip() for line in data.decode("utf-8", "replace").splitlines()]
        errors = [line for line in lines if _EXCEPTION_LINE.match(line)]
        said = (errors or [line for line in lines if line] or ["(no details)"])[-1][:1000]
        hint = ""
        if status in (401, 403):
            hint = " The cluster asks for a token: set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH)."
        return ExecutionError(
            f"Ray at {self.address} refused {what}: HTTP {status}: {said.rstrip('.')}.{hint}"
        )

    def upload_tree(self, root: Path, what: str = "the project's files") -> str:
        """Ship ``root`` (without .git and Python's caches) as a content-addressed package;
        returns its URI for ``runtime_env.working_dir`` or ``py_modules``. A package the
        cluster already has is not sent again."""
        with tempfile.TemporaryFile(prefix="reprorun-ray-") as package:
            zip_tree(root, package)
            size = package.tell()
            package.seek(0)
            digest = hashlib.sha1(usedforsecurity=False)
            while chunk := package.read(1 << 20):
                digest.update(chunk)
            name = f"_ray_pkg_{digest.hexdigest()}.zip"
            path = f"/api/packages/gcs/{name}"
            status, data = self.request("GET", path)
            if status == 404:
                package.seek(0)
                status, data = self.request(
                    "PUT",
                    path,
                    package,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Length": str(size),
                    },
                    upload=True,
                )
            if status >= 400:
                raise self.error(status, data, f"{what} ({root}, {size} bytes zipped)")
        return f"gcs://{name}"


def zip_tree(root: Path, out: IO[bytes]) -> None:
    """Zip ``root``'s files (not .git, nor Python's caches, which the job's Python makes
    anew) into ``out``, in a stable order with fixed dates and the files' modes (Ray restores
    them: scripts stay executable)."""
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in (".git", "__pycache__"))
            here = Path(folder)
            rel = here.relative_to(root)
            if not dirs and not files and rel.parts:
                archive.writestr(zipfile.ZipInfo(f"{rel.as_posix()}/", _ZIP_TIME), b"")
            for name in sorted(files):
                path = here / name
                if name == ".git" or not path.is_file():  # a submodule's link, a dead link
                    continue
                stat = path.stat()
                info = zipfile.ZipInfo((rel / name).as_posix(), _ZIP_TIME)
                info.external_attr = (stat.st_mode & 0xFFFF) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                with (
                    path.open("rb") as src,
                    archive.open(info, "w", force_zip64=stat.st_size > 1 << 30) as dst,
                ):
                    shutil.copyfileobj(src, dst, 1 << 20)


def _auth_header() -> dict[str, str]:
    """A cluster with token authentication (RAY_AUTH_MODE=token): the token from Ray's own
    variables, never from the backend config (which is stored with the run)."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    token_path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if not token and token_path:
        try:
            token = Path(token_path).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UserInputError(f"RAY_AUTH_TOKEN_PATH: cannot read {token_path}: {exc}") from None
    return {"Authorization": f"Bearer {token}"} if token else {}
