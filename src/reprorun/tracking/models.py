"""Models as pickles, with what is needed to load them again: Python and package versions.

A model folder holds ``model.pkl``, an ``MLmodel`` file (MLflow's descriptor format, with a
``python_function``-free ``reprorun_pickle`` flavor) and a ``requirements.txt``.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import platform
import sys
import tempfile
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from reprorun.errors import UserInputError

MODEL_FILE = "model.pkl"
FLAVOR = "reprorun_pickle"


def _top_packages(obj: Any) -> dict[str, str]:
    """Installed versions of the distributions that define the object's classes."""
    modules = {cls.__module__.split(".")[0] for cls in type(obj).__mro__}
    modules.discard("builtins")
    mapping = metadata.packages_distributions()
    versions: dict[str, str] = {}
    for module in sorted(modules):
        for dist in mapping.get(module, []):
            try:
                versions[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
    # numpy travels inside most pickled models without being in the MRO.
    for extra in ("numpy", "scipy"):
        if extra in sys.modules and extra not in versions:
            with contextlib.suppress(metadata.PackageNotFoundError):
                versions[extra] = metadata.version(extra)
    return versions


def save_model(
    obj: Any, path: Path, *, run_id: str | None = None, artifact_path: str = "model"
) -> dict[str, Any]:
    """Write the model folder at ``path``; returns its description."""
    path.mkdir(parents=True, exist_ok=True)
    with open(path / MODEL_FILE, "wb") as fh:
        pickle.dump(obj, fh, protocol=pickle.DEFAULT_PROTOCOL)
    packages = _top_packages(obj)
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    description = {
        "artifact_path": artifact_path,
        "run_id": run_id,
        "model_uuid": uuid.uuid4().hex,
        "utc_time_created": created,
        "flavors": {
            FLAVOR: {
                "pickled_model": MODEL_FILE,
                "pickle_protocol": pickle.DEFAULT_PROTOCOL,
                "python_version": platform.python_version(),
                "object_type": f"{type(obj).__module__}.{type(obj).__qualname__}",
                "packages": packages,
            }
        },
    }
    # JSON is YAML: MLflow's readers parse it, and the in-run client needs no YAML library.
    (path / "MLmodel").write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    (path / "requirements.txt").write_text(
        "".join(f"{name}=={version}\n" for name, version in packages.items()), encoding="utf-8"
    )
    return description


def log_model(obj: Any, artifact_path: str = "model") -> dict[str, Any]:
    """Pickle ``obj`` into the active run's artifacts under ``artifact_path``."""
    from reprorun.tracking import artifacts, fluent
    from reprorun.tracking.entities import SystemTags

    run = fluent._run()
    rel = artifacts.safe_relative(artifact_path)
    if not rel.parts:
        raise UserInputError("log_model needs an artifact path, e.g. log_model(model, 'model').")
    with tempfile.TemporaryDirectory() as tmp:
        description = save_model(obj, Path(tmp) / "m", run_id=run.run_id, artifact_path=str(rel))
        artifacts.log_dir(
            fluent.get_artifact_uri(), Path(tmp) / "m", str(rel), tracking_uri=fluent._uri()
        )
    # MLflow's tag listing a run's models, so MLflow UIs show them too.
    current = run.store.get_run(run.run_id).data.tags.get(SystemTags.LOGGED_MODELS)
    history = json.loads(current) if current else []
    history.append(description)
    run.store.set_tag(run.run_id, SystemTags.LOGGED_MODELS, json.dumps(history))
    return description


def model_dir(model_uri: str, tracking_uri: str | None = None) -> Path:
    """The local folder of ``runs:/<run_id>/<path>``, a ``models:/`` URI (registered
    ``NAME/VERSION``, ``NAME@ALIAS``, ``NAME/latest``, or a logged model's ``m-<id>``),
    ``file://...`` or a plain path; files kept elsewhere are downloaded first."""
    from reprorun.tracking import artifacts

    if model_uri.startswith("models:"):
        from reprorun.tracking.registry import resolve_model_uri
        from reprorun.tracking.store import open_store

        uri = resolve_model_uri(model_uri, tracking_uri)
        if artifacts.is_remote(uri):  # the folder, downloaded from its parent's listing
            store = open_store(tracking_uri)
            cache = Path(tempfile.mkdtemp(prefix="reprorun-model-"))
            parent, _, name = uri.rstrip("/").rpartition("/")
            server = getattr(store, "uri", None)
            return artifacts.download(parent, name, cache, tracking_uri=server)
        return artifacts.local_dir(uri)
    if model_uri.startswith("runs:/"):
        rest = model_uri[len("runs:/") :].strip("/")
        run_id, _, sub = rest.partition("/")
        if not run_id:
            raise UserInputError(f"Model URI {model_uri!r}: expected runs:/<run_id>/<path>.")
        from reprorun.tracking.store import open_store

        store = open_store(tracking_uri)
        run = store.get_run(run_id)
        uri = run.info.artifact_uri
        logged = _logged_model_of(store, run, sub)
        if logged is not None:  # MLflow 3's log_model: the files live with the logged model
            uri, sub = logged.artifact_location, ""
        if artifacts.is_remote(uri):  # served by a tracking server: fetch a local copy
            cache = Path(tempfile.mkdtemp(prefix="reprorun-model-"))
            if not sub:  # a whole folder (a logged model's): downloaded from its parent's listing
                uri, _, sub = uri.rstrip("/").rpartition("/")
            return artifacts.download(uri, sub, cache, tracking_uri=getattr(store, "uri", None))
        return artifacts.local_path(uri, sub)
    return artifacts.local_dir(model_uri)


def _logged_model_of(store: Any, run: Any, name: str) -> Any:
    """The logged model ``name`` of ``run`` when its files are not in the run's own folder."""
    from reprorun.tracking import artifacts

    if not name or "/" in name.strip("/"):
        return None
    uri = run.info.artifact_uri
    if not artifacts.is_remote(uri) and artifacts.local_path(uri, name).exists():
        return None
    found = store.search_logged_models(
        [run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}' AND name = "
        + "'{}'".format(name.strip("/").replace("'", "''")),
        max_results=1,
    )
    return found[0] if found else None


def load_hint(uri: str, flavors: Mapping[str, Any]) -> str:
    """How to load a model with these MLmodel ``flavors``, in the language that saved it."""
    if "crate" in flavors:  # mlflow_log_model(carrier::crate(...)) in R
        return f'mlflow_load_model("{uri}") in R (an R function made with carrier::crate)'
    for spec in flavors.values():
        if isinstance(spec, Mapping) and "r_version" in spec:  # the R client's saveRDS
            return f'readRDS("<download of {uri}>/{spec.get("data", "")}") in R'
    return f'reprorun.load_model("{uri}")'


def mlmodel_flavors(text: str | None) -> dict[str, Any]:
    """The ``flavors`` of an MLmodel file's text ({} when it has none or is not YAML)."""
    import yaml

    try:
        loaded = yaml.safe_load(text or "")
    except yaml.YAMLError:
        return {}
    flavors = loaded.get("flavors") if isinstance(loaded, dict) else None
    return flavors if isinstance(flavors, dict) else {}


def load_model(model_uri: str, tracking_uri: str | None = None) -> Any:
    """Load a model logged with ``log_model`` (e.g. ``runs:/<run_id>/model``).

    Unpickling runs code from the pickle: load only models you trust.
    """
    folder = model_dir(model_uri, tracking_uri)
    target = folder / MODEL_FILE if folder.is_dir() else folder
    if not target.is_file():
        descriptor = folder / "MLmodel"
        flavors = mlmodel_flavors(descriptor.read_text()) if descriptor.is_file() else {}
        if flavors and not any(f in flavors for f in (FLAVOR, "python_function", "sklearn")):
            raise UserInputError(
                f"{model_uri} is not a Python model (its MLmodel flavors: "
                f"{', '.join(sorted(flavors))}): load it with {load_hint(model_uri, flavors)}."
            )
        raise UserInputError(f"No model at {model_uri} (looked for {target}).")
    with open(target, "rb") as fh:
        return pickle.load(fh)  # noqa: S301 - a model the user logged; documented above
