"""Artifact files as the server serves them: paths from URLs checked to stay under their
folder (no '..', no link pointing out), and the headers and type a download is sent with.
Shared by the REST app (``app.py``) and the web UI's endpoints (``ui.py``)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from urllib.parse import unquote

from reprorun.tracking.mlflow_api.errors import ApiError, invalid

# Files served for download: not sniffed, not rendered, and sandboxed if a browser tries.
DOWNLOAD_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}


def safe_artifact_path(raw: str, what: str = "artifact path") -> PurePosixPath:
    """An artifact path from a URL, refused if it could leave the artifact root: '..'
    components, absolute paths, backslashes, NUL, and their percent-encoded forms. ``what``
    names it in messages."""
    text = raw
    for _ in range(3):  # undo double/triple encoding before checking
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    if "\x00" in text or "\\" in text:
        raise invalid(f"Invalid {what} {raw!r}: it contains a NUL or a backslash.")
    path = PurePosixPath(text)
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise invalid(
            f"Invalid {what} {raw!r}: it must be relative to the artifact root and "
            "must not contain '..'."
        )
    return path


def resolve_under(
    root: Path, raw: str, where: str = "the artifact root", what: str = "artifact path"
) -> Path:
    """The path ``raw`` names under the resolved folder ``root``; refused if it is unsafe (see
    safe_artifact_path) or a step of it leads outside (a symbolic link pointing out)."""
    from reprorun.tracking.artifacts import real_chain

    chain = real_chain(root, safe_artifact_path(raw, what))
    if chain is None:
        raise invalid(f"Invalid {what} {raw!r}: it leaves {where}.")
    return chain[-1]


def artifact_file(artifact_uri: str, raw_path: str) -> Path:
    """The file ``raw_path`` names under an artifact folder; refused if it is not one or
    would leave the folder (``..``, absolute paths, symbolic links pointing out)."""
    from reprorun.tracking.artifacts import local_dir

    if not raw_path:
        raise invalid("Name the artifact with ?path=.")
    try:
        root = local_dir(artifact_uri).resolve()
    except Exception as exc:
        raise invalid(str(exc)) from None
    target = resolve_under(root, raw_path, "the run's artifact folder")
    if not target.is_file():
        kind = "a folder" if target.is_dir() else "not there"
        raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Artifact {raw_path!r} is {kind}.")
    return target


# Names MLflow's server sends as text/plain (its TEXT_EXTENSIONS; MLmodel and MLproject have
# no extension and are matched by name).
_TEXT_NAMES = """txt log err cfg conf cnf cf ini properties prop hocon toml yaml yml xml json
js py py3 csv tsv md rst mlmodel mlproject"""
TEXT_EXTENSIONS = frozenset(_TEXT_NAMES.split())
# Types a browser would run or render as a document: sent as bytes instead.
ACTIVE_TYPES = (
    "text/html",
    "application/xhtml+xml",
    "image/svg+xml",
    "text/javascript",
    "application/javascript",
    "text/xml",
    "application/xml",
)


def download_type(name: str) -> str:
    """The Content-Type a downloaded artifact is sent with, guessed from its name as MLflow
    does (``text/plain`` for text files, ``image/png``, ``application/pdf``, ...);
    ``application/octet-stream`` when unknown or when a browser could run it."""
    import mimetypes

    extension = PurePosixPath(name).suffix.lstrip(".") or name
    if extension.lower() in TEXT_EXTENSIONS:
        return "text/plain"
    guessed, _ = mimetypes.guess_type(name)
    if guessed is None or guessed in ACTIVE_TYPES:
        return "application/octet-stream"
    return guessed
