"""``reprorun experiments``: list and create experiments."""

from __future__ import annotations

import click

from reprorun.cli._common import cli, current_app, handle_errors, json_option, tracking_uri_option


@cli.group("experiments")
def experiments() -> None:
    """List and create experiments."""


@experiments.command("list")
@tracking_uri_option
@json_option
@handle_errors
def list_experiments(tracking_uri: str | None, as_json: bool) -> None:
    """List active experiments."""
    from reprorun.cli.render import echo_json, fmt_time, table

    found = current_app().store_at(tracking_uri).list_experiments()
    if as_json:
        echo_json([e.to_dict() for e in found])
        return
    table(
        ["ID", "NAME", "CREATED", "ARTIFACT LOCATION"],
        [[e.experiment_id, e.name, fmt_time(e.creation_time), e.artifact_location] for e in found],
    )


@experiments.command("create")
@click.argument("name")
@click.option(
    "--artifact-location",
    help="Where the experiment's runs keep artifacts: a folder, file:// URI or s3://BUCKET/PREFIX.",
)
@tracking_uri_option
@handle_errors
def create_experiment(name: str, artifact_location: str | None, tracking_uri: str | None) -> None:
    """Create an experiment called NAME and print its id."""
    from reprorun.errors import ResourceAlreadyExists, UserInputError

    if artifact_location and ":" in artifact_location.split("/", 1)[0]:  # a URI, not a folder
        from reprorun.config import artifact_location as checked

        artifact_location = checked(artifact_location, "--artifact-location", proxied=True)
    try:
        exp_id = current_app().store_at(tracking_uri).create_experiment(name, artifact_location)
    except ResourceAlreadyExists as exc:
        raise UserInputError(str(exc)) from exc
    click.echo(exp_id)
