"""``reprorun store``: create or check the tracking store, or replace a broken one."""

from __future__ import annotations

import click

from reprorun.cli._common import cli, handle_errors, tracking_uri_option


@cli.group("store")
def store() -> None:
    """Create or check the tracking store."""


@store.command("init")
@click.option(
    "--force",
    is_flag=True,
    help="If the store file is damaged or not a store (e.g. truncated to 0 bytes), move it "
    "aside (renamed <file>.broken-<time>, nothing is deleted) and create a new empty store.",
)
@tracking_uri_option
@handle_errors
def init(force: bool, tracking_uri: str | None) -> None:
    """Create the store if it does not exist, or check an existing one.

    reprorun creates a missing store by itself; an existing file that is not a store is
    refused, so that a truncated store is never silently replaced by an empty one. This
    command is how to ask for a new store over it.
    """
    from reprorun.tracking.store import init_store

    done = init_store(tracking_uri, force=force)
    if done.moved_to:
        click.echo(f"Moved the broken store file to {done.moved_to}")
    if done.created:
        click.echo(f"Created a new empty store: {done.location}")
    else:
        click.echo(f"{done.location} is a usable store; nothing changed.")
