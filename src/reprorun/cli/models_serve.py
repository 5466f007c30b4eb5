"""``reprorun models serve`` and ``reprorun models predict``: a logged model answering MLflow's
scoring protocol, and batch scoring of a file, in the model's own environment."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from reprorun.cli._common import handle_errors, tracking_uri_option
from reprorun.cli.models import models

if TYPE_CHECKING:
    from reprorun.envs.base import PreparedEnv

ENV_MANAGERS = ["local", "uv", "virtualenv"]

model_option = click.option(
    "-m",
    "--model-uri",
    required=True,
    metavar="URI",
    help="runs:/<run_id>/<path>, models:/<name>/<version>, models:/<name>@<alias>, or a folder.",
)
env_manager_option = click.option(
    "--env-manager",
    type=click.Choice(ENV_MANAGERS),
    help="Where the model runs: its own environment built from its recorded requirements "
    "(uv or virtualenv; cached, so later starts are instant) or local (this "
    "interpreter) [default: uv when the model records requirements, else local].",
)


def _prepare(folder: Path, env_manager: str | None) -> PreparedEnv | None:
    """The model's environment (None: score in this process)."""
    from reprorun.serving import environment

    manager = env_manager or environment.default_manager(folder)
    if manager == "local":
        return None
    return environment.prepare(folder, manager, progress=lambda m: click.echo(m, err=True))


@models.command("serve")
@model_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("-p", "--port", type=click.IntRange(0, 65535), default=5000, show_default=True)
@env_manager_option
@click.option(
    "--max-request-mb",
    type=click.FloatRange(min=0, min_open=True),
    default=64,
    show_default=True,
    help="Larger request bodies get 413.",
)
@tracking_uri_option
@handle_errors
def serve(
    model_uri: str,
    host: str,
    port: int,
    env_manager: str | None,
    max_request_mb: float,
    tracking_uri: str | None,
) -> None:
    """Serve a model over MLflow's scoring protocol (POST /invocations; GET /ping, /health,
    /version) until Ctrl-C."""
    from reprorun.serving import model_folder, start_scorer

    folder = model_folder(model_uri, tracking_uri)
    prepared = _prepare(folder, env_manager)
    scorer = start_scorer(
        folder,
        prepared,
        host=host,
        port=port,
        max_body=int(max_request_mb * 1024 * 1024),
        echo=lambda line: click.echo(line, err=True),
    )
    where = f"{prepared.name} environment {prepared.env_hash}" if prepared else "this process"
    click.echo(f"Serving {model_uri} at {scorer.url} ({where}); Ctrl-C stops.", err=True)
    code = scorer.wait()
    if code not in (0, -15, 143):
        raise click.ClickException(f"The scoring process exited with status {code}.")


@models.command("predict")
@model_option
@click.option(
    "-i",
    "--input-path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV, JSON (a list of records or a scoring request), JSON lines or Parquet.",
)
@click.option(
    "-o",
    "--output-path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where the predictions go (.csv, .json, .jsonl) [default: JSON on stdout].",
)
@click.option(
    "-t",
    "--content-type",
    type=click.Choice(["csv", "json", "jsonl", "parquet"]),
    help="The input's format [default: from its extension].",
)
@click.option(
    "--output-format",
    type=click.Choice(["csv", "json", "jsonl"]),
    help="[default: from the output's extension].",
)
@click.option(
    "--batch-rows",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Rows scored at a time (memory stays bounded whatever the file's size).",
)
@env_manager_option
@tracking_uri_option
@handle_errors
def predict(
    model_uri: str,
    input_path: Path,
    output_path: Path | None,
    content_type: str | None,
    output_format: str | None,
    batch_rows: int,
    env_manager: str | None,
    tracking_uri: str | None,
) -> None:
    """Score a file with a model, streaming it in batches."""
    from reprorun.serving import model_folder, predict_file

    folder = model_folder(model_uri, tracking_uri)
    prepared = _prepare(folder, env_manager)
    try:
        count = predict_file(
            folder,
            prepared,
            input_path,
            output_path,
            input_format=content_type,
            output_format=output_format,
            rows=batch_rows,
        )
    finally:
        if prepared is not None and prepared.release is not None:
            prepared.release()
    if output_path is not None:
        click.echo(f"{count} predictions written to {output_path}", err=True)
