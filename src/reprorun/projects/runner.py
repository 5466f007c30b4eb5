"""Orchestration of one run: source -> project -> parameters -> environment -> tracking -> backend.

``plan`` does everything that can fail on bad input, with no side effect; ``run`` creates the
run only after the plan is complete, so bad input never leaves a run behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprorun._utils import current_user, handling_signals, process_identity
from reprorun.backends.base import (
    CONFIG_TAG,
    FAILURE_TAG,
    JOB_ID_TAG,
    JOB_URL_TAG,
    Backend,
    Echo,
    LaunchSpec,
    SubmittedRun,
    follow,
    get_backend,
)
from reprorun.backends.supervised import STOPS_ON_SIGTERM_TAG
from reprorun.config import TrackingTarget, resolve_tracking
from reprorun.envs.base import PreparedEnv, default_env_manager, get_env_manager
from reprorun.errors import (
    ExecutionError,
    RunFailed,
    RunInterrupted,
    RunNotRecorded,
    UserInputError,
)
from reprorun.projects.fingerprint import Fingerprint, fingerprint
from reprorun.projects.params import ResolvedParam, render_command, resolve_parameters
from reprorun.projects.spec import EntryPoint, Project, load_project
from reprorun.sources import Provenance, resolve_source
from reprorun.tracking.artifacts import local_dir
from reprorun.tracking.entities import RunStatus, SystemTags, now_ms
from reprorun.tracking.store.base import TrackingStore

DEFAULT_ENTRY_POINT = "main"


@dataclass(frozen=True)
class RunPlan:
    """A fully validated run, ready to execute: the output of ``--dry-run``."""

    project: Project
    entry_point: EntryPoint
    params: list[ResolvedParam]
    command: str
    provenance: Provenance
    snapshot: Path | None = None  # an immutable source tree: runs get a working copy

    def to_dict(self) -> dict[str, Any]:
        return {
            "project": {
                "name": self.project.name,
                "directory": str(self.project.directory),
                "mlproject": str(self.project.spec_path) if self.project.spec_path else None,
                "env": self.project.env.kind,
            },
            "entry_point": self.entry_point.name,
            "parameters": {
                p.name: {"value": p.value, "text": p.text, "source": p.source} for p in self.params
            },
            "command": self.command,
            "cwd": str(self.project.directory),
            "warnings": list(self.project.warnings),
            "source": {
                "kind": self.provenance.source_kind,
                "name": self.provenance.source_name,
                "version": self.provenance.version,
                "git_commit": self.provenance.git_commit,
                "git_repo_url": self.provenance.git_repo_url,
                "git_branch": self.provenance.git_branch,
                "git_dirty": self.provenance.git_dirty,
                "subdirectory": self.provenance.subdirectory,
            },
        }


def plan(
    uri: str,
    entry_point: str = DEFAULT_ENTRY_POINT,
    parameters: Mapping[str, Any] | None = None,
    *,
    version: str | None = None,
    cwd: Path | None = None,
    archive_sha256: str | None = None,
) -> RunPlan:
    """Resolve and validate everything about a run without running or recording anything
    (a git or archive source is fetched into the source cache, which is not a side effect on
    anything of the user's)."""
    cwd = cwd or Path.cwd()
    source = resolve_source(uri, version=version, cwd=cwd, archive_sha256=archive_sha256)
    project = load_project(source.directory)
    ep = project.entry_point(entry_point)
    given = {str(k): _param_text(v) for k, v in (parameters or {}).items()}
    resolved = resolve_parameters(
        ep.parameters, given, cwd=cwd, project_dir=project.directory, entry_point=ep.name
    )
    command = render_command(ep.command, resolved)
    return RunPlan(project, ep, resolved, command, source.provenance, source.snapshot)


def _download_path_params(the_plan: RunPlan, progress: Callable[[str], None] | None) -> RunPlan:
    """The plan with each ``path`` parameter given a URL downloaded (as MLflow does): the
    command gets the local copy, the run records the URL."""
    from reprorun.projects.downloads import download_path_params

    params = download_path_params(the_plan.params, the_plan.entry_point.parameters, progress)
    if params == the_plan.params:
        return the_plan
    command = render_command(the_plan.entry_point.command, params)
    return dataclasses.replace(the_plan, params=params, command=command)


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def run(
    uri: str,
    entry_point: str = DEFAULT_ENTRY_POINT,
    parameters: Mapping[str, Any] | None = None,
    experiment_id: str | None = None,
    experiment_name: str | None = None,
    env_manager: str | None = None,
    backend: str = "local",
    backend_config: Mapping[str, Any] | str | Path | None = None,
    synchronous: bool = True,
    run_name: str | None = None,
    tracking_uri: str | None = None,
    *,
    echo: Echo | bool | None = True,
    on_submit: Callable[[SubmittedRun], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
    version: str | None = None,
    extra_tags: Mapping[str, str] | None = None,
    patch: Path | None = None,
    env_lock: Path | None = None,
    progress: Callable[[str], None] | None = None,
    archive_sha256: str | None = None,
    reuse: bool = False,
    on_reuse: Callable[[Reuse], None] | None = None,
    detach: bool = False,
    max_parallel: int | None = None,
) -> SubmittedRun:
    """Run a project and record it: the counterpart of ``mlflow.projects.run``.

    Returns the submitted run. When ``synchronous``, it has finished: a run that FAILED raises
    RunFailed (as MLflow does), one stopped by Ctrl-C/SIGTERM/SIGHUP raises RunInterrupted.
    ``echo`` receives the child's output (True: this process's stdout; False/None: nothing; a
    callable: each chunk of bytes). ``on_submit`` is called once the command has started;
    ``on_warning`` with each thing accepted but worth knowing (ignored MLproject keys, ...).
    ``version`` picks a branch, tag or commit of a git source; ``patch`` (a git diff) is
    applied to the run's working copy (rerun of a dirty checkout); ``env_lock`` builds the
    environment from an earlier run's lock instead of the project's spec; ``progress``
    receives what the environment build is doing, then "" once it is ready. With ``reuse``,
    a FINISHED run with the same fingerprint is returned instead of running again (and
    ``on_reuse`` hears which and why).

    ``backend`` names where the command executes (local, ray, slurm, kubernetes, databricks)
    and ``backend_config`` its options (a mapping or a JSON/YAML file). Not ``synchronous``:
    the submitted run is returned as soon as the job has started. ``detach`` (local backend):
    a supervisor process of its own owns the command, so it outlives this process and its
    terminal. ``max_parallel`` (local backend): wait, SCHEDULED, while that many local runs
    asking for the same limit are running.
    """
    from reprorun.tracking.store import open_store

    if experiment_id is not None and experiment_name is not None:
        raise UserInputError("Give either an experiment id or an experiment name, not both.")
    # Everything that can be wrong with the input is checked before the run exists.
    backend_impl = get_backend(backend, *_load_backend_config(backend_config))
    if max_parallel is not None and backend_impl.remote:
        raise UserInputError(
            f"--max-parallel queues runs on this machine (the local backend); the "
            f"{backend_impl.name} backend's own scheduler decides how many of its jobs run."
        )
    if max_parallel is not None and max_parallel < 1:
        raise UserInputError(f"max_parallel must be at least 1, got {max_parallel}.")
    if env_manager is not None:
        get_env_manager(env_manager)  # an unknown name fails before anything is fetched
    the_plan = plan(uri, entry_point, parameters, version=version, archive_sha256=archive_sha256)
    if not backend_impl.remote:  # (a remote job cannot see a copy made here: it gets the URL)
        the_plan = _download_path_params(the_plan, progress)
    env_impl = get_env_manager(env_manager or default_env_manager(the_plan.project))
    warnings = list(the_plan.project.warnings)
    if the_plan.provenance.ref_check_warning:  # a cached tag used unchecked
        warnings.append(the_plan.provenance.ref_check_warning)
    declared_env = the_plan.project.env
    if declared_env.kind and env_impl.name == "local":
        what = declared_env.path.name if declared_env.path else declared_env.kind
        warnings.append(
            f"the project declares {declared_env.kind} ({what}); this run uses your own "
            "python (the activated environment's, or PATH's) and its packages (--env-manager local)"
        )
    target = resolve_tracking(tracking_uri)  # once: the store, the child and containers
    job_tracking_uri = target.uri
    if backend_impl.remote:
        job_tracking_uri = _job_tracking_uri(backend_impl, target, warnings)
        backend_impl.check_env(env_impl.name)
    for warning in warnings:
        if on_warning:
            on_warning(warning)
    # The environment is built (or found in the cache) before the run exists: a spec that
    # cannot be installed is bad input, and leaves no run behind.
    prepared = env_impl.prepare(the_plan.project, progress=progress, lock=env_lock)
    if progress:
        progress("")  # the environment is ready: whatever shows progress can stop
    for warning in prepared.warnings:  # e.g. conda packages skipped: PyPI does not have them
        if on_warning:
            on_warning(warning)
    try:
        store = open_store(target.uri)
        identity = fingerprint(the_plan, prepared, patch=patch)
        found = check_reuse(store, the_plan, identity) if reuse else None
        if found is not None and found.run_id is not None:
            if prepared.release:
                prepared.release()
            if on_reuse:
                on_reuse(found)
            return ReusedRun(found.run_id)
        if experiment_id is not None:
            exp_id = store.get_experiment(str(experiment_id)).experiment_id
        else:
            exp_id = store.get_or_create_experiment(experiment_name or _default_experiment_name())
    except BaseException:
        if prepared.release:
            prepared.release()
        raise

    # From here on a signal must not leave the run RUNNING: synchronous runs handle them from
    # before the run exists until it has ended.
    stopper = _Stopper() if synchronous else None
    with stopper.installed() if stopper else nullcontext():
        created = store.create_run(
            exp_id,
            run_name=run_name,
            user_id=current_user(),
            tags={
                **_system_tags(the_plan, env_impl.name, backend_impl.name),
                **_owner_tags(backend_impl, backend_config is not None, stopper),
                **_env_tags(prepared),
                **identity.tags,
                **(extra_tags or {}),
            },
            params={p.name: p.text for p in the_plan.params},
        )
        run_id = created.info.run_id
        held = prepared.env_dir if prepared.release else None
        finish = _Finish(store, run_id, prepared.release, held)
        try:
            if target.is_remote:
                # The server keeps the artifacts: stage them here, upload when the run ends.
                artifact_dir = _artifact_dir(_staging_uri(run_id), exp_id)
                finish.upload(artifact_dir, created.info.artifact_uri, target.uri)
            else:
                artifact_dir = _artifact_dir(created.info.artifact_uri, exp_id)
            _store_uncommitted_diff(store, run_id, the_plan.provenance, artifact_dir, patch)
            workdir = _working_directory(the_plan, run_id, patch)
            if workdir != the_plan.project.directory:
                store.set_tag(run_id, SystemTags.WORK_DIR, str(workdir))
            if prepared.lock_text:
                (artifact_dir / LOCK_ARTIFACT).parent.mkdir(parents=True, exist_ok=True)
                (artifact_dir / LOCK_ARTIFACT).write_text(prepared.lock_text, encoding="utf-8")
            if backend_impl.remote:
                spec = _remote_spec(
                    the_plan, prepared, store, created, workdir, artifact_dir, job_tracking_uri
                )
                submitted = backend_impl.submit(spec)
                job_tags = {JOB_ID_TAG: submitted.job_id}
                if submitted.job_url:
                    job_tags[JOB_URL_TAG] = submitted.job_url
                store.set_tags(run_id, job_tags)
                # The job has its own copy of the code and environment: upload what was
                # staged here (diff, lock) and release the local environment now.
                finish()
            else:
                in_container = prepared.docker is not None
                # The run's MLflow endpoint: the server itself when remote; else a loopback
                # one for this run, started by whoever owns the command (a detached run's
                # supervisor starts its own).
                sidecar_later = detach and not target.is_remote and not in_container
                mlflow_uri = (
                    None
                    if sidecar_later
                    else finish.mlflow_endpoint(target, in_container=in_container)
                )
                env = _child_env(
                    prepared.path_prefix,
                    prepared.env_vars,
                    run_id,
                    exp_id,
                    target.uri,
                    mlflow_uri,
                    finish.mlflow_token,
                )
                spec = LaunchSpec(
                    run_id=run_id,
                    command=the_plan.command,
                    cwd=workdir,
                    env=env,
                    store=store,
                    artifact_dir=artifact_dir,
                    echo=None if detach else _echo(echo),
                    on_finish=finish,
                    experiment_id=exp_id,
                    artifact_uri=created.info.artifact_uri,
                    tracking_uri=target.uri,
                    max_parallel=max_parallel,
                    interrupted=(lambda: stopper.check(run_id)) if stopper else None,
                    tied_to_caller=stopper is not None,
                    **_container(
                        prepared, run_id, the_plan.command, workdir, env, artifact_dir, target
                    ),
                )
                if detach:
                    from reprorun.backends.local import LocalBackend
                    from reprorun.projects.detach import launch

                    assert isinstance(backend_impl, LocalBackend)  # remote jobs need no supervisor
                    grace = backend_impl.config.stop_grace_seconds
                    submitted = launch(spec, finish, target, grace, sidecar_later)
                else:
                    if stopper:
                        stopper.check(run_id)
                    submitted = backend_impl.submit(spec)
        except BaseException as exc:
            finish()
            end_unlaunched(store, run_id, exc)
            raise
        if stopper is None:
            if on_submit:
                on_submit(submitted)
            return submitted
        stopper.attach(submitted)
        if on_submit:
            on_submit(submitted)
        if backend_impl.remote and (write := _echo(echo)) is not None:
            follow(submitted, write)  # the job's log, as the engine has it
        submitted.wait()
    stopper.check(run_id)
    if submitted.get_status() is RunStatus.FAILED:
        raise RunFailed(run_id)
    return submitted


def end_unlaunched(store: TrackingStore, run_id: str, exc: BaseException) -> None:
    """End a run whose command could not be started: KILLED if a stop signal interrupted
    the launch, else FAILED with the reason (e.g. the cluster could not be reached). A run
    already ended meanwhile (runs kill, a reader) is left as it is. A store that refuses the
    end does not hide ``exc``: the end is kept in the journal for the next reader."""
    from reprorun.backends import journal

    with suppress(Exception):  # a store that cannot answer: the journal takes the end
        if store.get_run(run_id).info.status.is_terminal:  # RUNNING, or SCHEDULED in a queue
            return
    interrupted = isinstance(exc, (KeyboardInterrupt, RunInterrupted))
    tags = {} if interrupted else {FAILURE_TAG: f"{type(exc).__name__}: {exc}"[:8000]}
    status = RunStatus.KILLED if interrupted else RunStatus.FAILED
    ending = journal.Ending(run_id, status, now_ms(), tags, process_identity(os.getpid()))
    with suppress(RunNotRecorded):
        journal.record_end(store, ending)


def _owner_tags(backend: Backend, configured: bool, stopper: _Stopper | None) -> dict[str, str]:
    """The backend's options, kept so another process can rebuild it (runs kill uses the
    grace period); whether SIGTERM to this process stops the run (it does when this process
    waits for the run in its main thread, where the signal handlers are)."""
    import threading

    tags = {CONFIG_TAG: backend.options_json()} if backend.remote or configured else {}
    if stopper is not None and threading.current_thread() is threading.main_thread():
        tags[STOPS_ON_SIGTERM_TAG] = "true"
    return tags


def _remote_spec(
    the_plan: RunPlan,
    prepared: PreparedEnv,
    store: TrackingStore,
    created: Any,
    workdir: Path,
    artifact_dir: Path,
    tracking_uri: str,
) -> LaunchSpec:
    """What a job elsewhere gets: the tree to ship, the run's variables only, the lock."""
    run_id, exp_id = created.info.run_id, created.info.experiment_id
    job_env = _job_env(prepared.env_vars, run_id, exp_id, tracking_uri)
    return LaunchSpec(
        run_id=run_id,
        command=the_plan.command,
        cwd=workdir,
        env=job_env,
        store=store,
        artifact_dir=artifact_dir,
        experiment_id=exp_id,
        artifact_uri=created.info.artifact_uri,
        tracking_uri=tracking_uri,
        job_env=job_env,
        source_root=_source_root(the_plan, workdir),
        path_prefix=prepared.path_prefix,
        lock_text=prepared.lock_text,
        python_version=prepared.python_version,
        docker_image=prepared.docker.image if prepared.docker else None,
    )


@dataclass(frozen=True)
class Reuse:
    """Whether a run would be reused: the FINISHED run with the same fingerprint, else the
    closest earlier run of the project and what differs from it."""

    fingerprint: Fingerprint
    run_id: str | None = None
    closest: str | None = None
    differences: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint.digest,
            "would_reuse": self.run_id is not None,
            "run_id": self.run_id,
            "closest_run_id": self.closest,
            "differences": list(self.differences),
        }

    def explain(self) -> str:
        if self.run_id is not None:
            return (
                f"run {self.run_id} FINISHED with the same fingerprint "
                f"{self.fingerprint.digest[:12]} (same source tree, entry point, parameters, "
                "environment and data)"
            )
        if self.closest is None:
            return "no earlier run of this project has a fingerprint"
        return f"closest earlier run {self.closest} differs in: " + "; ".join(self.differences)


def check_reuse(store: TrackingStore, the_plan: RunPlan, identity: Fingerprint) -> Reuse:
    """The newest FINISHED run with ``identity``'s fingerprint, else the closest earlier run
    of the same project (fewest differing parts) among its newest 500."""
    from reprorun.projects.fingerprint import PARTS_TAG, TAG, differences

    experiments = [e.experiment_id for e in store.list_experiments()]
    same = store.search_runs(
        experiments,
        f"tags.`{TAG}` = '{identity.digest}' and attributes.status = 'FINISHED'",
        max_results=1,
    )
    if same:
        return Reuse(identity, run_id=same[0].info.run_id)
    source = the_plan.provenance.source_name.replace("'", "''")
    candidates = store.search_runs(
        experiments, f"tags.`{SystemTags.SOURCE_NAME}` = '{source}'", max_results=500
    )
    best: tuple[int, str, list[str]] | None = None
    for run in candidates:
        parts = run.data.tags.get(PARTS_TAG)
        if not parts:
            continue
        found = differences(json.loads(parts), identity.parts)
        if best is None or len(found) < best[0]:
            best = (len(found), run.info.run_id, found)
    if best is None:
        return Reuse(identity)
    return Reuse(identity, closest=best[1], differences=tuple(best[2]))


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


DIFF_ARTIFACT = "source/uncommitted.diff"
LOCK_ARTIFACT = "environment/requirements.lock"


def _env_tags(prepared: PreparedEnv) -> dict[str, str]:
    tags = {}
    if prepared.env_hash:
        tags[SystemTags.ENV_HASH] = prepared.env_hash
    if prepared.python_version:
        tags[SystemTags.ENV_PYTHON] = prepared.python_version
    if prepared.lock_text:
        tags[SystemTags.ENV_LOCK] = LOCK_ARTIFACT
    if prepared.docker is not None:
        tags[SystemTags.ENV_IMAGE] = prepared.docker.image
    tags.update(prepared.tags)  # e.g. what a conda environment was translated to
    return tags


def _container(
    prepared: PreparedEnv,
    run_id: str,
    command: str,
    workdir: Path,
    env: Mapping[str, str],
    artifact_dir: Path,
    target: TrackingTarget,
) -> dict[str, Any]:
    """For docker_env: the argv that runs the command in a container, and how to stop it."""
    if prepared.docker is None:
        return {}
    from reprorun.envs.docker import docker_argv, stop_argv

    mounts = [artifact_dir]
    sqlite_path = target.sqlite_path
    if sqlite_path and sqlite_path != ":memory:":
        mounts.append(Path(sqlite_path).parent)
    assert prepared.client_dir is not None
    from reprorun.projects.downloads import downloads_root

    # Files downloaded for path parameters are read where the command was told they are.
    downloads = downloads_root()
    argv = docker_argv(
        prepared.docker,
        run_id=run_id,
        command=command,
        cwd=workdir,
        env=env,
        mounts=mounts,
        client_dir=prepared.client_dir,
        read_only=(downloads,) if downloads.is_dir() else (),
    )
    return {"argv": argv, "stop_argv": stop_argv(run_id)}


def _store_uncommitted_diff(
    store: Any, run_id: str, prov: Provenance, artifact_dir: Path, patch: Path | None
) -> None:
    """A dirty checkout's changes, kept with the run so it can be reproduced (rerun). A rerun
    that applies such changes keeps them too, so a rerun of a rerun runs the same code."""
    if patch is not None:
        target = artifact_dir / DIFF_ARTIFACT
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(patch.read_bytes())
        store.set_tags(run_id, {SystemTags.GIT_DIFF: DIFF_ARTIFACT, SystemTags.GIT_DIRTY: "true"})
        return
    if not prov.git_dirty:
        return
    if prov.uncommitted_diff is None:
        store.set_tag(run_id, SystemTags.GIT_DIFF, "too large to store")
        return
    target = artifact_dir / DIFF_ARTIFACT
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(prov.uncommitted_diff)
    store.set_tag(run_id, SystemTags.GIT_DIFF, DIFF_ARTIFACT)


def _working_directory(the_plan: RunPlan, run_id: str, patch: Path | None = None) -> Path:
    """Where the command runs: the project folder itself, or for a cached snapshot (git,
    archive) a working copy of it, so nothing a run writes reaches the snapshot."""
    if the_plan.snapshot is None:
        return the_plan.project.directory
    from reprorun.config import home
    from reprorun.sources.cache import working_copy

    work = working_copy(the_plan.snapshot, home() / "work" / run_id)
    if patch is not None:
        import subprocess

        applied = subprocess.run(
            ["git", "apply", "--whitespace=nowarn", str(patch)],
            cwd=work,
            capture_output=True,
            text=True,
        )
        if applied.returncode != 0:
            raise ExecutionError(
                f"Cannot apply the stored changes {patch}: {applied.stderr.strip()}"
            )
    return work / the_plan.project.directory.relative_to(the_plan.snapshot)


class _Finish:
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
        from reprorun.server.sidecar import Sidecar

        self.sidecar = Sidecar(self.store, self.run_id)
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


def _staging_uri(run_id: str) -> str:
    from reprorun.config import home

    return (home() / "staging" / run_id).as_uri()


def _artifact_dir(artifact_uri: str, experiment_id: str) -> Path:
    folder = local_dir(artifact_uri)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExecutionError(
            f"Cannot create the run's artifact folder {folder}: {exc.strerror}. Experiment "
            f"{experiment_id} keeps its artifacts there; fix the permissions, or record in an "
            "experiment created with another --artifact-location."
        ) from exc
    return folder


def _default_experiment_name() -> str:
    from reprorun.tracking.store import DEFAULT_EXPERIMENT_NAME

    return os.environ.get("REPRORUN_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT_NAME


def _load_backend_config(
    config: Mapping[str, Any] | str | Path | None,
) -> tuple[Mapping[str, Any], str]:
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


def _system_tags(the_plan: RunPlan, env_name: str, backend_name: str) -> dict[str, str]:
    from reprorun import __version__

    prov = the_plan.provenance
    tags = {
        SystemTags.SOURCE_TYPE: prov.source_type,
        SystemTags.SOURCE_NAME: prov.source_name,
        SystemTags.ENTRY_POINT: the_plan.entry_point.name,
        SystemTags.ENV: env_name,
        SystemTags.BACKEND: backend_name,
        SystemTags.COMMAND: the_plan.command,
        SystemTags.VERSION: __version__,
        SystemTags.PROJECT_DIR: str(the_plan.project.directory),
        SystemTags.LOG_ARTIFACT: "logs/run.log",
    }
    if prov.git_commit:
        tags[SystemTags.GIT_COMMIT] = prov.git_commit
    if prov.git_repo_url:
        tags[SystemTags.GIT_REPO_URL] = prov.git_repo_url
        tags[SystemTags.LEGACY_GIT_REPO_URL] = prov.git_repo_url
    if prov.git_branch:
        tags[SystemTags.GIT_BRANCH] = prov.git_branch
        tags[SystemTags.LEGACY_GIT_BRANCH] = prov.git_branch
    if prov.git_dirty is not None:
        tags[SystemTags.GIT_DIRTY] = str(prov.git_dirty).lower()
    tags[SystemTags.SOURCE_KIND] = prov.source_kind
    tags[SystemTags.SUPERVISOR] = process_identity(os.getpid())
    tags[SystemTags.RUN_PARAMS] = json.dumps({p.name: p.text for p in the_plan.params})
    optional = {
        SystemTags.SOURCE_VERSION: prov.version,
        SystemTags.SOURCE_SUBDIRECTORY: prov.subdirectory,
        SystemTags.SOURCE_URI: prov.uri,
        SystemTags.SOURCE_ARCHIVE_SHA256: prov.archive_sha256,
        SystemTags.SOURCE_REF_CHECK: prov.ref_check,
        SystemTags.SOURCE_REF_CHECK_WARNING: prov.ref_check_warning,
    }
    tags.update({k: v for k, v in optional.items() if v})
    return tags


def command_shim() -> Path:
    """A ``reprorun`` command for the run's child: this interpreter running this reprorun,
    with the library path this process has. (R prepends its own library path, which can
    load the system's libpython into another Python and hide its packages.)"""
    return _shim("reprorun", ())


def mlflow_shim() -> Path:
    """An ``mlflow`` command (``reprorun mlflow-cli``) for the MLflow R package, which shells
    out to ``$MLFLOW_BIN`` for artifacts and ``mlflow_run()``. Kept in a folder of its own that
    is never put on PATH: it is only ever named by ``MLFLOW_BIN``."""
    return _shim("mlflow", ("mlflow-cli",))


def _shim(name: str, args: tuple[str, ...]) -> Path:
    import hashlib
    import shlex

    from reprorun.config import home

    library_path = os.environ.get("LD_LIBRARY_PATH")
    restore = (
        f"LD_LIBRARY_PATH={shlex.quote(library_path)}; export LD_LIBRARY_PATH"
        if library_path
        else "unset LD_LIBRARY_PATH"
    )
    command = " ".join(shlex.quote(a) for a in (sys.executable, "-m", "reprorun", *args))
    text = (
        "#!/bin/sh\n"
        f"# Written by reprorun: in the commands it runs, `{name}` is the reprorun running them.\n"
        f"{restore}\n"
        f'exec {command} "$@"\n'
    )
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    shim = home() / "bin" / digest / name  # each script in a folder of its own
    if not shim.exists():
        shim.parent.mkdir(parents=True, exist_ok=True)
        partial = shim.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(text)
        partial.chmod(0o755)
        partial.replace(shim)  # atomic: concurrent runs never see half a script
    return shim


def mlflow_bin_env(env: Mapping[str, str]) -> dict[str, str]:
    """``MLFLOW_BIN`` (and ``MLFLOW_PYTHON_BIN``) for the MLflow R package, naming reprorun's
    ``mlflow`` command; nothing when ``env`` already has them or a real ``mlflow`` on its PATH
    (a user's MLflow is never shadowed)."""
    import shutil

    if env.get("MLFLOW_BIN") or shutil.which("mlflow", path=env.get("PATH", "")):
        return {}
    found = {"MLFLOW_BIN": str(mlflow_shim())}
    if not env.get("MLFLOW_PYTHON_BIN"):
        found["MLFLOW_PYTHON_BIN"] = sys.executable
    return found


def _child_env(
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
    env.update(_run_env(run_id, experiment_id, tracking_uri))
    if mlflow_uri:
        _use_mlflow_env(env, _mlflow_env(mlflow_uri, run_id, experiment_id, mlflow_token))
        # The MLflow R package's artifacts and mlflow_run() go through reprorun's `mlflow`.
        env.update(mlflow_bin_env(env))
    return env


def _run_env(run_id: str, experiment_id: str, tracking_uri: str) -> dict[str, str]:
    return {
        "REPRORUN_RUN_ID": run_id,
        "REPRORUN_EXPERIMENT_ID": experiment_id,
        "REPRORUN_TRACKING_URI": tracking_uri,
        # Python children print as they go, so the log and the terminal follow the run live.
        "PYTHONUNBUFFERED": os.environ.get("PYTHONUNBUFFERED", "1"),
    }


def _mlflow_env(
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
        from reprorun.server.sidecar import token_env

        env.update(token_env(token))
    return env


def _use_mlflow_env(env: dict[str, str], mlflow: Mapping[str, str]) -> None:
    """Give ``env`` the MLflow variables ``mlflow``; with the endpoint's token, drop the
    credentials MLflow's clients would send instead of it."""
    if "MLFLOW_TRACKING_TOKEN" in mlflow:
        from reprorun.server.sidecar import SHADOWING_CREDENTIALS

        for name in SHADOWING_CREDENTIALS:
            env.pop(name, None)
    env.update(mlflow)


def _job_env(
    extra: Mapping[str, str], run_id: str, experiment_id: str, tracking_uri: str
) -> dict[str, str]:
    """A remote job's variables: only the run's own (never this machine's environment)."""
    env = {**extra, **_run_env(run_id, experiment_id, tracking_uri)}
    if tracking_uri.startswith(("http://", "https://")):
        env.update(_mlflow_env(tracking_uri, run_id, experiment_id))
    return env


def _job_tracking_uri(backend: Backend, target: TrackingTarget, warnings: list[str]) -> str:
    """Where a remote job logs: the backend config's ``tracking_uri`` (the server as the
    cluster sees it), else the URI the run was created in, which for the embedded store is
    a file only a job on this machine's file system can open."""
    if backend.tracking_uri:
        return backend.tracking_uri
    if target.is_remote:
        return target.uri
    advice = (
        "start a tracking server the cluster can reach (reprorun server --host 0.0.0.0), "
        "run with --tracking-uri http://<this-host>:5000, or set tracking_uri in the "
        "backend config"
    )
    if backend.shares_filesystem is False:
        raise UserInputError(
            f"The {backend.name} backend runs the job on machines that cannot open this "
            f"run's store {target.uri} (a file on this machine): {advice}."
        )
    warnings.append(
        f"the {backend.name} job logs into {target.uri}, a file: that works only when the "
        f"job runs on this machine or a file system shared with it (one node); otherwise "
        f"{advice}"
    )
    return target.uri


def _source_root(the_plan: RunPlan, workdir: Path) -> Path:
    """The tree a remote job gets: the whole working copy of a snapshot (the command may use
    files above its subdirectory), else the project folder."""
    if the_plan.snapshot is None:
        return workdir
    depth = len(the_plan.project.directory.relative_to(the_plan.snapshot).parts)
    return workdir.parents[depth - 1] if depth else workdir


def _echo(echo: Echo | bool | None) -> Echo | None:
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


class _Stopper:
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
