"""``reprorun rerun``: run a recorded run again from its commit, parameters and lock, and
tell whether it reproduced."""

from __future__ import annotations

import sys

import click

from reprorun.cli._common import cli, current_app, handle_errors, json_option, tracking_uri_option
from reprorun.cli.run import execute


@cli.command("rerun")
@click.argument("run_id")
@click.option(
    "-P",
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a parameter (repeatable).",
)
@click.option("--experiment-name", help="Record in this experiment [default: the original's].")
@click.option("--run-name", help="A name for the new run.")
@click.option(
    "--verify",
    is_flag=True,
    help="Compare the new run's final metrics with the original's; exit 3 if they differ. "
    "The result is tagged on both runs (reprorun.verify).",
)
@click.option(
    "--tolerance",
    type=click.FloatRange(min=0),
    default=1e-6,
    show_default=True,
    help="With --verify: |new - original| <= tolerance * max(1, |original|).",
)
@tracking_uri_option
@json_option
@handle_errors
def rerun_command(
    run_id: str,
    params: tuple[str, ...],
    experiment_name: str | None,
    run_name: str | None,
    verify: bool,
    tolerance: float,
    tracking_uri: str | None,
    as_json: bool,
) -> None:
    """Run RUN_ID again: same commit (and stored uncommitted changes), same entry point, same
    parameters unless overridden, same environment lock. The new run is tagged
    reprorun.rerunOf=RUN_ID. With --verify, tell whether it reproduced the original."""
    from reprorun.projects.params import parse_param_args
    from reprorun.projects.rerun import rerun

    if as_json and not verify:
        raise click.UsageError("--json goes with --verify.")
    overrides = parse_param_args(params)
    submitted = execute(
        lambda **callbacks: rerun(
            run_id,
            overrides,
            experiment_name=experiment_name,
            run_name=run_name,
            tracking_uri=tracking_uri,
            **callbacks,
        )
    )
    if verify:
        _report_verification(run_id, submitted.run_id, tolerance, tracking_uri, as_json)


def _report_verification(
    run_id: str, rerun_id: str, tolerance: float, tracking_uri: str | None, as_json: bool
) -> None:
    from reprorun.cli.render import echo_json, fmt_metric, table
    from reprorun.projects.rerun import verify

    store = current_app().store_at(tracking_uri)
    result = verify(store, store.resolve_run_id(run_id), rerun_id, tolerance)
    if as_json:
        echo_json(result.to_dict())
    else:
        table(
            ["METRIC", "ORIGINAL", "RERUN", "DIFFERENCE", "REPRODUCED"],
            [
                [
                    m.key,
                    "-" if m.original is None else fmt_metric(m.original),
                    "-" if m.rerun is None else fmt_metric(m.rerun),
                    "-" if m.difference is None else f"{m.difference:.3g}",
                    "yes" if m.reproduced else "NO",
                ]
                for m in result.metrics
            ],
        )
        for line in result.fingerprint_differences:
            click.echo(f"reprorun: note: the rerun differs from the original in {line}", err=True)
        if not result.metrics:
            click.echo("reprorun: neither run logged a metric: nothing to compare.", err=True)
        verdict = "reproduced" if result.reproduced else "did NOT reproduce"
        click.echo(
            f"reprorun: run {rerun_id} {verdict} run {result.original} (tolerance {tolerance:g})",
            err=True,
        )
    if not result.reproduced:
        sys.exit(3)
