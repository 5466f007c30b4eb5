"""``reprorun work``: the working copies that git and archive runs ran in."""

from __future__ import annotations

import click

from reprorun.cli._common import cli, current_app, handle_errors, tracking_uri_option


@cli.group("work")
def work() -> None:
    """Manage runs' working copies (~/.reprorun/work/<run_id>)."""


@work.command("prune")
@click.option(
    "--older-than",
    type=click.FloatRange(min=0),
    default=7.0,
    show_default=True,
    metavar="DAYS",
    help="Remove working copies untouched for this many days.",
)
@tracking_uri_option
@handle_errors
def prune(older_than: float, tracking_uri: str | None) -> None:
    """Remove old working copies; those of RUNNING runs are kept."""
    from reprorun.sources.work import prune_work
    from reprorun.tracking.entities import ViewType

    store = current_app().store_at(tracking_uri)
    experiments = [e.experiment_id for e in store.list_experiments()]
    running: set[str] = set()
    token = None
    while True:
        page = store.search_runs(
            experiments,
            "attributes.status = 'RUNNING'",
            run_view_type=ViewType.ALL,
            max_results=10_000,
            page_token=token,
        )
        running |= {r.info.run_id for r in page}
        token = page.token
        if not token:
            break
    removed = prune_work(older_than, running)
    for path in removed:
        click.echo(f"removed {path}")
    click.echo(f"{len(removed)} working cop{'y' if len(removed) == 1 else 'ies'} removed")
