"""``reprorun run``: validate, record and execute a project."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from reprorun.cli._common import (
    cli,
    current_app,
    duration_option,
    handle_errors,
    json_option,
    retry_options,
    tracking_uri_option,
)
from reprorun.cli.run_plan import show_params, show_plan

if TYPE_CHECKING:
    from reprorun.backends.base import SubmittedRun


@cli.command("run")
@click.argument("uri")
@click.option(
    "-e",
    "--entry-point",
    default="main",
    show_default=True,
    help="Entry point name, or a .py/.sh/.R file.",
)
@click.option(
    "-P", "--param", "params", multiple=True, metavar="KEY=VALUE", help="A parameter (repeatable)."
)
@click.option(
    "--experiment-name", help="Experiment to record in (created if missing) [default: Default]."
)
@click.option("--experiment-id", help="Experiment id to record in.")
@click.option("--run-name", help="A name for the run (default: generated).")
@click.option(
    "--env-manager",
    help="uv, virtualenv, conda, docker or local [default: uv when the project declares a "
    "Python environment, docker for docker_env, else local].",
)
@click.option("-b", "--backend", default="local", show_default=True, help="Where to execute.")
@click.option(
    "--backend-config", type=click.Path(dir_okay=False), help="Backend options (JSON or YAML file)."
)
@click.option("--version", "version", help="Branch, tag or commit of a git project.")
@tracking_uri_option
@click.option(
    "--dry-run",
    is_flag=True,
    help="Validate and show the resolved parameters and command; run nothing.",
)
@click.option(
    "--reuse",
    is_flag=True,
    help="If a FINISHED run has the same fingerprint (source tree, entry point, parameters, "
    "environment lock, data), return it instead of running again. With --dry-run: tell whether "
    "a run would be reused, else what differs from the closest earlier run.",
)
@click.option(
    "--tag", "tags", multiple=True, metavar="KEY=VALUE", help="A tag on the run (repeatable)."
)
@click.option(
    "--detach",
    is_flag=True,
    help="Return as soon as the run has started, printing its id: a supervisor process (or "
    "the cluster, for other backends) owns it. Follow it with reprorun runs status|logs|kill.",
)
@click.option(
    "--max-parallel",
    type=click.IntRange(min=1),
    metavar="N",
    help="Local queue: wait (SCHEDULED) while N local runs started with --max-parallel run.",
)
@click.option(
    "--timeout",
    metavar="DURATION",
    callback=lambda _ctx, _param, value: duration_option(value),
    help="Stop the command after DURATION (90s, 10m, 2h, 1h30m) of running: the run ends "
    "FAILED with reason timeout. On every backend (the engine's own limit where it has one).",
)
@click.option(
    "--system-metrics/--no-system-metrics",
    default=True,
    help="Log the machine's and the command's CPU, memory, disk, network (and GPU) as "
    "system/* metrics while the run runs, on any backend (MLflow's names; every "
    "REPRORUN_SYSTEM_METRICS_INTERVAL seconds) and its peak memory as a tag.  [default: on]",
)
@click.option(
    "--run-id-file",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Write the run id to FILE once the run exists (or the reused run's id), for scripts.",
)
@click.option(
    "--notify",
    "notify",
    multiple=True,
    metavar="TARGET",
    help="Tell TARGET when the run ends (repeatable): a webhook URL (JSON POST; Slack's format "
    "for hooks.slack.com), an e-mail address (REPRORUN_SMTP_URL) or cmd:/path/to/script (the "
    "payload as JSON on stdin). Also REPRORUN_NOTIFY and the experiment's reprorun.notify tag.",
)
@click.option(
    "-A",
    "--docker-args",
    "docker_args",
    multiple=True,
    metavar="NAME[=VALUE]",
    help="docker_env projects: an option for `docker run`, as MLflow's -A (repeatable): "
    "memory=2g gives --memory 2g, gpus=all --gpus all, t the flag -t.",
)
@retry_options
@click.option("--help-params", is_flag=True, help="List the entry point's parameters and exit.")
@json_option
@handle_errors
def run_command(
    uri: str,
    entry_point: str,
    params: tuple[str, ...],
    experiment_name: str | None,
    experiment_id: str | None,
    run_name: str | None,
    env_manager: str | None,
    backend: str,
    backend_config: str | None,
    version: str | None,
    tracking_uri: str | None,
    dry_run: bool,
    reuse: bool,
    tags: tuple[str, ...],
    detach: bool,
    max_parallel: int | None,
    timeout: float | None,
    system_metrics: bool,
    run_id_file: str | None,
    notify: tuple[str, ...],
    docker_args: tuple[str, ...],
    retries: int,
    retry_on: tuple[str, ...] | None,
    retry_memory: float | None,
    retry_backoff: float | None,
    help_params: bool,
    as_json: bool,
) -> None:
    """Run the project at URI (a directory, git URL or archive) and record the run.

    \b
    Examples:
      reprorun run examples/iris -P max_depth=3 -P ccp_alpha=0.01
      reprorun run . -e train.py -P epochs=5
      reprorun run examples/iris --dry-run --json
      reprorun run https://github.com/org/repo#sub/dir --version v1.2
      reprorun run examples/iris --detach --max-parallel 2
      reprorun run . --backend slurm --backend-config cluster.yaml
    """
    from reprorun.projects.params import parse_param_args

    given = parse_param_args(params)
    if help_params:
        show_params(uri, entry_point, as_json, version)
        return
    if dry_run:
        show_plan(uri, entry_point, given, as_json, version, env_manager, reuse, tracking_uri)
        return
    if as_json:
        raise click.UsageError("--json goes with --dry-run or --help-params.")
    from reprorun.projects.launch import run_request
    from reprorun.projects.request import RunRequest

    request = RunRequest(
        uri,
        entry_point,
        given,
        version=version,
        experiment_id=experiment_id,
        experiment_name=experiment_name,
        env_manager=env_manager,
        backend=backend,
        backend_config=backend_config,
        reuse=reuse,
        tags=_parse_tags(tags),
        run_name=run_name,
        tracking_uri=tracking_uri,
        synchronous=not detach,
        detach=detach and backend == "local",
        max_parallel=max_parallel,
        timeout=timeout,
        system_metrics=system_metrics,
        notify=notify,
        docker_args=docker_args,
        retries=retries,
        retry_on=retry_on,
        retry_memory=retry_memory,
        retry_backoff=retry_backoff,
    )

    def reusing(found: Any) -> None:
        click.echo(f"reprorun: reusing {found.explain()}", err=True)
        _write_run_id(run_id_file, found.run_id)

    def retrying(text: str) -> None:
        click.echo(f"reprorun: {text}", err=True)

    created: list[str] = []  # the runs made, for the last line of one whose command never started

    def start(**callbacks: Any) -> SubmittedRun:
        return run_request(
            request, on_reuse=reusing, on_retry=retrying, on_create=created.append, **callbacks
        )

    if detach:
        _detach(start, run_id_file)
        return
    execute(
        start,
        on_start=lambda run_id: _write_run_id(run_id_file, run_id),
        tracking_uri=tracking_uri,
        created=created,
    )


def _detach(start: Callable[..., SubmittedRun], run_id_file: str | None) -> None:
    """Submit, print the run id on stdout (for scripts) and how to follow it on stderr."""
    from reprorun.cli.render import progress_display

    with progress_display() as progress:
        submitted = start(
            on_warning=lambda text: click.echo(f"reprorun: warning: {text}", err=True),
            progress=progress,
            echo=False,
        )
    _write_run_id(run_id_file, submitted.run_id)
    click.echo(submitted.run_id)
    from reprorun.projects.lifecycle import ReusedRun

    if isinstance(submitted, ReusedRun):
        return  # nothing was submitted; `reusing ...` said which run and why
    where = f"{submitted.backend} job {submitted.job_id}" if submitted.job_id else "detached"
    click.echo(
        f"reprorun: run {submitted.run_id} submitted ({where}); follow it with "
        f"reprorun runs logs --follow {submitted.run_id}, stop it with reprorun runs kill "
        f"{submitted.run_id}",
        err=True,
    )


def _parse_tags(tags: tuple[str, ...]) -> dict[str, str]:
    parsed = {}
    for item in tags:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--tag")
        parsed[key.strip()] = value
    return parsed


def _write_run_id(path: str | None, run_id: str) -> None:
    """For a program that starts `reprorun run` (R's mlflow_run(), mlflow.run() inside a run):
    the run's id as soon as it exists."""
    if path:
        from pathlib import Path

        Path(path).write_text(run_id + "\n")


def execute(
    start: Callable[..., SubmittedRun],
    on_start: Callable[[str], None] | None = None,
    *,
    tracking_uri: str | None = None,
    created: list[str] | None = None,
) -> SubmittedRun:
    """Run synchronously with progress lines on stderr; exit 1 if the run failed (its stored
    status: the code may have ended it FAILED) or the store did not record its end, 128+N when
    signal N stopped it, 143 when it was KILLED otherwise (shared by `run` and `rerun`). The
    last line says why the run ended (``FAILED (out-of-memory)``); ``created`` (filled by the
    caller's ``on_create``) names a run whose command never started, whose last line is
    printed before the error that ended it (``FAILED (launch-error)``)."""
    from reprorun.errors import ReprorunError, RunFailed, RunInterrupted, RunNotRecorded

    started = time.monotonic()
    ran: list[SubmittedRun] = []

    def announce(submitted: SubmittedRun) -> None:
        ran.append(submitted)
        click.echo(f"reprorun: run {submitted.run_id} started", err=True)
        if on_start:
            on_start(submitted.run_id)

    def finished(run_id: str, status: str) -> None:
        elapsed = time.monotonic() - started
        word, sep, rest = status.partition(" (")  # KILLED (signal 2)
        status = _with_reason(run_id, word, ran, tracking_uri) + (f" ({rest}" if sep else "")
        click.echo(
            f"reprorun: run {run_id} {status} in {elapsed:.1f}s (reprorun runs show {run_id})",
            err=True,
        )

    try:
        from reprorun.cli.render import progress_display

        with progress_display() as progress:
            submitted = start(
                on_submit=announce,
                on_warning=lambda text: click.echo(f"reprorun: warning: {text}", err=True),
                progress=progress,
            )
    except RunInterrupted as exc:
        finished(exc.run_id, f"KILLED (signal {exc.signum})")
        sys.exit(128 + exc.signum)
    except RunFailed as exc:
        finished(exc.run_id, "FAILED")
        sys.exit(1)
    except RunNotRecorded as exc:
        code = f" (exit code {exc.exit_code})" if exc.exit_code is not None else ""
        elapsed = time.monotonic() - started
        click.echo(
            f"reprorun: run {exc.run_id} {exc.status}{code} in {elapsed:.1f}s, but this end "
            f"is NOT RECORDED in the store.\nreprorun: error: {exc}",
            err=True,
        )
        sys.exit(1)
    except ReprorunError:
        unlaunched = created[-1] if created else None
        if unlaunched is not None and all(s.run_id != unlaunched for s in ran):
            finished(unlaunched, _stored_status(unlaunched, tracking_uri))
        raise
    from reprorun.projects.lifecycle import ReusedRun

    if isinstance(submitted, ReusedRun):
        click.echo(f"reprorun: nothing run (reprorun runs show {submitted.run_id})", err=True)
        return submitted
    from reprorun.tracking.entities import RunStatus

    status = submitted.get_status()  # the stored one: the code may have ended the run KILLED
    finished(submitted.run_id, status.value)
    if status is RunStatus.KILLED:
        sys.exit(128 + signal.SIGTERM)  # as a run stopped by `reprorun runs kill`
    return submitted


def _with_reason(
    run_id: str, status: str, ran: list[SubmittedRun], tracking_uri: str | None
) -> str:
    """``status`` with the run's exit reason: the one its local backend recorded, else the
    stored one (a remote run); ``status`` as it is if none can be read."""
    from reprorun.backends.exit_reason import label

    ended = next((getattr(s, "exit", None) for s in ran if s.run_id == run_id), None)
    if ended is not None:
        return label(status, ended.tags())
    try:
        tags = current_app().store_at(tracking_uri).get_run(run_id).data.tags
    except Exception:
        return status
    return label(status, tags)


def _stored_status(run_id: str, tracking_uri: str | None) -> str:
    try:
        return current_app().store_at(tracking_uri).get_run(run_id).info.status.value
    except Exception:
        return "FAILED"
