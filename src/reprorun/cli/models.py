"""``reprorun models``: the model registry (register, list, show, alias, tag, delete); the
serving commands (``serve``, ``predict``) are in ``models_serve``. The logic is in
``reprorun.tracking.registry``; this module reads options and prints."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from reprorun.cli._common import cli, current_app, handle_errors, json_option, tracking_uri_option

if TYPE_CHECKING:
    from reprorun.tracking.registry import Origin
    from reprorun.tracking.registry_entities import ModelVersion, RegisteredModel


@cli.group("models")
def models() -> None:
    """Register, find, serve and score models (MLflow's model registry: models:/NAME/VERSION,
    models:/NAME@ALIAS)."""


def _pairs(items: tuple[str, ...], what: str) -> dict[str, str]:
    result = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE.", param_hint=what)
        result[key] = value
    return result


def version_dict(v: ModelVersion, origin: Origin | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {
        "name": v.name,
        "version": v.version,
        "aliases": v.aliases,
        "stage": v.current_stage,
        "source": v.source,
        "download_uri": v.download_uri,
        "run_id": v.run_id,
        "model_id": v.model_id,
        "description": v.description,
        "user_id": v.user_id,
        "tags": v.tags,
        "created": v.creation_timestamp,
        "updated": v.last_updated_timestamp,
    }
    if origin is not None:
        found.update(run_name=origin.run_name, commit=origin.commit, lock=origin.lock)
    return found


def model_dict(m: RegisteredModel) -> dict[str, Any]:
    return {
        "name": m.name,
        "description": m.description,
        "tags": m.tags,
        "aliases": m.aliases,
        "latest_version": max((v.version for v in m.latest_versions), default=None),
        "created": m.creation_timestamp,
        "updated": m.last_updated_timestamp,
    }


@models.command("register")
@click.argument("model_uri")
@click.option("-n", "--name", required=True, help="The registered model (created if missing).")
@click.option("--alias", "aliases", multiple=True, help="Point this alias at the new version.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="A tag of the version.")
@click.option("--description", help="The version's description.")
@tracking_uri_option
@json_option
@handle_errors
def register(
    model_uri: str,
    name: str,
    aliases: tuple[str, ...],
    tags: tuple[str, ...],
    description: str | None,
    tracking_uri: str | None,
    as_json: bool,
) -> None:
    """Register MODEL_URI as the next version of a model: RUN_ID/PATH (a run id or 4+ of its
    first hex digits), runs:/RUN_ID/PATH, models:/m-<logged model id>, models:/NAME/VERSION,
    or an artifact location."""
    from reprorun.cli.render import echo_json
    from reprorun.tracking.registry import register_version
    from reprorun.tracking.store.sql.registry import check_alias

    for alias in aliases:  # before anything is registered
        check_alias(alias)
    store = current_app().store_at(tracking_uri)
    done = register_version(
        model_uri, name, tags=_pairs(tags, "--tag"), description=description, store=store
    )
    version = done.version
    for alias in aliases:
        store.set_registered_model_alias(name, alias, version.version)
    if aliases:
        version = store.get_model_version(name, version.version)
    if as_json:
        echo_json({**version_dict(version), "created_model": done.created_model})
        return
    if done.created_model:
        click.echo(f"Created registered model {name!r}.")
    origin = f" from run {version.run_id}" if version.run_id else ""
    click.echo(
        f"Registered {name} version {version.version}{origin}: models:/{name}/{version.version}"
    )
    for alias in aliases:
        click.echo(f"  models:/{name}@{alias}")


@models.command("list")
@click.option("--filter", "filter_string", help="MLflow's filter: name LIKE 'iris%', tags.k = 'v'.")
@click.option("--max-results", type=click.IntRange(min=1), help="At most this many models.")
@tracking_uri_option
@json_option
@handle_errors
def list_models(
    filter_string: str | None, max_results: int | None, tracking_uri: str | None, as_json: bool
) -> None:
    """List registered models with their newest version and aliases."""
    from reprorun.cli.render import echo_json, fmt_time, table
    from reprorun.tracking.registry import all_models

    found = all_models(current_app().store_at(tracking_uri), filter_string, max_results)
    if as_json:
        echo_json([model_dict(m) for m in found])
        return
    table(
        ["NAME", "LATEST", "ALIASES", "UPDATED", "DESCRIPTION"],
        [
            [
                m.name,
                str(model_dict(m)["latest_version"] or "-"),
                ", ".join(f"{a}→{v}" for a, v in sorted(m.aliases.items())) or "-",
                fmt_time(m.last_updated_timestamp),
                (m.description or "").splitlines()[0] if m.description else "",
            ]
            for m in found
        ],
    )


@models.command("show")
@click.argument("name")
@click.option("--version", "version", help="Only this version (a number or an alias).")
@tracking_uri_option
@json_option
@handle_errors
def show(name: str, version: str | None, tracking_uri: str | None, as_json: bool) -> None:
    """Show a registered model and its versions: aliases, stage, the run and commit each
    version came from."""
    from reprorun.cli.render import echo_json, fmt_time, table
    from reprorun.tracking.registry import all_versions, origin, resolve_version

    store = current_app().store_at(tracking_uri)
    model = store.get_registered_model(name)
    if version is not None:
        uri = f"models:/{name}/{version}" if version.isdigit() else f"models:/{name}@{version}"
        versions = [resolve_version(uri, store=store)]
    else:
        versions = all_versions(store, name)
    origins = {v.version: origin(store, v) for v in versions}
    if as_json:
        echo_json(
            {
                **model_dict(model),
                "versions": [version_dict(v, origins[v.version]) for v in versions],
            }
        )
        return
    click.echo(f"{model.name}  (created {fmt_time(model.creation_timestamp)})")
    if model.description:
        click.echo(model.description)
    for key, value in sorted(model.tags.items()):
        click.echo(f"  {key}={value}")
    table(
        ["VERSION", "ALIASES", "STAGE", "RUN", "COMMIT", "CREATED", "SOURCE"],
        [
            [
                str(v.version),
                ", ".join(v.aliases) or "-",
                v.current_stage,
                _run_label(origins[v.version]),
                (origins[v.version].commit or "-")[:12],
                fmt_time(v.creation_timestamp),
                v.source,
            ]
            for v in versions
        ],
    )


def _run_label(o: Origin) -> str:
    if not o.run_id:
        return "-"
    return f"{o.run_id[:8]} ({o.run_name})" if o.run_name else o.run_id[:8]


@models.command("alias")
@click.argument("name")
@click.argument("alias")
@click.argument("version", required=False)
@click.option("--delete", is_flag=True, help="Remove the alias instead.")
@tracking_uri_option
@handle_errors
def alias(
    name: str, alias: str, version: str | None, delete: bool, tracking_uri: str | None
) -> None:
    """Point ALIAS (e.g. champion) of model NAME at VERSION, or --delete it. Load it with
    models:/NAME@ALIAS."""
    store = current_app().store_at(tracking_uri)
    if delete:
        if version is not None:
            raise click.UsageError("--delete takes no VERSION.")
        store.delete_registered_model_alias(name, alias)
        click.echo(f"Deleted alias {alias!r} of {name}.")
        return
    if version is None:
        raise click.UsageError("Give the VERSION the alias points at (or --delete).")
    store.set_registered_model_alias(name, alias, version)
    click.echo(f"models:/{name}@{alias} -> version {version}")


@models.command("tag")
@click.argument("name")
@click.argument("items", nargs=-1, metavar="KEY=VALUE...")
@click.option("--version", help="Tag this version instead of the model.")
@click.option("--delete", "deleted", multiple=True, metavar="KEY", help="Remove this tag.")
@tracking_uri_option
@handle_errors
def tag(
    name: str,
    items: tuple[str, ...],
    version: str | None,
    deleted: tuple[str, ...],
    tracking_uri: str | None,
) -> None:
    """Set (KEY=VALUE) or --delete tags of a registered model, or of one --version."""
    pairs = _pairs(items, "KEY=VALUE")
    if not pairs and not deleted:
        raise click.UsageError("Give KEY=VALUE tags to set or --delete KEY.")
    store = current_app().store_at(tracking_uri)
    for key, value in pairs.items():
        if version is None:
            store.set_registered_model_tag(name, key, value)
        else:
            store.set_model_version_tag(name, version, key, value)
    for key in deleted:
        if version is None:
            store.delete_registered_model_tag(name, key)
        else:
            store.delete_model_version_tag(name, version, key)
    where = name if version is None else f"{name} version {version}"
    click.echo(f"Tags of {where}: {len(pairs)} set, {len(deleted)} deleted.")


@models.command("delete")
@click.argument("name")
@click.option("--version", help="Delete only this version (its number is not given again).")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@tracking_uri_option
@handle_errors
def delete(name: str, version: str | None, yes: bool, tracking_uri: str | None) -> None:
    """Delete a registered model with all its versions, or one --version. The files stay with
    their runs."""
    store = current_app().store_at(tracking_uri)
    what = (
        f"version {version} of {name}"
        if version
        else f"registered model {name} and all its versions"
    )
    if not yes:
        click.confirm(f"Delete {what}?", abort=True)
    if version is None:
        store.delete_registered_model(name)
    else:
        store.delete_model_version(name, version)
    click.echo(f"Deleted {what}.")
