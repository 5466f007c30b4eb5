"""What ``reprorun run --dry-run`` and ``--help-params`` show: the plan (parameters, command,
environment, whether a run would be reused) and an entry point's parameters, as text or JSON."""

from __future__ import annotations

from typing import Any

import click

from reprorun.cli._common import current_app


def show_plan(
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
    from reprorun.cli.render import progress_display
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


def show_params(uri: str, entry_point: str, as_json: bool, version: str | None) -> None:
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
