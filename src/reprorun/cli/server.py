"""``reprorun server``: the tracking server; ``reprorun server-user``: its password file."""

from __future__ import annotations

import click

from reprorun.cli._common import cli, current_app, handle_errors


@cli.command("server")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port", default=5000, show_default=True, type=int, help="Port to bind (0: any free port)."
)
@click.option(
    "--backend-store-uri",
    metavar="URI",
    help="Where runs are stored: a SQLite file or a SQLAlchemy URL (postgresql://...). "
    "Default: the embedded store (REPRORUN_TRACKING_URI or ~/.reprorun/store.db).",
)
@click.option(
    "--artifacts-destination",
    metavar="DIR|S3_URI",
    help="Where new experiments keep artifacts: a folder or s3://BUCKET/PREFIX (docs/s3.md); "
    "default: artifacts/ beside the store.",
)
@click.option(
    "--serve-artifacts/--no-serve-artifacts",
    default=True,
    show_default=True,
    help="Proxy artifact uploads and downloads (clients see mlflow-artifacts:/ URIs).",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Processes serving requests on the one port, each with its own database "
    "connections (up to 15 on PostgreSQL); a dead one is replaced, SIGTERM stops all. For a "
    "shared server on PostgreSQL, about one per core. SQLite takes several too (WAL: one "
    "writer at a time, so more workers add little there).",
)
@click.option(
    "--auth-token",
    help="Require this bearer token on every request (env: REPRORUN_SERVER_TOKEN); at least "
    "16 characters: an empty or short token is an error, never 'no authentication'.",
)
@click.option(
    "--basic-auth-file",
    type=click.Path(exists=True, dir_okay=False),
    help="Require basic auth against this file of hashed passwords (reprorun server-user add).",
)
@click.option(
    "--allowed-hosts",
    metavar="NAMES",
    help="Comma-separated host names requests may use (default: 127.0.0.1, localhost and "
    "::1 when bound to loopback, any otherwise; '*' for any).",
)
@click.option(
    "--max-request-mb",
    default=16,
    show_default=True,
    type=click.IntRange(1),
    help="Largest JSON request body accepted.",
)
@handle_errors
def server(
    host: str,
    port: int,
    backend_store_uri: str | None,
    artifacts_destination: str | None,
    serve_artifacts: bool,
    workers: int,
    auth_token: str | None,
    basic_auth_file: str | None,
    max_request_mb: int,
    allowed_hosts: str | None,
) -> None:
    """Serve MLflow's REST API (tracking, logged models, artifact proxy) over a store.

    MLflow clients work unchanged: MLFLOW_TRACKING_URI=http://127.0.0.1:5000. The OpenAPI
    description is at /openapi.json, liveness at /health.
    """
    from reprorun.config import server_token
    from reprorun.server.app import ServerConfig
    from reprorun.server.auth import Authenticator, check_token
    from reprorun.server.run import pick_port, serve

    if auth_token is None:
        auth_token = server_token()
        check_token(auth_token, "REPRORUN_SERVER_TOKEN")
    # Refused here, before anything listens: a bad secret must not start an open server.
    Authenticator.from_options(auth_token, basic_auth_file)
    config = ServerConfig(
        allowed_hosts=_allowed_hosts(allowed_hosts, host),
        backend_store_uri=backend_store_uri,
        artifacts_destination=artifacts_destination,
        serve_artifacts=serve_artifacts,
        auth_token=auth_token,
        basic_auth_file=basic_auth_file,
        max_request_bytes=max_request_mb * 1024 * 1024,
    )
    if host not in ("127.0.0.1", "localhost", "::1") and not (auth_token or basic_auth_file):
        click.echo(
            f"Warning: serving on {host} without authentication; anyone who can reach it can "
            "read and change every run. Consider --auth-token or --basic-auth-file.",
            err=True,
        )
    port = pick_port(host, port)  # a clear error if taken; --port 0: the free port chosen
    shown = f"[{host}]" if ":" in host else host
    click.echo(
        f"reprorun server {shown}:{port} (MLFLOW_TRACKING_URI=http://{shown}:{port})", err=True
    )
    serve(config, host=host, port=port, workers=workers)


def _allowed_hosts(option: str | None, bind_host: str) -> tuple[str, ...]:
    from reprorun.server.app import default_allowed_hosts

    if option is None:
        return default_allowed_hosts(bind_host)
    names = tuple(n.strip() for n in option.split(",") if n.strip())
    return () if "*" in names else names


@cli.group("server-user")
def server_user() -> None:
    """Manage the server's basic-auth password file."""


@server_user.command("add")
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("user")
@click.password_option(help="The password (prompted, twice, when not given).")
@handle_errors
def add(file: str, user: str, password: str) -> None:
    """Add USER to FILE (or change its password); passwords are stored scrypt-hashed."""
    from pathlib import Path

    from reprorun.server.auth import add_user

    add_user(Path(file), user, password)
    click.echo(f"{user} added to {file}")


@cli.command("ui")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port", default=5000, show_default=True, type=int, help="Port to bind (0: any free port)."
)
@click.option(
    "--backend-store-uri",
    metavar="URI",
    help="Store to browse (default: the embedded store, REPRORUN_TRACKING_URI or "
    "~/.reprorun/store.db).",
)
@click.option("--browser/--no-browser", default=True, show_default=True, help="Open the page.")
@handle_errors
def ui(host: str, port: int, backend_store_uri: str | None, browser: bool) -> None:
    """Browse, chart and compare runs in the web browser.

    Serves the UI (and MLflow's REST API) over the embedded store on 127.0.0.1 and opens
    the page. When the tracking URI names a server, opens that server's page instead:
    `reprorun server` serves the same UI.
    """
    from reprorun.server.app import ServerConfig
    from reprorun.server.run import open_browser_when_ready, pick_port, serve

    target = current_app().tracking(backend_store_uri)
    if target.is_remote:
        click.echo(f"The UI of {target.uri} is at {target.uri.rstrip('/')}/", err=True)
        if browser:
            import webbrowser

            webbrowser.open(target.uri.rstrip("/") + "/")
        return
    port = pick_port(host, port)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"
    click.echo(f"reprorun UI at {url} over {target.uri} (Ctrl-C stops it)", err=True)
    if browser:
        open_browser_when_ready(url, host, port)
    config = ServerConfig(
        backend_store_uri=backend_store_uri, allowed_hosts=_allowed_hosts(None, host)
    )
    serve(config, host=host, port=port)
