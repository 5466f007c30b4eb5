"""Logging from any program: ``reprorun log param|metric|tag|artifact``, ``reprorun param``,
and ``reprorun r-client`` (the path of the R client shipped in the package).

Each command attaches to the run in ``REPRORUN_RUN_ID`` (``reprorun run`` sets it for the
command it runs) or ``--run-id``; none of them ever creates a run. The work is done by
``reprorun.tracking.fluent`` and ``reprorun.tracking.external``.
"""

from __future__ import annotations

import sys

import click

from reprorun.cli._common import cli, handle_errors

run_id_option = click.option(
    "--run-id",
    envvar="REPRORUN_RUN_ID",
    help="The run to log to [env: REPRORUN_RUN_ID, which `reprorun run` sets].",
)
tracking_option = click.option(
    "--tracking-uri",
    envvar="REPRORUN_TRACKING_URI",
    help="The run's store [env: REPRORUN_TRACKING_URI, which `reprorun run` sets].",
)


# `reprorun log metric loss -0.5`: a value starting with "-" is a value, not an option.
VALUES_MAY_BE_NEGATIVE = {"ignore_unknown_options": True}


@cli.group("log")
def log() -> None:
    """Log to the current run from any program (shell, R, Julia, ...).

    Inside `reprorun run`, the command's environment names the run; elsewhere pass --run-id
    (`reprorun runs create` makes a run).
    """


@log.command("param", context_settings=VALUES_MAY_BE_NEGATIVE)
@click.argument("key")
@click.argument("value")
@run_id_option
@tracking_option
@handle_errors
def log_param(key: str, value: str, run_id: str | None, tracking_uri: str | None) -> None:
    """Log parameter KEY=VALUE (again with the same value is fine; another value is refused)."""
    from reprorun.tracking import fluent

    fluent.attach(run_id, tracking_uri)
    fluent.log_param(key, value)


@log.command("metric", context_settings=VALUES_MAY_BE_NEGATIVE)
@click.argument("key")
@click.argument("value", required=False)
@click.option("--step", type=int, default=None, help="The step (default 0).")
@click.option("--timestamp", type=int, default=None, help="Milliseconds since 1970 (default now).")
@run_id_option
@tracking_option
@handle_errors
def log_metric(
    key: str,
    value: str | None,
    step: int | None,
    timestamp: int | None,
    run_id: str | None,
    tracking_uri: str | None,
) -> None:
    """Log metric KEY=VALUE; or, with KEY `-`, every line `KEY VALUE [STEP]` of the input.

    One process per value costs a process start; a loop logs much faster through one pipe:

        for e in 1 2 3; do echo "loss $(train $e) $e"; done | reprorun log metric -

    Lines are written in batches as they arrive (at least every half second).
    """
    from reprorun.tracking import fluent

    fluent.attach(run_id, tracking_uri)
    if key == "-":
        if value is not None:
            raise click.UsageError("With KEY '-', values come from the input: give no VALUE.")
        from reprorun.tracking.external import log_metric_lines

        count = log_metric_lines(sys.stdin.buffer, default_step=step)
        click.echo(f"reprorun: {count} metric values logged", err=True)
        return
    if value is None:
        raise click.UsageError(f"Missing VALUE for metric {key!r}.")
    from reprorun.tracking.external import parse_number

    fluent.log_metric(key, parse_number(key, value), step=step, timestamp=timestamp)


@log.command("tag", context_settings=VALUES_MAY_BE_NEGATIVE)
@click.argument("key")
@click.argument("value")
@run_id_option
@tracking_option
@handle_errors
def set_tag(key: str, value: str, run_id: str | None, tracking_uri: str | None) -> None:
    """Set tag KEY=VALUE on the run."""
    from reprorun.tracking import fluent

    fluent.attach(run_id, tracking_uri)
    fluent.set_tag(key, value)


@log.command("artifact")
@click.argument("path", type=click.Path(exists=True))
@click.option("--artifact-path", help="Folder under the run's artifacts (default: the top).")
@run_id_option
@tracking_option
@handle_errors
def log_artifact(
    path: str, artifact_path: str | None, run_id: str | None, tracking_uri: str | None
) -> None:
    """Copy a file, or a folder and its contents, into the run's artifacts."""
    from pathlib import Path

    from reprorun.tracking import fluent

    fluent.attach(run_id, tracking_uri)
    if Path(path).is_dir():
        fluent.log_artifacts(path, f"{artifact_path or ''}/{Path(path).name}".strip("/"))
    else:
        fluent.log_artifact(path, artifact_path)


@cli.command("param", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.option("--default", "default", help="The value when none was given.")
@click.option(
    "--type",
    "type_name",
    type=click.Choice(["string", "float", "int", "bool", "path", "uri"]),
    default="string",
    show_default=True,
    help="Check the value against this type.",
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@run_id_option
@tracking_option
@handle_errors
def param(
    name: str,
    default: str | None,
    type_name: str,
    args: tuple[str, ...],
    run_id: str | None,
    tracking_uri: str | None,
) -> None:
    """Print parameter NAME's value, and log it on the run.

    The value is the one `reprorun run -P NAME=...` gave the run, else one in ARGS (the
    program's own arguments: `-P NAME=V`, `--NAME V`), else --default. Pass "$@" as ARGS
    so a script takes `-P` outside reprorun too:

        cp=$(reprorun param cp --default 0.05 --type float -- "$@")
    """
    from reprorun.tracking.external import resolve_param

    value, logged = resolve_param(name, default, type_name, list(args), run_id, tracking_uri)
    if not logged:
        click.echo(f"reprorun param: not inside a run; {name}={value} is not logged.", err=True)
    click.echo(value)


@cli.command("r-client")
def r_client() -> None:
    """Print the path of the R client, for R's `source()`:

    source(system("reprorun r-client", intern = TRUE))
    """
    from reprorun.clients import R_CLIENT

    click.echo(str(R_CLIENT))
