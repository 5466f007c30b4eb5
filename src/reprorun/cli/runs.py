"""``reprorun runs``: list runs and show one in full."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import Any

import click

from reprorun.cli._common import cli, current_app, handle_errors, json_option, tracking_uri_option


@cli.group("runs")
def runs() -> None:
    """List and inspect runs."""


@runs.command("list")
@click.option("--experiment-name", help="Only this experiment's runs.")
@click.option("--experiment-id", help="Only this experiment's runs.")
@click.option(
    "--filter",
    "filter_string",
    metavar="FILTER",
    help="Only runs matching this MLflow search filter, e.g. "
    "\"metrics.rmse < 0.8 and params.max_depth = '3'\".",
)
@click.option(
    "--order-by",
    multiple=True,
    metavar="CLAUSE",
    help="Order by this clause, e.g. 'metrics.rmse ASC' (repeatable; then newest first).",
)
@click.option(
    "--max-results",
    "--limit",
    "max_results",
    default=100,
    show_default=True,
    type=click.IntRange(min=1, max=100_000),
    help="At most this many runs.",
)
@tracking_uri_option
@json_option
@handle_errors
def list_runs(
    experiment_name: str | None,
    experiment_id: str | None,
    filter_string: str | None,
    order_by: tuple[str, ...],
    max_results: int,
    tracking_uri: str | None,
    as_json: bool,
) -> None:
    """List runs, newest first (all experiments unless one is named).

    --filter and --order-by take the grammar of MLflow's search_runs
    (attributes.status, metrics.x, params.y, tags.z, ...).
    """
    from reprorun.backends.exit_reason import exit_fields, label
    from reprorun.cli.render import echo_json, fmt_duration, fmt_time, table
    from reprorun.errors import ResourceNotFound, UserInputError

    store = current_app().store_at(tracking_uri)
    if experiment_name and experiment_id:
        raise UserInputError("Give --experiment-name or --experiment-id, not both.")
    if experiment_name:
        exp = store.get_experiment_by_name(experiment_name)
        if exp is None:
            names = ", ".join(e.name for e in store.list_experiments())
            raise ResourceNotFound(
                f"No experiment named {experiment_name!r}. Experiments: {names}."
            )
        ids = [exp.experiment_id]
    elif experiment_id:
        ids = [store.get_experiment(experiment_id).experiment_id]
    else:
        ids = [e.experiment_id for e in store.list_experiments()]
    from reprorun.backends.status import refresh
    from reprorun.tracking.search_api import find_runs

    matching = find_runs(
        store, ids, filter_string, order_by=list(order_by) or None, max_results=max_results
    )
    from reprorun.projects.retry import group_attempts

    # The attempts of a retried run are one row: its latest attempt, with "attempt 2/3".
    grouped = group_attempts(refresh(store, r) for r in matching)
    found = [g.latest for g in grouped]
    if as_json:
        echo_json(
            [
                {
                    **g.latest.to_dict(),
                    **exit_fields(g.latest.data.tags),
                    **(g.to_dict() if g.retried else {}),
                }
                for g in grouped
            ]
        )
        return
    retried = any(g.retried for g in grouped)
    table(
        ["RUN ID", "NAME", "STATUS", "STARTED", "DURATION", *(["ATTEMPT"] if retried else [])],
        [
            [
                r.info.run_id,
                r.info.run_name,
                label(r.info.status, r.data.tags),  # FAILED (out-of-memory)
                fmt_time(r.info.start_time),
                fmt_duration(r.info.start_time, r.info.end_time),
                *([f"attempt {g.number}/{g.of}" if g.retried else ""] if retried else []),
            ]
            for g, r in zip(grouped, found, strict=True)
        ],
    )


@runs.command("show")
@click.argument("run_id")
@click.option(
    "--log-lines",
    default=20,
    show_default=True,
    type=click.IntRange(min=0),
    help="Lines of the log to show.",
)
@tracking_uri_option
@json_option
@handle_errors
def show_run(run_id: str, log_lines: int, tracking_uri: str | None, as_json: bool) -> None:
    """Show a run: status, parameters, metrics, tags, source, model, artifacts and log.

    RUN_ID may be shortened to any unique prefix of at least 4 characters.
    """
    import tempfile

    from reprorun.backends.exit_reason import describe, exit_fields, label
    from reprorun.backends.status import refresh
    from reprorun.cli.render import echo_json, fmt_duration, fmt_metric, fmt_time, key_values
    from reprorun.tracking.artifacts import download, is_remote, list_artifacts, local_path
    from reprorun.tracking.entities import SystemTags

    store = current_app().store_at(tracking_uri)
    run = refresh(store, store.get_run(store.resolve_run_id(run_id)))
    if as_json:
        echo_json({**run.to_dict(), **exit_fields(run.data.tags), **_attempt_fields(store, run)})
        return
    info, tags = run.info, run.data.tags
    experiment = store.get_experiment(info.experiment_id)
    click.echo(click.style(f"Run {info.run_id}", bold=True) + f"  {info.run_name}")
    source = tags.get(SystemTags.SOURCE_NAME, "-")
    commit = tags.get(SystemTags.GIT_COMMIT)
    if commit:
        source += f" @ {commit[:12]}"
        if tags.get(SystemTags.GIT_BRANCH):
            source += f" ({tags[SystemTags.GIT_BRANCH]})"
        if tags.get(SystemTags.GIT_DIRTY) == "true":
            source += " with uncommitted changes"
    key_values(
        [
            ("status", label(info.status, tags) + _failure_note(tags)),
            *([("ended", ended)] if (ended := describe(tags)) else []),
            ("experiment", f"{experiment.name} ({experiment.experiment_id})"),
            ("started", fmt_time(info.start_time)),
            ("duration", fmt_duration(info.start_time, info.end_time)),
            ("source", source),
            *([("link", link)] if (link := _source_link(tags)) else []),
            ("entry point", tags.get(SystemTags.ENTRY_POINT, "-")),
            ("command", tags.get(SystemTags.COMMAND, "-")),
            ("environment", tags.get(SystemTags.ENV, "-")),
            *([("fingerprint", fp)] if (fp := _fingerprint_line(tags)) else []),
            ("artifacts", info.artifact_uri),
        ]
    )
    _show_attempts(store, run)
    click.echo(click.style("Parameters", bold=True))
    key_values(sorted(run.data.params.items()))
    click.echo(click.style("Metrics (latest)", bold=True))
    key_values([(k, fmt_metric(v)) for k, v in sorted(run.data.metrics.items())])
    click.echo(click.style("Tags", bold=True))
    # The model history is shown under Models; its JSON would flood the tag list.
    key_values(sorted((k, v) for k, v in run.data.tags.items() if k != SystemTags.LOGGED_MODELS))
    models = json.loads(tags.get(SystemTags.LOGGED_MODELS, "[]"))
    if models:
        click.echo(click.style("Models", bold=True))
        for model in models:
            path = model.get("artifact_path")
            for flavor, spec in model.get("flavors", {}).items():
                if "r_version" in spec:  # saved by the R client (saveRDS)
                    click.echo(
                        f"  {path}/  {flavor}  {spec.get('class', '')}  R {spec['r_version']}"
                    )
                    click.echo(
                        f'    load in R with: readRDS("<download of {path}>/{spec["data"]}")'
                    )
                    continue
                if flavor == "crate":  # mlflow_log_model(carrier::crate(...)) in R
                    click.echo(f"  {path}/  crate  (R function, carrier)  {spec.get('model', '')}")
                    click.echo(
                        f'    load in R with: mlflow_load_model("runs:/{info.run_id}/{path}")'
                    )
                    continue
                packages = ", ".join(f"{k}=={v}" for k, v in spec.get("packages", {}).items())
                click.echo(
                    f"  {path}/  {flavor}  {spec.get('object_type', '')}  "
                    f"python {spec.get('python_version', '?')}  {packages}".rstrip()
                )
                click.echo(f'    load with: reprorun.load_model("runs:/{info.run_id}/{path}")')
    _show_logged_models(store, run)
    _show_registered(store, run)
    remote = getattr(store, "uri", None)
    files = [
        f
        for f in list_artifacts(info.artifact_uri, recursive=True, tracking_uri=remote)
        if not f.is_dir
    ]
    click.echo(click.style("Artifacts", bold=True))
    key_values([(f.path, f"{f.file_size} bytes") for f in files])
    log_path = tags.get(SystemTags.LOG_ARTIFACT)
    if log_path and log_lines:
        click.echo(click.style(f"Log (last {log_lines} lines of {log_path})", bold=True))
        with tempfile.TemporaryDirectory() as tmp:
            log_file = (
                download(info.artifact_uri, log_path, tmp, tracking_uri=remote)
                if is_remote(info.artifact_uri) and any(f.path == log_path for f in files)
                else local_path(info.artifact_uri, log_path)
            )
            for line in _tail(log_file, log_lines):
                click.echo(f"  {line}")


def _show_logged_models(store: Any, run: Any) -> None:
    """MLflow 3's logged models of the run (``mlflow.<flavor>.log_model``), with their files."""
    from reprorun.cli.render import key_values
    from reprorun.errors import ReprorunError

    try:
        models = store.search_logged_models(
            [run.info.experiment_id],
            filter_string=f"source_run_id = '{run.info.run_id}'",
            max_results=100,
        )
    except ReprorunError:  # a server without logged models (MLflow 2)
        return
    if not models:
        return
    click.echo(click.style("Logged models", bold=True))
    key_values(
        [(m.name, f"{m.model_id}  {m.status.value}  {m.model_type or ''}".rstrip()) for m in models]
    )
    for m in models:
        click.echo(f"    runs:/{run.info.run_id}/{m.name} -> {m.artifact_location}")


def _show_registered(store: Any, run: Any) -> None:
    """The model registry's versions made from the run (``reprorun models register``)."""
    from reprorun.cli.render import key_values
    from reprorun.errors import ReprorunError

    try:
        found = store.search_model_versions(f"run_id = '{run.info.run_id}'", max_results=100)
    except ReprorunError:  # a server without the registry
        return
    if not found:
        return
    click.echo(click.style("Registered", bold=True))
    key_values(
        [
            (
                f"models:/{v.name}/{v.version}",
                "  ".join(
                    [v.current_stage if v.current_stage != "None" else ""]
                    + [f"@{a}" for a in v.aliases]
                ).strip(),
            )
            for v in found
        ]
    )


def _attempt_fields(store: Any, run: Any) -> dict[str, Any]:
    """A retried run's attempts, for --json (nothing for a run made without retries)."""
    from reprorun.projects.retry import attempts_of

    attempts = attempts_of(store, run)
    return attempts.to_dict() if attempts.retried else {}


def _show_attempts(store: Any, run: Any) -> None:
    """The attempts of a retried run, oldest first, this one marked."""
    from reprorun.backends.exit_reason import label
    from reprorun.cli.render import fmt_duration
    from reprorun.projects.retry import attempt_number, attempts_of

    attempts = attempts_of(store, run)
    if not attempts.retried:
        return
    made = f"{len(attempts.runs)} made, up to {attempts.of}"
    click.echo(click.style(f"Attempts ({made})", bold=True))
    for attempt in attempts.runs:
        info = attempt.info
        this = "  <- this run" if info.run_id == run.info.run_id else ""
        click.echo(
            f"  {attempt_number(attempt)}  {info.run_id}  {label(info.status, attempt.data.tags)}"
            f"  {fmt_duration(info.start_time, info.end_time)}{this}"
        )


def _failure_note(tags: dict[str, str]) -> str:
    from reprorun.backends.base import FAILURE_TAG

    reason = tags.get(FAILURE_TAG)
    return f"  ({reason})" if reason else ""


def _source_link(tags: dict[str, str]) -> str | None:
    from reprorun.sources.base import commit_url
    from reprorun.tracking.entities import SystemTags

    repo, commit = tags.get(SystemTags.GIT_REPO_URL), tags.get(SystemTags.GIT_COMMIT)
    if not repo or not commit:
        return None
    return commit_url(repo, commit, tags.get(SystemTags.SOURCE_SUBDIRECTORY))


def _tail(path: Path, lines: int) -> list[str]:
    if not path.is_file():
        return ["(no log yet)"]
    with open(path, encoding="utf-8", errors="replace") as fh:
        return [line.rstrip("\n") for line in deque(fh, maxlen=lines)]


def _fingerprint_line(tags: dict[str, str]) -> str | None:
    """The run's fingerprint and its parts, shortened: `abc123... (source 1f2e..., env
    9a8b..., data: train=77aa...)`."""
    from reprorun.projects.fingerprint import PARTS_TAG, TAG

    digest = tags.get(TAG)
    if not digest:
        return None
    try:
        parts = json.loads(tags.get(PARTS_TAG, "{}"))
    except ValueError:
        return digest
    pieces = [f"source {str(parts.get('source_tree', ''))[:12]}"]
    pieces.append(f"env {str(parts.get('env', ''))[:12]}")
    data = parts.get("data") or {}
    if data:
        pieces.append("data: " + ", ".join(f"{k}={str(v)[:12]}" for k, v in sorted(data.items())))
    return f"{digest}  ({'; '.join(pieces)})"


@runs.command("create")
@click.option("--experiment-name", help="Experiment to record in (created if missing).")
@click.option("--run-name", help="A name for the run (default: generated).")
@tracking_uri_option
@handle_errors
def create_run(experiment_name: str | None, run_name: str | None, tracking_uri: str | None) -> None:
    """Start a RUNNING run for a program outside `reprorun run`; print its id.

    export REPRORUN_RUN_ID=$(reprorun runs create --run-name by-hand)
    reprorun log metric loss 0.3 ...
    reprorun runs end "$REPRORUN_RUN_ID"
    """
    from reprorun._utils import current_user

    store = current_app().store_at(tracking_uri)
    experiment_id = store.get_or_create_experiment(experiment_name) if experiment_name else "0"
    run = store.create_run(
        experiment_id,
        run_name=run_name,
        user_id=current_user(),
        tags={"mlflow.source.type": "LOCAL", "mlflow.source.name": "reprorun runs create"},
    )
    click.echo(run.info.run_id)


@runs.command("end")
@click.argument("run_id")
@click.option(
    "--status",
    type=click.Choice(["FINISHED", "FAILED", "KILLED"]),
    default="FINISHED",
    show_default=True,
)
@tracking_uri_option
@handle_errors
def end_run(run_id: str, status: str, tracking_uri: str | None) -> None:
    """End a RUNNING run with STATUS (a run already ended is left as it is, with a message)."""
    from reprorun.tracking.entities import RunStatus, now_ms

    store = current_app().store_at(tracking_uri)
    run_id = store.resolve_run_id(run_id)
    ended = store.update_run(
        run_id, status=RunStatus(status), end_time=now_ms(), only_if_status=RunStatus.RUNNING
    )
    if not ended:
        current = store.get_run(run_id).info.status.value
        click.echo(f"Run {run_id} had already ended ({current}); left as it is.", err=True)


@runs.command("status")
@click.argument("run_id")
@tracking_uri_option
@json_option
@handle_errors
def run_status(run_id: str, tracking_uri: str | None, as_json: bool) -> None:
    """Show a run's status as its backend sees it now (a run whose job ended, or whose
    supervisor died, is closed first).

    Exit code: 0 FINISHED, 3 FAILED, 4 KILLED, 5 not ended yet (RUNNING or SCHEDULED); 1 and 2
    are errors, as for every command."""
    import sys

    from reprorun.backends.base import FAILURE_TAG, JOB_ID_TAG, JOB_URL_TAG
    from reprorun.backends.exit_reason import exit_fields
    from reprorun.backends.status import refresh
    from reprorun.cli.render import echo_json, fmt_duration, key_values
    from reprorun.tracking.entities import SystemTags

    store = current_app().store_at(tracking_uri)
    run = refresh(store, store.get_run(store.resolve_run_id(run_id)))
    info, tags = run.info, run.data.tags
    facts = {
        "run_id": info.run_id,
        "status": info.status.value,
        "backend": tags.get(SystemTags.BACKEND, "local"),
        "job_id": tags.get(JOB_ID_TAG),
        "job_url": tags.get(JOB_URL_TAG),
        **exit_fields(tags),
        "reason": tags.get(FAILURE_TAG),
        "duration": fmt_duration(info.start_time, info.end_time),
    }
    if as_json:
        echo_json(facts)
    else:
        key_values([(k.replace("_", " "), v) for k, v in facts.items() if v is not None])
    sys.exit(STATUS_EXIT_CODES.get(info.status.value, 5))


STATUS_EXIT_CODES = {"FINISHED": 0, "FAILED": 3, "KILLED": 4}


@runs.command("logs")
@click.argument("run_id")
@click.option("-f", "--follow", is_flag=True, help="Keep printing the log until the run ends.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    default=1.0,
    show_default=True,
    help="With --follow: seconds between looks.",
)
@tracking_uri_option
@handle_errors
def run_logs(run_id: str, follow: bool, interval: float, tracking_uri: str | None) -> None:
    """Print a run's log (its command's output), from its backend while it runs."""
    import sys

    from reprorun.backends.base import follow as follow_log
    from reprorun.backends.heartbeat import Watched
    from reprorun.backends.status import attach

    store = current_app().store_at(tracking_uri)
    run = store.get_run(store.resolve_run_id(run_id))
    handle = attach(store, run)
    out = sys.stdout.buffer

    def write(chunk: bytes) -> None:
        out.write(chunk)
        out.flush()

    if follow:
        try:
            status = follow_log(Watched(store, handle), write, interval)  # node-lost ends it
        except KeyboardInterrupt:
            sys.exit(130)  # stop following; the run goes on
        click.echo(f"reprorun: run {run.info.run_id} {status.value}", err=True)
        return
    handle.get_status()  # closes a stale run first, so its stored log is the one shown
    write(handle.logs())


@runs.command("kill")
@click.argument("run_id")
@click.option("--force", is_flag=True, help="Do not wait for the grace period: stop it now.")
@tracking_uri_option
@handle_errors
def kill_run(run_id: str, force: bool, tracking_uri: str | None) -> None:
    """Stop a run on whatever backend runs it and mark it KILLED (its log is kept). A run
    that has already ended is left as it is."""
    from reprorun.backends.status import attach

    store = current_app().store_at(tracking_uri)
    run = store.get_run(store.resolve_run_id(run_id))
    handle = attach(store, run)
    status = handle.get_status()
    if status.is_terminal:
        click.echo(f"Run {run.info.run_id} has already ended ({status.value}); nothing to stop.")
        return
    handle.cancel(force=force)
    click.echo(f"Run {run.info.run_id} {handle.get_status().value}.")
