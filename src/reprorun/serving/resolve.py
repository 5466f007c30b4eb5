"""A model URI as a local folder: ``runs:/<run_id>/<path>``, ``models:/...``, ``file://`` or a
path."""

from __future__ import annotations

from pathlib import Path

from reprorun.errors import UserInputError


def model_folder(uri: str, tracking_uri: str | None = None) -> Path:
    """The local folder holding the model at ``uri`` (downloaded when it is remote)."""
    from reprorun.tracking.models import model_dir

    folder = model_dir(uri, tracking_uri)
    if folder.is_file() and folder.name == "MLmodel":
        folder = folder.parent
    if not (folder / "MLmodel").is_file():
        what = "nothing" if not folder.exists() else "no MLmodel file"
        raise UserInputError(
            f"No model at {uri}: {folder} holds {what}. Give a runs:/<run_id>/<path>, "
            "models:/<name>/<version> URI or the folder of a logged model."
        )
    return folder
