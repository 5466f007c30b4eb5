"""Registered models in use: ``models:/`` URIs resolved to the files they name, and
registering a run's or logged model's files as a new version.

``resolve_model_uri`` is the one place a ``models:/`` URI becomes an artifact location:
``load_model``, artifact downloads, the CLI and serving all go through it, on the embedded
store as on a tracking server.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reprorun.errors import ResourceAlreadyExists, ResourceNotFound, UserInputError
from reprorun.tracking.registry_entities import ModelVersion, RegisteredModel, parse_models_uri

if TYPE_CHECKING:
    from reprorun.tracking.store.base import TrackingStore

__all__ = [
    "Origin",
    "Registration",
    "all_models",
    "all_versions",
    "origin",
    "register_model",
    "register_version",
    "resolve_model_uri",
    "resolve_version",
]

_MAX_HOPS = 8  # a version whose source is itself a models:/ or runs:/ URI, and so on


def _store(store: TrackingStore | None, tracking_uri: str | None) -> TrackingStore:
    if store is not None:
        return store
    from reprorun.tracking.store import open_store

    return open_store(tracking_uri)


def resolve_version(
    uri: str, tracking_uri: str | None = None, *, store: TrackingStore | None = None
) -> ModelVersion:
    """The version ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``models:/NAME/latest``
    or ``models:/NAME/STAGE`` names (not for ``models:/<logged model id>``)."""
    ref = parse_models_uri(uri)
    if ref.name is None:
        raise UserInputError(f"{uri} names a logged model, not a registered model's version.")
    store = _store(store, tracking_uri)
    if ref.version is not None:
        return store.get_model_version(ref.name, ref.version)
    if ref.alias is not None:
        return store.get_model_version_by_alias(ref.name, ref.alias)
    found = store.get_latest_versions(ref.name, [ref.stage] if ref.stage else None)
    if not found:
        where = f"in stage {ref.stage}" if ref.stage else "at all"
        raise ResourceNotFound(f"Registered model {ref.name!r} has no version {where} ({uri}).")
    return max(found, key=lambda v: v.version)


def resolve_model_uri(
    uri: str, tracking_uri: str | None = None, *, store: TrackingStore | None = None
) -> str:
    """The artifact location of the model folder ``uri`` names: ``models:/NAME/VERSION``,
    ``models:/NAME@ALIAS``, ``models:/NAME/latest``, ``models:/NAME/STAGE``,
    ``models:/<logged model id>`` or ``runs:/RUN_ID/PATH``. The answer is a local path or
    ``file://`` URI, ``s3://``, ``mlflow-artifacts:/`` (relative to the tracking server) or
    http(s); ``reprorun.tracking.artifacts`` reads and downloads all of them. Any other URI
    is returned as it is."""
    seen: list[str] = []
    while uri.startswith(("models:", "runs:")):
        if len(seen) >= _MAX_HOPS or uri in seen:
            raise UserInputError(
                f"Model URI {seen[0]} does not lead to files (it goes {' -> '.join(seen)})."
            )
        seen.append(uri)
        store = _store(store, tracking_uri)
        if uri.startswith("runs:"):
            uri = _run_location(store, uri)
            continue
        ref = parse_models_uri(uri)
        if ref.model_id is not None:
            uri = store.get_logged_model(ref.model_id).artifact_location
            continue
        version = resolve_version(uri, store=store)
        uri = store.get_model_version_download_uri(version.name, version.version)
    return uri


def _run_location(store: Any, uri: str) -> str:
    """``runs:/RUN_ID/PATH``: the folder in the run's artifacts or, for MLflow 3's
    ``log_model``, the logged model of that name made by the run."""
    from reprorun.tracking import artifacts
    from reprorun.tracking.store.sql.common import artifact_path

    rest = uri[len("runs:") :].strip("/")
    run_id, _, sub = rest.partition("/")
    if not run_id:
        raise UserInputError(f"Model URI {uri!r}: expected runs:/<run_id>/<path>.")
    run = store.get_run(store.resolve_run_id(run_id))
    base = run.info.artifact_uri
    sub = sub.strip("/")
    if sub and "/" not in sub and (artifacts.is_remote(base) or not _exists(base, sub)):
        escaped = sub.replace("'", "''")
        found = store.search_logged_models(
            [run.info.experiment_id],
            filter_string=f"source_run_id = '{run.info.run_id}' AND name = '{escaped}'",
            max_results=1,
        )
        if found:
            return str(found[0].artifact_location)
    return artifact_path(base, sub) if sub else str(base)


def _exists(base: str, sub: str) -> bool:
    from reprorun.tracking import artifacts

    try:
        return artifacts.local_path(base, sub).exists()
    except (UserInputError, OSError):
        return False


# --- registering ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Registration:
    """What ``register_version`` did: the version, and whether it created the model too."""

    version: ModelVersion
    created_model: bool


def register_version(
    model_uri: str,
    name: str,
    *,
    tags: dict[str, str] | None = None,
    description: str | None = None,
    tracking_uri: str | None = None,
    store: TrackingStore | None = None,
) -> Registration:
    """Register the files of ``model_uri`` as the next version of ``name`` (created if
    missing), as ``mlflow.register_model`` does. ``model_uri``: ``runs:/RUN_ID/PATH`` (or
    ``RUN_ID/PATH``), ``models:/<logged model id>``, or an artifact location. The version
    keeps its run and logged model, so the registry links back to where it came from."""
    store = _store(store, tracking_uri)
    uri = _as_uri(model_uri)
    run_id: str | None = None
    model_id: str | None = None
    source = uri
    if uri.startswith("runs:"):
        run_id = store.resolve_run_id(uri[len("runs:") :].strip("/").partition("/")[0])
        uri = f"runs:/{run_id}/{uri[len('runs:') :].strip('/').partition('/')[2]}"
        source = _run_location(store, uri)
        model_id = _logged_model_id(store, source)
        _check_model_folder(store, uri, source)
    elif uri.startswith("models:"):
        ref = parse_models_uri(uri)
        if ref.model_id is not None:
            logged = store.get_logged_model(ref.model_id)
            model_id, run_id = logged.model_id, logged.source_run_id
            source = logged.artifact_location
        else:
            version = resolve_version(uri, store=store)
            run_id, model_id = version.run_id, version.model_id
            source = store.get_model_version_download_uri(version.name, version.version)
    created = True
    try:
        store.create_registered_model(name)
    except ResourceAlreadyExists:
        created = False
    version = store.create_model_version(
        name,
        source,
        run_id=run_id,
        tags=tags,
        description=description,
        model_id=model_id,
        user_id=_user(),
    )
    return Registration(version, created)


def register_model(
    model_uri: str,
    name: str,
    *,
    tags: dict[str, str] | None = None,
    description: str | None = None,
    tracking_uri: str | None = None,
) -> ModelVersion:
    """``mlflow.register_model`` for reprorun: register the model at ``model_uri``
    (``runs:/RUN_ID/PATH``, ``RUN_ID/PATH``, ``models:/<logged model id>``, ``models:/NAME/
    VERSION``) as the next version of ``name`` (created if missing) and return that version;
    load it back with ``reprorun.load_model(f"models:/{name}/{version.version}")``."""
    done = register_version(
        model_uri, name, tags=tags, description=description, tracking_uri=tracking_uri
    )
    return done.version


def _check_model_folder(store: Any, uri: str, location: str) -> None:
    """A run's path registers only when a model is there (its ``MLmodel`` file), as
    ``mlflow.register_model`` demands: a typo must not register an empty version."""
    from reprorun.errors import ReprorunError
    from reprorun.tracking import artifacts

    try:
        found = artifacts.list_artifacts(location, tracking_uri=getattr(store, "uri", None))
    except (ReprorunError, OSError):
        found = []
    if any(f.path.rsplit("/", 1)[-1] == "MLmodel" for f in found):
        return
    raise UserInputError(
        f"No model at {uri} (no MLmodel file in {location}, and the run logged no model of "
        "that name). `reprorun runs show RUN_ID` lists the run's models and artifacts."
    )


def _as_uri(model_uri: str) -> str:
    """``RUN_ID/PATH`` (a run id or a prefix of 4+ hex digits) is ``runs:/RUN_ID/PATH``."""
    if ":" in model_uri.split("/", 1)[0] or model_uri.startswith("/"):
        return model_uri
    head, _, rest = model_uri.partition("/")
    if head and all(c in "0123456789abcdef" for c in head.lower()) and len(head) >= 4:
        return f"runs:/{head}/{rest}"
    return model_uri


def _logged_model_id(store: Any, location: str) -> str | None:
    """The logged model whose folder ``location`` is (MLflow 3's layout: .../models/<id>/...)."""
    parts = location.rstrip("/").split("/")
    for i, part in enumerate(parts[:-1]):
        if part == "models" and parts[i + 1].startswith("m-"):
            try:
                return str(store.get_logged_model(parts[i + 1]).model_id)
            except ResourceNotFound:
                return None
    return None


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


# --- reading the registry (the CLI's listings) -------------------------------------------------


def all_versions(store: TrackingStore, name: str) -> list[ModelVersion]:
    """Every version of ``name``, newest first (``ResourceNotFound`` for an unknown name)."""
    store.get_registered_model(name)
    escaped = name.replace("'", "''")
    found: list[ModelVersion] = []
    token: str | None = None
    while True:
        page = store.search_model_versions(
            f"name = '{escaped}'", max_results=1000, page_token=token
        )
        found += page
        token = page.token
        if not token:
            return sorted(found, key=lambda v: -v.version)


def all_models(
    store: TrackingStore, filter_string: str | None = None, limit: int | None = None
) -> list[RegisteredModel]:
    """The registered models (matching ``filter_string``), by name; at most ``limit``."""
    found: list[RegisteredModel] = []
    token: str | None = None
    while limit is None or len(found) < limit:
        page = store.search_registered_models(filter_string, max_results=1000, page_token=token)
        found += page
        token = page.token
        if not token:
            break
    return found if limit is None else found[:limit]


@dataclass(frozen=True)
class Origin:
    """Where a version came from: its run (name, source commit, and the artifact path of its
    environment's lock file) when the store knows it."""

    run_id: str | None
    run_name: str | None = None
    commit: str | None = None
    lock: str | None = None


def origin(store: TrackingStore, version: ModelVersion) -> Origin:
    """The run a version was registered from, its source commit and environment lock."""
    if not version.run_id:
        return Origin(None)
    try:
        run = store.get_run(version.run_id)
    except ResourceNotFound:
        return Origin(version.run_id)
    from reprorun.tracking.entities import SystemTags

    tags = run.data.tags
    return Origin(
        version.run_id,
        run.info.run_name or None,
        tags.get(SystemTags.GIT_COMMIT),
        tags.get(SystemTags.ENV_LOCK),
    )
