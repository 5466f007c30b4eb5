"""``reprorun env``: the cache of built environments."""

from __future__ import annotations

import click

from reprorun.cli._common import cli, handle_errors, json_option


@cli.group("env")
def env() -> None:
    """List and prune cached environments."""


@env.command("list")
@json_option
@handle_errors
def list_envs(as_json: bool) -> None:
    """Cached environments, most recently used first."""
    from reprorun.cli.render import echo_json, fmt_time, table
    from reprorun.envs.cache import list_envs as cached

    found = cached()
    if as_json:
        echo_json([e.to_dict() for e in found])
        return
    table(
        ["MANAGER", "KEY", "PYTHON", "LAST USED", "SIZE", "SPEC"],
        [
            [
                e.manager,
                e.key,
                e.python,
                fmt_time(int(e.last_used * 1000)),
                f"{e.size_bytes / 1e6:.1f} MB",
                e.source,
            ]
            for e in found
        ],
    )


@env.command("prune")
@click.option(
    "--older-than",
    type=click.FloatRange(min=0),
    metavar="DAYS",
    help="Only environments not used for this many days [default: all].",
)
@handle_errors
def prune(older_than: float | None) -> None:
    """Remove cached environments (runs rebuild what they need)."""
    from reprorun.envs.cache import prune as prune_cache

    removed = prune_cache(older_than)
    for path in removed:
        click.echo(f"removed {path}")
    click.echo(f"{len(removed)} environment(s) removed")
