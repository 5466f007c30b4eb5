"""A launched run's life, shared by the submitting process and a detached run's supervisor:
stop signals (``Stopper``), what happens once the command has ended (``Finish``), ending a run
whose command could not start, and the variables that point the run's code at its run.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from reprorun._utils import handling_signals, process_identity
from reprorun.backends.base import FAILURE_TAG, Echo, SubmittedRun
from reprorun.config import TrackingTarget
from reprorun.envs.commands import command_shim, mlflow_bin_env
from reprorun.errors import RunInterrupted, RunNotRecorded
from reprorun.tracking.entities import RunStatus, now_ms
from reprorun.tracking.store.base import TrackingStore


class Finish:
    """What happens when the run's command has ended (or could not start): upload staged
    artifacts to a remote server, stop the per-run MLflow endpoint, release the environment.
    Runs once; a failed upload is recorded on the run instead of hiding its status."""

    def __init__(
        self,
        store: Any,
        run_id: str,
        release: Callable[[], None] | None,
        env_dir: Path | None = None,
    ):
        self.store = store
        self.run_id = run_id
        self.release = release
        self.env_dir = env_dir  # a detached supervisor holds the environment itself
        self.sidecar: Any = None
        self.staged: tuple[Path, str, str] | None = None
        self.done = False

    def upload(self, folder: Path, artifact_uri: str, tracking_uri: str) -> None:
        self.staged = (folder, artifact_uri, tracking_uri)

    def mlflow_endpoint(self, target: TrackingTarget, *, in_container: bool) -> str | None:
        """The MLflow tracking URI the child gets: the server itself when remote; else a
        loopback endpoint for this run (not reachable from a container, so none there)."""
        if target.is_remote:
            return target.uri
        if in_container:
            return None
        from reprorun.backends.status import refresh
        from reprorun.tracking.endpoint.sidecar import Sidecar

        store = self.store  # the runs its code reads are refreshed as the server's are
        self.sidecar = Sidecar(store, self.run_id, lambda run: refresh(store, run, engines=False))
        return str(self.sidecar.url)

    @property
    def mlflow_token(self) -> str | None:
        """The secret the run's own endpoint requires (None without one)."""
        return None if self.sidecar is None else str(self.sidecar.token)

    def __call__(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            if self.staged is not None:
                self._upload(*self.staged)
        finally:
            if self.sidecar is not None:
                self.sidecar.close()
            if self.release is not None:
                self.release()

    def _upload(self, folder: Path, artifact_uri: str, tracking_uri: str) -> None:
        import shutil

        from reprorun.tracking.artifacts import log_dir

        try:
            log_dir(artifact_uri, folder, tracking_uri=tracking_uri)
        except Exception as exc:
            self.store.set_tag(
                self.run_id,
                "reprorun.artifactUploadError",
                f"{exc} (the files are kept in {folder})"[:8000],
            )
            return
        shutil.rmtree(folder, ignore_errors=True)


class Stopper:
    """Signal handling for a synchronous run: the first Ctrl-C/SIGTERM/SIGHUP stops the run
    gracefully (SIGTERM to its process group, SIGKILL after the grace period); a second one
    kills it at once. Before the command starts, a signal aborts the launch."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._submitted: SubmittedRun | None = None

    @contextmanager
    def installed(self) -> Iterator[None]:
        with handling_signals(self._handle):
            yield

    def _handle(self, signum: int, _frame: object) -> None:
        if self.received is not None:
            if self._submitted is not None:
                self._submitted.cancel(force=True)
            return
        self.received = signum
        if self._submitted is not None:
            self._submitted.cancel()

    def check(self, run_id: str) -> None:
        """Raise RunInterrupted if a stop signal has arrived."""
        if self.received is not None:
            raise RunInterrupted(self.received, run_id)

    def attach(self, submitted: SubmittedRun) -> None:
        self._submitted = submitted
        if self.received is not None:  # arrived while the command was being started
            submitted.cancel()


def end_unlaunched(store: TrackingStore, run_id: str, exc: BaseException) -> None:
    """End a run whose command could not be started: KILLED if a stop signal interrupted
    the launch (reason cancelled), else FAILED with what failed (reason launch-error: the
    working copy, the cluster, the supervisor...). A run already ended meanwhile (runs kill,
    a reader) is left as it is. A store that refuses the end does not hide ``exc``: the end is
    kept in the journal for the next reader."""
    from reprorun.backends import journal
    from reprorun.backends.exit_reason import launch_error

    with suppress(Exception):  # a store that cannot answer: the journal takes the end
        if store.get_run(run_id).info.status.is_terminal:  # RUNNING, or SCHEDULED in a queue
            return
    interrupted = isinstance(exc, (KeyboardInterrupt, RunInterrupted))
    tags = {} if interrupted else {FAILURE_TAG: f"{type(exc).__name__}: {exc}"[:8000]}
    ended = launch_error(exc)  # reason launch-error (cancelled if interrupted)
    tags.update(ended.tags())
    ending = journal.Ending(run_id, ended.status, now_ms(), tags, process_identity(os.getpid()))
    with suppress(RunNotRecorded):
        journal.record_end(store, ending)


class ReusedRun(SubmittedRun):
    """A FINISHED run returned by ``reuse`` instead of running again."""

    def __init__(self, run_id: str):
        self._run_id = run_id

    @property
    def run_id(self) -> str:
        return self._run_id

    def wait(self) -> bool:
        return True

    def get_status(self) -> RunStatus:
        return RunStatus.FINISHED

    def cancel(self, force: bool = False) -> None:
        pass  # it ended long ago


def run_env(run_id: str, experiment_id: str, tracking_uri: str) -> dict[str, str]:
    """The variables that make reprorun's client in the command log into its run."""
    return {
        "REPRORUN_RUN_ID": run_id,
        "REPRORUN_EXPERIMENT_ID": experiment_id,
        "REPRORUN_TRACKING_URI": tracking_uri,
        # Python children print as they go, so the log and the terminal follow the run live.
        "PYTHONUNBUFFERED": os.environ.get("PYTHONUNBUFFERED", "1"),
    }


def mlflow_env(
    mlflow_uri: str, run_id: str, experiment_id: str, token: str | None = None
) -> dict[str, str]:
    """Code written for the mlflow client logs into this very run (with the token of the
    run's own endpoint when there is one)."""
    env = {
        "MLFLOW_TRACKING_URI": mlflow_uri,
        "MLFLOW_RUN_ID": run_id,
        "MLFLOW_EXPERIMENT_ID": experiment_id,
    }
    if token:
        from reprorun.tracking.endpoint.sidecar import token_env

        env.update(token_env(token))
    return env


def use_mlflow_env(env: dict[str, str], mlflow: Mapping[str, str]) -> None:
    """Give ``env`` the MLflow variables ``mlflow``; with the endpoint's token, drop the
    credentials MLflow's clients would send instead of it."""
    if "MLFLOW_TRACKING_TOKEN" in mlflow:
        from reprorun.tracking.endpoint.sidecar import SHADOWING_CREDENTIALS

        for name in SHADOWING_CREDENTIALS:
            env.pop(name, None)
    env.update(mlflow)


def child_env(
    path_prefix: tuple[str, ...],
    extra: Mapping[str, str],
    run_id: str,
    experiment_id: str,
    tracking_uri: str,
    mlflow_uri: str | None = None,
    mlflow_token: str | None = None,
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    # `reprorun log ...` in the command is this very reprorun, whatever the environment holds.
    shim = command_shim()
    path_prefix = (str(shim.parent), *path_prefix)
    # mlflow.run() in the command starts its steps with this reprorun (clients.mlflow_projects).
    env["REPRORUN_COMMAND"] = str(shim)
    env["PATH"] = os.pathsep.join([*path_prefix, env.get("PATH", "")])
    env.update(run_env(run_id, experiment_id, tracking_uri))
    if mlflow_uri:
        use_mlflow_env(env, mlflow_env(mlflow_uri, run_id, experiment_id, mlflow_token))
        # The MLflow R package's artifacts and mlflow_run() go through reprorun's `mlflow`.
        env.update(mlflow_bin_env(env))
    return env


# Where a job finds S3 artifacts (docs/s3.md); none of them is a secret.
S3_LOCATION_VARS = (
    "MLFLOW_S3_ENDPOINT_URL",
    "MLFLOW_S3_IGNORE_TLS",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
)


def run_job_env(
    extra: Mapping[str, str], run_id: str, experiment_id: str, tracking_uri: str
) -> dict[str, str]:
    """A remote job's variables: only the run's own (never this machine's environment), and
    where S3 artifacts are (endpoint and region, never credentials: the job's own machine
    provides those, as an instance role, a Kubernetes secret or ~/.aws)."""
    env = {k: os.environ[k] for k in S3_LOCATION_VARS if os.environ.get(k)}
    env.update({**extra, **run_env(run_id, experiment_id, tracking_uri)})
    if tracking_uri.startswith(("http://", "https://")):
        env.update(mlflow_env(tracking_uri, run_id, experiment_id))
    return env


def echo_writer(echo: Echo | bool | None) -> Echo | None:
    """Where the command's output goes: True, this process's stdout; False/None, nowhere."""
    if echo is True:
        out = sys.stdout
        buffer = getattr(out, "buffer", None)
        if buffer is not None:

            def write_bytes(chunk: bytes) -> None:
                buffer.write(chunk)
                buffer.flush()

            return write_bytes

        def write_text(chunk: bytes) -> None:
            out.write(chunk.decode("utf-8", errors="replace"))
            out.flush()

        return write_text
    if echo is False or echo is None:
        return None
    return echo
