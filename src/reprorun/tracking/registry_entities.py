"""The model registry's entities: registered models and their versions, shaped like MLflow's
``RegisteredModel`` and ``ModelVersion`` so both sides map one to one."""

from __future__ import annotations

from dataclasses import dataclass, field

from reprorun.errors import UserInputError

# MLflow's stages, kept for old clients (aliases replace them); a deleted version keeps its
# number (never reused) in the internal stage below and is invisible everywhere.
STAGE_NONE = "None"
STAGE_STAGING = "Staging"
STAGE_PRODUCTION = "Production"
STAGE_ARCHIVED = "Archived"
STAGES = (STAGE_NONE, STAGE_STAGING, STAGE_PRODUCTION, STAGE_ARCHIVED)
ACTIVE_STAGES = (STAGE_STAGING, STAGE_PRODUCTION)
STAGE_DELETED = "Deleted_Internal"
READY = "READY"


def canonical_stage(stage: str) -> str:
    """``stage`` as MLflow spells it (case-insensitive), or MLflow's error."""
    for known in STAGES:
        if isinstance(stage, str) and stage.lower() == known.lower():
            return known
    raise UserInputError(
        f"Invalid Model Version stage: {stage}. Value must be one of {', '.join(STAGES)}."
    )


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    creation_timestamp: int
    last_updated_timestamp: int
    source: str
    current_stage: str = STAGE_NONE
    description: str | None = None
    user_id: str | None = None
    run_id: str | None = None
    run_link: str | None = None
    status: str = READY
    status_message: str | None = None
    model_id: str | None = None
    storage_location: str | None = None  # where the files are (a models:/ source resolved)
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)

    @property
    def download_uri(self) -> str:
        return self.storage_location or self.source


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    creation_timestamp: int
    last_updated_timestamp: int
    description: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)  # alias -> version
    latest_versions: list[ModelVersion] = field(default_factory=list)  # one per stage


@dataclass(frozen=True)
class ModelRef:
    """What a ``models:/`` URI names: a logged model (``model_id``) or a registered model's
    version, alias, stage or latest version (none of the three)."""

    name: str | None = None
    version: int | None = None
    alias: str | None = None
    stage: str | None = None
    model_id: str | None = None


def parse_models_uri(uri: str) -> ModelRef:
    """``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``models:/NAME/latest``,
    ``models:/NAME/STAGE`` (old clients) or ``models:/<logged model id>``, as MLflow reads
    them."""
    if not isinstance(uri, str) or not uri.startswith("models:"):
        raise UserInputError(f"{uri!r} is not a models:/ URI.")
    path = uri[len("models:") :].lstrip("/").rstrip("/")
    usage = (
        f"Invalid model URI {uri!r}: use models:/<name>/<version>, models:/<name>@<alias>, "
        "models:/<name>/latest or models:/<logged model id>."
    )
    if not path:
        raise UserInputError(usage)
    if "@" in path and "/" not in path.split("@", 1)[1]:
        name, alias = path.rsplit("@", 1)
        if not name or not alias:
            raise UserInputError(usage)
        return ModelRef(name=name, alias=alias)
    if "/" not in path:
        return ModelRef(model_id=path)
    name, last = path.rsplit("/", 1)
    if not name or not last:
        raise UserInputError(usage)
    if last.isdigit():
        return ModelRef(name=name, version=int(last))
    if last.lower() == "latest":
        return ModelRef(name=name)
    try:
        return ModelRef(name=name, stage=canonical_stage(last))
    except UserInputError:
        raise UserInputError(usage) from None
