"""``reprorun run``: validate, record and execute a project."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from reprorun.cli._common import cli, current_app, handle_errors, json_option, tracking_uri_option
from reprorun.config import setting

if TYPE_CHECKING:
    from reprorun.backends.base import SubmittedRun


def _retry_classes(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> tuple[str, ...] | None:
    from reprorun.errors import UserInputError
    from reprorun.projects.retry import parse_retry_on

    try:
        return None if value is None else tuple(r.value for r in parse_retry_on(value))
    except UserInputError as exc:
        raise click.BadParameter(str(exc)) from exc


def _memory_factor(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    from reprorun.errors import UserInputError
    from reprorun.projects.retry import parse_memory_factor

    try:
        return parse_memory_factor(value)
    except UserInputError as exc:
        raise click.BadParameter(str(exc)) from exc


def retry_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--retries, --retry-on, --retry-memory, --retry-backoff (reprorun run and sweep)."""
    options = [
        click.option(
            "--retries",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            metavar="N",
            help="Run an attempt that ended for a --retry-on class again, up to N times; each "
            "attempt is a run of its own, linked to the first.",
        ),
        click.option(
            "--retry-on",
            callback=_retry_classes,
            metavar="CLASSES",
            help="With --retries: the exit reasons retried, comma-separated, among preempted, "
            "node-lost, out-of-memory, timeout, launch-error, code-error "
            "[default: preempted,node-lost,launch-error].",
        ),
        click.option(
            "--retry-memory",
            callback=_memory_factor,
            metavar="xF",
            help="With --retries: an out-of-memory retry multiplies the backend's memory "
            "request (Slurm mem, Ray memory, the Kubernetes template's memory) by F, e.g. x2.",
        ),
        click.option(
            "--retry-backoff",
            type=click.FloatRange(min=0),
            metavar="SECONDS",
            help="With --retries: the wait before the first retry, doubled for each next one "
            "and capped at 10 minutes [default: 10].",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


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
    callback=lambda _ctx, _param, value: _duration(value),
    help="Stop the command after DURATION (90s, 10m, 2h, 1h30m) of running: the run ends "
    "FAILED with reason timeout. On every backend (the engine's own limit where it has one).",
)
@click.option(
    "--system-metrics/--no-system-metrics",
    default=True,
    help="Log the machine's and the command's CPU, memory, disk, network (and GPU) as "
    "system/* metrics while a local run runs (MLflow's names; every "
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
        _show_params(uri, entry_point, as_json, version)
        return
    if dry_run:
        _show_plan(uri, entry_point, given, as_json, version, env_manager, reuse, tracking_uri)
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


def _duration(value: str | None) -> float | None:
    """--timeout's seconds (a bad duration is a usage error naming the option)."""
    if value is None:
        return None
    from reprorun.errors import UserInputError
    from reprorun.projects.request import parse_duration

    try:
        return parse_duration(value)
    except UserInputError as exc:
        raise click.BadParameter(str(exc), param_hint="--timeout") from exc


def _detach(start: Callable[..., SubmittedRun], run_id_file: str | None) -> None:
    """Submit, print the run id on stdout (for scripts) and how to follow it on stderr."""
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


@contextmanager
def progress_display() -> Iterator[Callable[[str], None]]:
    """A spinner with the environment build's current step on a terminal; quiet otherwise,
    unless REPRORUN_PROGRESS=plain asks for plain lines (CI logs)."""
    if not sys.stderr.isatty():
        if setting("progress") != "plain":
            yield lambda _text: None
            return

        def line(text: str) -> None:
            if text:
                click.echo(f"reprorun: {text}", err=True)

        yield line
        return
    from rich.console import Console

    console = Console(stderr=True)
    status = console.status("")
    started = False

    def update(text: str) -> None:
        nonlocal started
        if not text:
            stop()
            return
        status.update(f"reprorun: {text}")
        if not started:
            status.start()
            started = True

    def stop() -> None:
        nonlocal started
        if started:
            status.stop()
            started = False

    try:
        yield update
    finally:
        stop()


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


def _show_plan(
    uri: str,
    entry_point: str,
    given: dict[str, str],
    as_json: bool,
    version: str | None,
    env_manager: str | None,
    reuse: bool = False,
    tracking_uri: str | None = None,
) -> None:
    from reprorun.cli.render import echo_json, key_values
    from reprorun.envs.base import default_env_manager
    from reprorun.projects.planning import plan
    from reprorun.projects.request import RunRequest

    the_plan = plan(RunRequest(uri, entry_point, given, version=version))
    env_impl = current_app().env_manager(env_manager or default_env_manager(the_plan.project))
    manager = env_impl.name
    for warning in the_plan.project.warnings:
        click.echo(f"reprorun: warning: {warning}", err=True)
    found = _would_reuse(the_plan, env_impl, tracking_uri) if reuse else None
    if as_json:
        reused = {"reuse": found.to_dict()} if found else {}
        echo_json({**the_plan.to_dict(), "env_manager": manager, **reused})
        return
    prov = the_plan.provenance
    project = the_plan.project
    click.echo(f"Project      {project.name or project.directory.name} ({project.directory})")
    click.echo(f"Entry point  {the_plan.entry_point.name}")
    click.echo("Parameters")
    key_values([(p.name, f"{p.text}  ({p.source})") for p in the_plan.params], indent=4)
    click.echo(f"Command      {the_plan.command}")
    source = prov.source_name
    if prov.git_commit:
        source += f" @ {prov.git_commit[:12]}" + (
            " (uncommitted changes)" if prov.git_dirty else ""
        )
    click.echo(f"Source       {source}")
    declared = the_plan.project.env
    spec = f" ({declared.path.name})" if declared.path else ""
    click.echo(f"Environment  {manager}{spec}")
    if found is not None:
        click.echo(f"Fingerprint  {found.fingerprint.digest}")
        verdict = "yes" if found.run_id else "no"
        click.echo(f"Reuse        {verdict}: {found.explain()}")
    click.echo("Dry run: nothing was run or recorded.")


def _would_reuse(the_plan: Any, env_impl: Any, tracking_uri: str | None) -> Any:
    """The reuse verdict of a dry run: the environment is built or found as a run would,
    since its lock is part of the fingerprint."""
    from reprorun.projects.fingerprint import check_reuse, fingerprint

    with progress_display() as progress:
        prepared = env_impl.prepare(the_plan.project, progress=progress)
        progress("")
    try:
        identity = fingerprint(the_plan, prepared)
        return check_reuse(current_app().store_at(tracking_uri), the_plan, identity)
    finally:
        if prepared.release:
            prepared.release()


def _show_params(uri: str, entry_point: str, as_json: bool, version: str | None) -> None:
    from reprorun.cli.render import echo_json, table
    from reprorun.projects.spec import load_project
    from reprorun.sources import resolve_source

    project = load_project(resolve_source(uri, version=version).directory)
    ep = project.entry_point(entry_point)
    if as_json:
        echo_json(
            {
                "entry_point": ep.name,
                "command": ep.command,
                "parameters": [
                    {
                        "name": p.name,
                        "type": p.type.value,
                        "default": p.default,
                        "required": p.required,
                        "choices": list(p.choices) if p.choices is not None else None,
                        "min": p.min,
                        "max": p.max,
                        "help": p.help,
                    }
                    for p in ep.parameters.values()
                ],
            }
        )
        return
    others = [name for name in project.entry_points if name != ep.name]
    click.echo(f"Entry point {ep.name!r}: {ep.command}")
    if not ep.parameters:
        click.echo("  (no declared parameters; any -P KEY=VALUE is passed as --KEY VALUE)")
    else:
        table(
            ["PARAMETER", "TYPE", "DEFAULT", "HELP"],
            [
                [
                    p.name,
                    p.describe_type(),
                    "(required)" if p.required else str(p.default),
                    p.help or "",
                ]
                for p in ep.parameters.values()
            ],
        )
    if others:
        click.echo(f"Other entry points: {', '.join(others)} (show one with -e NAME --help-params)")
