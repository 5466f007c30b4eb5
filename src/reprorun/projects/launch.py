"""Launch a planned run: build its environment, record it, hand its command to a backend.

``run_request(request)`` is the whole pipeline: ``plan`` (no side effect), the environment
(built or found in the cache, before the run exists: a spec that cannot be installed is bad
input), reuse, then ``launch``, which creates the run and submits its ``LaunchSpec``. The run
exists only once everything about the input has been checked, so bad input never leaves a run
behind. ``run`` is the Python API's form (``reprorun.projects.run``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprorun._utils import current_user
from reprorun.backends.base import (
    CONFIG_TAG,
    JOB_ID_TAG,
    JOB_URL_TAG,
    Backend,
    Echo,
    LaunchSpec,
    SubmittedRun,
    follow,
)
from reprorun.backends.heartbeat import Watched
from reprorun.backends.registry import get_backend
from reprorun.backends.supervised import STOPS_ON_SIGTERM_TAG
from reprorun.config import TrackingTarget, resolve_tracking
from reprorun.envs.base import PreparedEnv, default_env_manager
from reprorun.envs.registry import get_env_manager
from reprorun.errors import RunFailed, UserInputError
from reprorun.projects import workspace
from reprorun.projects.fingerprint import Fingerprint, Reuse, check_reuse, fingerprint
from reprorun.projects.lifecycle import (
    Finish,
    ReusedRun,
    Stopper,
    child_env,
    echo_writer,
    end_unlaunched,
    run_job_env,
)
from reprorun.projects.planning import (
    RunPlan,
    download_path_params,
    plan,
    plan_warnings,
    system_tags,
)
from reprorun.projects.request import (
    DEFAULT_ENTRY_POINT,
    RunRequest,
    default_experiment_name,
    load_backend_config,
)
from reprorun.tracking.artifacts import check_storage
from reprorun.tracking.artifacts import is_remote as stored_elsewhere
from reprorun.tracking.entities import RunStatus, SystemTags
from reprorun.tracking.store.base import TrackingStore


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
    timeout: float | None = None,
    retries: int = 0,
    retry_on: str | tuple[str, ...] | None = None,
    retry_memory: float | None = None,
    retry_backoff: float | None = None,
    on_retry: Callable[[str], None] | None = None,
    docker_args: Mapping[str, str | bool] | Sequence[str] | None = None,
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
    asking for the same limit are running. ``timeout``: seconds the command may run before it
    is stopped (the run FAILED, reason timeout), on every backend.

    ``retries``: an attempt that ended for one of ``retry_on`` (class names, comma-separated
    or a tuple; default preempted, node-lost, launch-error) runs again as a new run linked to
    the first, up to ``retries`` times, after ``retry_backoff`` seconds (default 10, doubling,
    capped at 10 minutes); an out-of-memory retry multiplies the backend's memory request by
    ``retry_memory``; ``on_retry`` hears each retry (``projects.retry``).

    ``docker_args`` (docker_env projects): ``docker run`` options, as MLflow's: a mapping
    ``{"memory": "2g", "t": True}`` or items ``["memory=2g", "t"]``.
    """
    request = RunRequest(
        uri,
        entry_point,
        parameters or {},
        version=version,
        experiment_id=experiment_id,
        experiment_name=experiment_name,
        env_manager=env_manager,
        backend=backend,
        backend_config=backend_config,
        reuse=reuse,
        tags=extra_tags or {},
        run_name=run_name,
        tracking_uri=tracking_uri,
        synchronous=synchronous,
        detach=detach,
        max_parallel=max_parallel,
        patch=patch,
        env_lock=env_lock,
        archive_sha256=archive_sha256,
        timeout=timeout,
        retries=retries,
        retry_on=tuple(retry_on.split(",")) if isinstance(retry_on, str) else retry_on,
        retry_memory=retry_memory,
        retry_backoff=retry_backoff,
        docker_args=docker_arg_items(docker_args),
    )
    return run_request(
        request,
        echo=echo,
        on_submit=on_submit,
        on_warning=on_warning,
        progress=progress,
        on_reuse=on_reuse,
        on_retry=on_retry,
    )


def run_request(
    request: RunRequest,
    *,
    echo: Echo | bool | None = True,
    on_submit: Callable[[SubmittedRun], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
    progress: Callable[[str], None] | None = None,
    on_reuse: Callable[[Reuse], None] | None = None,
    on_create: Callable[[str], None] | None = None,
    on_retry: Callable[[str], None] | None = None,
) -> SubmittedRun:
    """Run ``request`` and record it (``run`` says what each callback hears; ``on_create``
    hears the run's id once it exists). With ``request.retries``, each attempt is a run of
    its own (``projects.retry``); ``on_retry`` hears what happens between them."""
    from reprorun.tracking.store import open_store

    if request.retries:
        from reprorun.projects.retry import run_attempts

        callbacks: dict[str, Any] = dict(echo=echo, on_submit=on_submit, on_warning=on_warning)
        callbacks.update(progress=progress, on_reuse=on_reuse, on_create=on_create)
        return run_attempts(request, run_request, on_retry=on_retry, **callbacks)
    request.check()
    # Everything that can be wrong with the input is checked before the run exists.
    backend_impl = get_backend(request.backend, *load_backend_config(request.backend_config))
    max_parallel = request.max_parallel
    if max_parallel is not None and backend_impl.remote:
        raise UserInputError(
            f"--max-parallel queues runs on this machine (the local backend); the "
            f"{backend_impl.name} backend's own scheduler decides how many of its jobs run."
        )
    if max_parallel is not None and max_parallel < 1:
        raise UserInputError(f"max_parallel must be at least 1, got {max_parallel}.")
    if request.env_manager is not None:
        get_env_manager(request.env_manager)  # an unknown name fails before anything is fetched
    the_plan = plan(request)
    if not backend_impl.remote:  # (a remote job cannot see a copy made here: it gets the URL)
        the_plan = download_path_params(the_plan, progress)
    env_impl = get_env_manager(request.env_manager or default_env_manager(the_plan.project))
    if request.docker_args and env_impl.name != "docker":
        raise UserInputError(
            f"--docker-args are options of `docker run`, and this run uses the "
            f"{env_impl.name} environment manager: they apply to docker_env projects only "
            f"(--env-manager docker)."
        )
    warnings = plan_warnings(the_plan, env_impl.name)
    target = resolve_tracking(request.tracking_uri)  # once: the store, the child and containers
    job_tracking_uri = target.uri
    if backend_impl.remote:
        job_tracking_uri = _job_tracking_uri(backend_impl, target, warnings)
        backend_impl.check_env(env_impl.name)
    for warning in warnings:
        if on_warning:
            on_warning(warning)
    # The environment is built (or found in the cache) before the run exists: a spec that
    # cannot be installed is bad input, and leaves no run behind.
    prepared = env_impl.prepare(the_plan.project, progress=progress, lock=request.env_lock)
    if progress:
        progress("")  # the environment is ready: whatever shows progress can stop
    for warning in prepared.warnings:  # e.g. conda packages skipped: PyPI does not have them
        if on_warning:
            on_warning(warning)
    try:
        store = open_store(target.uri)
        identity = fingerprint(the_plan, prepared, patch=request.patch)
        found = check_reuse(store, the_plan, identity) if request.reuse else None
        if found is not None and found.run_id is not None:
            if prepared.release:
                prepared.release()
            if on_reuse:
                on_reuse(found)
            return ReusedRun(found.run_id)
        if request.experiment_id is not None:
            exp_id = store.get_experiment(str(request.experiment_id)).experiment_id
        else:
            exp_id = store.get_or_create_experiment(
                request.experiment_name or default_experiment_name()
            )
    except BaseException:
        if prepared.release:
            prepared.release()
        raise
    ready = Ready(
        backend_impl, env_impl.name, prepared, identity, store, exp_id, target, job_tracking_uri
    )
    return launch(request, the_plan, ready, echo=echo, on_submit=on_submit, on_create=on_create)


def docker_arg_items(given: Mapping[str, str | bool] | Sequence[str] | None) -> tuple[str, ...]:
    """MLflow's ``docker_args`` mapping (a name with True is a flag, False is left out) or
    ``NAME=VALUE`` items, as items."""
    if given is None or isinstance(given, str):
        return (given,) if given else ()
    if isinstance(given, Mapping):
        return tuple(
            name if value is True else f"{name}={value}"
            for name, value in given.items()
            if value is not False
        )
    return tuple(given)


@dataclass(frozen=True)
class Ready:
    """What a planned run has once its input is checked: its backend, its environment (built,
    and held until the run ends), its fingerprint, the store and experiment it goes in."""

    backend: Backend
    env_manager: str
    prepared: PreparedEnv
    identity: Fingerprint
    store: TrackingStore
    experiment_id: str
    target: TrackingTarget
    job_tracking_uri: str  # where a remote job logs (as the cluster reaches the store)


def launch(
    request: RunRequest,
    the_plan: RunPlan,
    ready: Ready,
    *,
    echo: Echo | bool | None = True,
    on_submit: Callable[[SubmittedRun], None] | None = None,
    on_create: Callable[[str], None] | None = None,
) -> SubmittedRun:
    """Create the run and hand its command to the backend; when ``request.synchronous``, wait
    for it to end (a FAILED run raises RunFailed, a stopped one RunInterrupted)."""
    backend_impl, prepared, store, exp_id = (
        ready.backend,
        ready.prepared,
        ready.store,
        ready.experiment_id,
    )
    target = ready.target
    # From here on a signal must not leave the run RUNNING: synchronous runs handle them from
    # before the run exists until it has ended.
    stopper = Stopper() if request.synchronous else None
    with stopper.installed() if stopper else nullcontext():
        created = store.create_run(
            exp_id,
            run_name=request.run_name,
            user_id=current_user(),
            tags={
                **system_tags(the_plan, ready.env_manager, backend_impl.name),
                **_owner_tags(backend_impl, request.backend_config is not None, stopper),
                **_env_tags(prepared),
                **ready.identity.tags,
                **_docker_tags(request.docker_args),
                **request.tags,
            },
            params={p.name: p.text for p in the_plan.params},
        )
        run_id = created.info.run_id
        if on_create:
            on_create(run_id)
        held = prepared.env_dir if prepared.release else None
        finish = Finish(store, run_id, prepared.release, held)
        try:
            if target.is_remote or stored_elsewhere(created.info.artifact_uri):
                # The server (or S3) keeps the artifacts: stage them here, upload at the end.
                check_storage(created.info.artifact_uri)  # no bucket: fail now, not at the end
                artifact_dir = workspace.artifact_dir(workspace.staging_uri(run_id), exp_id)
                finish.upload(artifact_dir, created.info.artifact_uri, target.uri)
            else:
                artifact_dir = workspace.artifact_dir(created.info.artifact_uri, exp_id)
            workspace.store_uncommitted_diff(
                store, run_id, the_plan.provenance, artifact_dir, request.patch
            )
            workdir = workspace.working_directory(the_plan, run_id, request.patch)
            if workdir != the_plan.project.directory:
                store.set_tag(run_id, SystemTags.WORK_DIR, str(workdir))
            if prepared.lock_text:
                lock_file = artifact_dir / workspace.LOCK_ARTIFACT
                lock_file.parent.mkdir(parents=True, exist_ok=True)
                lock_file.write_text(prepared.lock_text, encoding="utf-8")
            if backend_impl.remote:
                spec = _remote_spec(
                    the_plan,
                    prepared,
                    store,
                    created,
                    workdir,
                    artifact_dir,
                    ready.job_tracking_uri,
                    request.timeout,
                    request.system_metrics,
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
                detach = request.detach
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
                env = child_env(
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
                    echo=None if detach else echo_writer(echo),
                    on_finish=finish,
                    experiment_id=exp_id,
                    artifact_uri=created.info.artifact_uri,
                    tracking_uri=target.uri,
                    max_parallel=request.max_parallel,
                    timeout_seconds=request.timeout,
                    interrupted=(lambda: stopper.check(run_id)) if stopper else None,
                    tied_to_caller=stopper is not None,
                    system_metrics=request.system_metrics,
                    **workspace.container_argv(
                        prepared,
                        run_id,
                        the_plan.command,
                        workdir,
                        env,
                        artifact_dir,
                        target,
                        request.docker_args,
                    ),
                )
                if detach:
                    from reprorun.backends.local import LocalBackend
                    from reprorun.projects.detach import launch_detached

                    assert isinstance(backend_impl, LocalBackend)  # remote jobs need no supervisor
                    grace = backend_impl.config.stop_grace_seconds
                    submitted = launch_detached(spec, finish, grace, sidecar_later)
                else:
                    if stopper:
                        stopper.check(run_id)
                    submitted = backend_impl.submit(spec)
        except BaseException as exc:
            finish()
            end_unlaunched(store, run_id, exc)
            from reprorun.backends.notify import notify_end

            notify_end(store, run_id, exp_id, request.notify)  # launch-error; never raises
            raise
        if stopper is None:
            if on_submit:
                on_submit(submitted)
            return submitted
        stopper.attach(submitted)
        if on_submit:
            on_submit(submitted)
        if backend_impl.remote:
            # A job the engine still calls RUNNING whose heartbeat stopped is waited for no
            # longer (node-lost, and abandoned: a retry never runs beside it). Whichever
            # handle writes its end tells the targets.
            submitted = Watched(store, submitted)
            submitted.notify_targets = request.notify
            if (write := echo_writer(echo)) is not None:
                follow(submitted, write)  # the job's log, as the engine has it
        submitted.wait()
    from reprorun.backends.notify import notify_end

    # Its end is written; never raises. A remote run's end was told by whoever wrote it: only
    # this process's --notify targets are left when that was another process.
    if not (backend_impl.remote and submitted.ended_here):
        notify_end(store, run_id, exp_id, request.notify, only_given=backend_impl.remote)
    stopper.check(run_id)
    if submitted.get_status() is RunStatus.FAILED:
        raise RunFailed(run_id)
    return submitted


def _docker_tags(docker_args: tuple[str, ...]) -> dict[str, str]:
    """The run's --docker-args, kept for reruns."""
    import json

    return {SystemTags.DOCKER_ARGS: json.dumps(list(docker_args))} if docker_args else {}


def _owner_tags(backend: Backend, configured: bool, stopper: Stopper | None) -> dict[str, str]:
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
    timeout: float | None = None,
    system_metrics: bool = True,
) -> LaunchSpec:
    """What a job elsewhere gets: the tree to ship, the run's variables only, the lock."""
    run_id, exp_id = created.info.run_id, created.info.experiment_id
    job_env = run_job_env(prepared.env_vars, run_id, exp_id, tracking_uri)
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
        source_root=workspace.source_root(the_plan, workdir),
        path_prefix=prepared.path_prefix,
        lock_text=prepared.lock_text,
        python_version=prepared.python_version,
        docker_image=prepared.docker.image if prepared.docker else None,
        project_name=the_plan.project.name,
        timeout_seconds=timeout,
        system_metrics=system_metrics,
    )


def _env_tags(prepared: PreparedEnv) -> dict[str, str]:
    tags = {}
    if prepared.env_hash:
        tags[SystemTags.ENV_HASH] = prepared.env_hash
    if prepared.python_version:
        tags[SystemTags.ENV_PYTHON] = prepared.python_version
    if prepared.lock_text:
        tags[SystemTags.ENV_LOCK] = workspace.LOCK_ARTIFACT
    if prepared.docker is not None:
        tags[SystemTags.ENV_IMAGE] = prepared.docker.image
    tags.update(prepared.tags)  # e.g. what a conda environment was translated to
    return tags


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
