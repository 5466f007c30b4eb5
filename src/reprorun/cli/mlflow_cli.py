"""``reprorun mlflow-cli``: the ``mlflow`` commands the MLflow R package shells out to, on
reprorun's own client, and ``reprorun mlflow-env``, which points the R package at them.

The R package (CRAN 3.10.1) talks REST for everything but artifacts and projects: for
``mlflow_log_artifact``, ``mlflow_log_model``, ``mlflow_load_model`` and
``mlflow_download_artifacts`` it runs ``$MLFLOW_BIN artifacts ...``, and for ``mlflow_run()``
``$MLFLOW_BIN run ...``, parsing what MLflow's own command prints: the local path of a download
on stdout, and ``=== Run (ID '<id>') succeeded ===`` on stderr for a run. Inside ``reprorun run``
the command's ``MLFLOW_BIN`` names these (unless a real ``mlflow`` is installed).

Which store: ``MLFLOW_TRACKING_URI`` when it is a tracking server (http/https: the R package
passes its own tracking URI so), else ``REPRORUN_TRACKING_URI`` or reprorun's default store.
"""

from __future__ import annotations

import os
import sys

import click

from reprorun.cli._common import cli, current_app, handle_errors


def _tracking_uri() -> str | None:
    from reprorun.tracking import run_context

    mlflow_uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if mlflow_uri.startswith(("http://", "https://")):
        return mlflow_uri
    return run_context.tracking_uri()


def _artifact_uri(run_id: str, tracking_uri: str | None) -> str:

    return current_app().store_at(tracking_uri).get_run(run_id).info.artifact_uri


run_id_option = click.option(
    "--run-id",
    envvar="MLFLOW_RUN_ID",
    required=True,
    help="The run [env: MLFLOW_RUN_ID].",
)


@cli.group("mlflow-cli")
def mlflow_cli() -> None:
    """MLflow's `mlflow` command as the MLflow R package calls it (artifacts, run).

    The R package runs `$MLFLOW_BIN artifacts ...` for artifacts and models and
    `$MLFLOW_BIN run ...` for mlflow_run(); inside `reprorun run` MLFLOW_BIN names this
    command (unless a real `mlflow` is installed). By hand: eval "$(reprorun mlflow-env)".
    """


@mlflow_cli.group("artifacts")
def artifacts() -> None:
    """Log, list and download a run's artifacts."""


@artifacts.command("log-artifact")
@click.option("-l", "--local-file", required=True, type=click.Path(exists=True, dir_okay=False))
@run_id_option
@click.option("-a", "--artifact-path", help="Folder under the run's artifacts.")
@handle_errors
def log_artifact(local_file: str, run_id: str, artifact_path: str | None) -> None:
    """Copy a file into the run's artifacts."""
    from reprorun.tracking.artifacts import log_file

    uri = _tracking_uri()
    log_file(_artifact_uri(run_id, uri), local_file, artifact_path, tracking_uri=uri)
    click.echo(
        f"Logged artifact from local file {local_file} to artifact_path={artifact_path}", err=True
    )


@artifacts.command("log-artifacts")
@click.option("-l", "--local-dir", required=True, type=click.Path(exists=True, file_okay=False))
@run_id_option
@click.option("-a", "--artifact-path", help="Folder under the run's artifacts.")
@handle_errors
def log_artifacts(local_dir: str, run_id: str, artifact_path: str | None) -> None:
    """Copy a folder's contents into the run's artifacts (under --artifact-path)."""
    from reprorun.tracking.artifacts import log_dir

    uri = _tracking_uri()
    log_dir(_artifact_uri(run_id, uri), local_dir, artifact_path, tracking_uri=uri)
    click.echo(
        f"Logged artifact from local dir {local_dir} to artifact_path={artifact_path}", err=True
    )


@artifacts.command("list")
@click.option("-r", "--run-id", envvar="MLFLOW_RUN_ID", required=True, help="The run.")
@click.option("-a", "--artifact-path", help="A folder under the run's artifacts.")
@handle_errors
def list_command(run_id: str, artifact_path: str | None) -> None:
    """Print the run's artifacts (one level) as JSON, as MLflow does."""
    import json

    from reprorun.tracking.artifacts import list_artifacts

    uri = _tracking_uri()
    found = list_artifacts(_artifact_uri(run_id, uri), artifact_path, tracking_uri=uri)
    click.echo(
        json.dumps([{"path": f.path, "is_dir": f.is_dir, "file_size": f.file_size} for f in found])
    )


@artifacts.command("download")
@click.option("-r", "--run-id", help="The run (with --artifact-path).")
@click.option("-a", "--artifact-path", help="The artifact under the run (default: all).")
@click.option(
    "-u",
    "--artifact-uri",
    help="runs:/RUN_ID/PATH, models:/NAME/VERSION (or @ALIAS), or a location.",
)
@click.option("-d", "--dst-path", type=click.Path(file_okay=False), help="Where to put it.")
@handle_errors
def download_command(
    run_id: str | None, artifact_path: str | None, artifact_uri: str | None, dst_path: str | None
) -> None:
    """Download an artifact file or folder and print its local path."""
    import tempfile

    from reprorun.tracking.artifacts import download

    if (run_id is None) == (artifact_uri is None):
        raise click.UsageError("Give either --run-id (and --artifact-path) or --artifact-uri.")
    uri = _tracking_uri()
    if artifact_uri is not None:
        root, path = _split_artifact_uri(artifact_uri, uri)
    else:
        assert run_id is not None
        root, path = _artifact_uri(run_id, uri), artifact_path or ""
    dest = dst_path or tempfile.mkdtemp(prefix="reprorun-artifacts-")
    click.echo(str(download(root, path, dest, tracking_uri=uri).resolve()))


def _split_artifact_uri(artifact_uri: str, tracking_uri: str | None) -> tuple[str, str]:
    """A ``runs:/RUN_ID/path``, ``models:/...`` or artifact location as (artifact root, path
    under it)."""
    from reprorun.errors import UserInputError

    if artifact_uri.startswith("runs:/"):
        run_id, _, path = artifact_uri.removeprefix("runs:/").strip("/").partition("/")
        if not run_id:
            raise UserInputError(f"{artifact_uri!r} names no run: use runs:/RUN_ID/PATH.")
        return _artifact_uri(run_id, tracking_uri), path
    if artifact_uri.startswith("models:"):  # the R package's mlflow_load_model("models:/...")
        from reprorun.tracking.registry import resolve_model_uri

        artifact_uri = resolve_model_uri(artifact_uri, tracking_uri)
    parent, _, name = artifact_uri.rstrip("/").rpartition("/")
    if not parent or not name:
        raise UserInputError(f"Cannot download {artifact_uri!r}: name a file or folder in it.")
    return parent, name


@mlflow_cli.command(
    "run", context_settings={"ignore_unknown_options": True, "allow_extra_args": False}
)
@click.argument("uri")
@click.option("-e", "--entry-point", default="main", show_default=True)
@click.option("-v", "--version", "version")
@click.option("-P", "--param-list", "params", multiple=True, metavar="KEY=VALUE")
@click.option("--experiment-name")
@click.option("--experiment-id")
@click.option("-b", "--backend", default="local", show_default=True)
@click.option("-c", "--backend-config")
@click.option("--env-manager")
@click.option("--storage-dir", help="Accepted and ignored (reprorun keeps its own cache).")
@click.option("--run-name")
@click.option("--run-id", help="Not supported: reprorun always starts a new run.")
def run_command(
    uri: str,
    entry_point: str,
    version: str | None,
    params: tuple[str, ...],
    experiment_name: str | None,
    experiment_id: str | None,
    backend: str,
    backend_config: str | None,
    env_manager: str | None,
    storage_dir: str | None,
    run_name: str | None,
    run_id: str | None,
) -> None:
    """Run a project with `reprorun run`; end with MLflow's line `=== Run (ID '...') ... ===`
    on stderr (mlflow_run() in R reads the run id from it)."""
    import subprocess
    import tempfile
    from pathlib import Path

    if run_id is not None:
        raise click.UsageError("--run-id is not supported: reprorun always starts a new run.")
    argv = [sys.executable, "-m", "reprorun", "run", uri, "-e", entry_point, "-b", backend]
    for name, value in (
        ("--version", version),
        ("--experiment-name", experiment_name),
        ("--experiment-id", experiment_id),
        ("--backend-config", backend_config),
        ("--env-manager", env_manager),
        ("--run-name", run_name),
    ):
        if value is not None:
            argv += [name, value]
    for param in params:
        argv += ["-P", param]
    from reprorun.tracking import run_context

    parent = os.environ.get("MLFLOW_RUN_ID") or run_context.run_id()
    if parent and run_context.run_id():  # inside `reprorun run`: a nested step
        argv += ["--tag", f"mlflow.parentRunId={parent}"]
    tracking_uri = _tracking_uri()
    if tracking_uri:
        argv += ["--tracking-uri", tracking_uri]
    with tempfile.TemporaryDirectory(prefix="reprorun-mlflow-run-") as tmp:
        id_file = Path(tmp) / "run-id"
        argv += ["--run-id-file", str(id_file)]
        code = subprocess.call(argv)
        started = id_file.read_text().strip() if id_file.exists() else ""
    if started:
        outcome = "succeeded" if code == 0 else "failed"
        click.echo(f"=== Run (ID '{started}') {outcome} ===", err=True)
    sys.exit(code)


@cli.command("mlflow-env")
@handle_errors
def mlflow_env() -> None:
    """Print the `export` lines that make the MLflow R package use reprorun's `mlflow`
    command (for artifacts, models and mlflow_run()) in this shell:

        eval "$(reprorun mlflow-env)"

    Prints nothing when MLFLOW_BIN is set or a real `mlflow` command is on PATH.
    """
    import shlex

    from reprorun.envs.commands import mlflow_bin_env

    found = mlflow_bin_env(os.environ)
    if not found:
        click.echo(
            "reprorun mlflow-env: MLFLOW_BIN is set or `mlflow` is on PATH; leaving it.", err=True
        )
    for name, value in found.items():
        click.echo(f"export {name}={shlex.quote(value)}")
