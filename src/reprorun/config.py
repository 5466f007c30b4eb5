"""Settings: each declared once as (name, environment variable, default, help).

The CLI, the documentation test and ``resolve_tracking`` all read ``SETTINGS``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from reprorun.errors import InvalidTrackingUri


@dataclass(frozen=True)
class Setting:
    name: str
    env: str
    default: str
    help: str


SETTINGS = (
    Setting(
        "home",
        "REPRORUN_HOME",
        "~/.reprorun",
        "Folder of the embedded default: store.db (SQLite) and artifacts/.",
    ),
    Setting(
        "tracking_uri",
        "REPRORUN_TRACKING_URI",
        "sqlite:///<home>/store.db",
        "Where runs are recorded: a SQLAlchemy URL (sqlite:////abs/path/store.db, "
        "postgresql://...), a path to a SQLite file, or an http(s):// tracking server "
        "(reprorun server or MLflow's). --tracking-uri overrides it.",
    ),
    Setting(
        "artifact_root",
        "REPRORUN_ARTIFACT_ROOT",
        "artifacts/ beside the SQLite file (<home>/artifacts)",
        "Where new experiments keep their runs' artifacts (a folder or file:// URI).",
    ),
    Setting(
        "server_token",
        "REPRORUN_SERVER_TOKEN",
        "unset (no token)",
        "The bearer token `reprorun server` requires (as --auth-token); set but empty or "
        "shorter than 16 characters is an error.",
    ),
)


def server_token() -> str | None:
    """``REPRORUN_SERVER_TOKEN``: None when unset; an empty value is returned as it is, for
    the server to refuse (it must not mean "no authentication")."""
    return os.environ.get("REPRORUN_SERVER_TOKEN")


def home() -> Path:
    return Path(os.environ.get("REPRORUN_HOME") or "~/.reprorun").expanduser().resolve()


@dataclass(frozen=True)
class TrackingTarget:
    """A resolved tracking URI: the database URL and where artifacts of new experiments go."""

    uri: str  # normalised; what child processes receive
    artifact_root: str  # a file:// URI
    sqlite_path: str | None  # set for the stdlib SQLite fast path

    @property
    def is_remote(self) -> bool:
        """An http(s) tracking server (MLflow's REST protocol) rather than a database."""
        return self.uri.startswith(("http://", "https://"))


def resolve_tracking(tracking_uri: str | None = None) -> TrackingTarget:
    """Turn ``--tracking-uri`` / ``REPRORUN_TRACKING_URI`` / the default into a target."""
    raw = tracking_uri or os.environ.get("REPRORUN_TRACKING_URI") or ""
    if not raw:
        path = home() / "store.db"
        return _sqlite_target(path)
    parsed = urlparse(raw)
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        if not parsed.hostname:
            raise InvalidTrackingUri(f"Tracking URI {raw!r} names no host.")
        # The server decides where artifacts go; it reports each run's location.
        return TrackingTarget(raw.rstrip("/"), "", None)
    if scheme == "sqlite":
        # sqlite:///relative.db, sqlite:////abs/path.db, sqlite:// (in memory)
        rest = raw[len("sqlite://") :]
        if rest in ("", "/", "/:memory:"):
            return TrackingTarget("sqlite://", _artifact_root(home() / "artifacts"), ":memory:")
        path = Path(unquote(rest[1:] if rest.startswith("/") else rest))
        return _sqlite_target(path)
    if scheme == "file":
        return _sqlite_target(Path(unquote(parsed.path)))
    if scheme and len(scheme) > 1:
        # Any other SQLAlchemy URL (postgresql://, sqlite+pysqlite://, ...).
        root = os.environ.get("REPRORUN_ARTIFACT_ROOT") or str(home() / "artifacts")
        return TrackingTarget(raw, _artifact_root(Path(root)), None)
    return _sqlite_target(Path(raw))


def _sqlite_target(path: Path) -> TrackingTarget:
    path = path.expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    if path.is_dir():
        path = path / "store.db"
    if path.exists() and not path.is_file():
        raise InvalidTrackingUri(f"Tracking store {path} exists but is not a file.")
    root = os.environ.get("REPRORUN_ARTIFACT_ROOT")
    artifact_root = _artifact_root(Path(root) if root else path.parent / "artifacts")
    return TrackingTarget(f"sqlite:///{path}", artifact_root, str(path))


def _artifact_root(value: Path | str) -> str:
    text = str(value)
    if text.startswith("file://"):
        return text.rstrip("/")
    return Path(text).expanduser().resolve().as_uri()
