"""Settings: each declared once as (name, environment variable, default, help).

``SETTINGS`` is the only reader of the user's ``REPRORUN_*`` settings: ``setting(name)`` reads
the variable a setting declares, and ``home``, ``experiment_name``, ``server_token`` and
``resolve_tracking`` read through it. The application object (``reprorun.app``) exposes them;
the README's table and the documentation test are generated from ``SETTINGS``. The variables
reprorun gives a run's child (its run id, experiment id, ``reprorun`` command) are run context,
not settings: ``reprorun.tracking.run_context`` reads those.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from reprorun.errors import InvalidTrackingUri, UnsupportedArtifactLocation, UserInputError


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
        "Where new experiments keep their runs' artifacts: a folder, a file:// URI or "
        "s3://BUCKET/PREFIX (docs/s3.md).",
    ),
    Setting(
        "server_token",
        "REPRORUN_SERVER_TOKEN",
        "unset (no token)",
        "The bearer token `reprorun server` requires (as --auth-token); set but empty or "
        "shorter than 16 characters is an error.",
    ),
    Setting(
        "experiment_name",
        "REPRORUN_EXPERIMENT_NAME",
        "Default",
        "The experiment of runs that name none: `reprorun run` and the Python API "
        "(start_run, search_runs); --experiment-name overrides it.",
    ),
    Setting(
        "progress",
        "REPRORUN_PROGRESS",
        "a spinner on a terminal, nothing otherwise",
        "`plain`: an environment build reports each step as a plain line (for CI logs).",
    ),
    Setting(
        "end_retry_seconds",
        "REPRORUN_END_RETRY_SECONDS",
        "5",
        "Seconds a run's final writes are retried for when the store refuses them, before "
        "its end goes to the journal (see Security and faults).",
    ),
    Setting(
        "system_metrics_interval",
        "REPRORUN_SYSTEM_METRICS_INTERVAL",
        "10",
        "Seconds between a run's system metrics (system/cpu_utilization_percentage, "
        "...: MLflow's names), logged while its command runs; --no-system-metrics turns "
        "them off for one run.",
    ),
    Setting(
        "heartbeat_interval",
        "REPRORUN_HEARTBEAT_INTERVAL",
        "15",
        "Seconds between a remote job's heartbeats (Ray, Slurm, Kubernetes, Databricks), "
        "each of which also sends the log written since the last one; read where the job is "
        "submitted.",
    ),
    Setting(
        "heartbeat_timeout",
        "REPRORUN_HEARTBEAT_TIMEOUT",
        "300",
        "Seconds without a heartbeat after which a running remote run is closed FAILED with "
        "reason node-lost, the next time anything reads it.",
    ),
    Setting(
        "notify",
        "REPRORUN_NOTIFY",
        "unset (no notification)",
        "Where every run's end is notified, comma-separated, as --notify takes them: webhook "
        "URLs, e-mail addresses, cmd:/path/to/script commands (see Notifications).",
    ),
    Setting(
        "smtp_url",
        "REPRORUN_SMTP_URL",
        "unset",
        "The mail server of e-mail notifications: smtp://user:password@host:port, "
        "smtp+starttls://... for STARTTLS, smtps://... for TLS.",
    ),
    Setting(
        "smtp_from",
        "REPRORUN_SMTP_FROM",
        "reprorun@<this host>",
        "The From address of e-mail notifications.",
    ),
)

_BY_NAME = {s.name: s for s in SETTINGS}


def setting(name: str) -> str | None:
    """The value the environment gives setting ``name`` (None when its variable is unset)."""
    return os.environ.get(_BY_NAME[name].env)


def settings() -> dict[str, str | None]:
    """Every setting's value from the environment, by name (None: unset, its default holds)."""
    return {s.name: setting(s.name) for s in SETTINGS}


def server_token() -> str | None:
    """``REPRORUN_SERVER_TOKEN``: None when unset; an empty value is returned as it is, for
    the server to refuse (it must not mean "no authentication")."""
    return setting("server_token")


def home() -> Path:
    """``REPRORUN_HOME``: the folder of the embedded store, caches and working copies."""
    return Path(setting("home") or _BY_NAME["home"].default).expanduser().resolve()


def seconds(name: str) -> float:
    """A setting that is a positive number of seconds (its default when unset)."""
    raw = setting(name)
    try:
        number = float(raw or _BY_NAME[name].default)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise UserInputError(f"{_BY_NAME[name].env} must be a number of seconds > 0, got {raw!r}.")
    return number


def experiment_name() -> str | None:
    """``REPRORUN_EXPERIMENT_NAME``: the experiment of runs that name none (None: unset)."""
    return setting("experiment_name") or None


@dataclass(frozen=True)
class TrackingTarget:
    """A resolved tracking URI: the database URL and where artifacts of new experiments go."""

    uri: str  # normalised; what child processes receive
    artifact_root: str  # a file:// or s3:// URI
    sqlite_path: str | None  # set for the stdlib SQLite fast path

    @property
    def is_remote(self) -> bool:
        """An http(s) tracking server (MLflow's REST protocol) rather than a database."""
        return self.uri.startswith(("http://", "https://"))


def resolve_tracking(tracking_uri: str | None = None) -> TrackingTarget:
    """Turn ``--tracking-uri`` / ``REPRORUN_TRACKING_URI`` / the default into a target."""
    raw = tracking_uri or setting("tracking_uri") or ""
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
        root = setting("artifact_root") or str(home() / "artifacts")
        return TrackingTarget(raw, _artifact_root(root), None)
    return _sqlite_target(Path(raw))


def _sqlite_target(path: Path) -> TrackingTarget:
    path = path.expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    if path.is_dir():
        path = path / "store.db"
    if path.exists() and not path.is_file():
        raise InvalidTrackingUri(f"Tracking store {path} exists but is not a file.")
    root = setting("artifact_root")
    artifact_root = _artifact_root(root or path.parent / "artifacts")
    return TrackingTarget(f"sqlite:///{path}", artifact_root, str(path))


def _artifact_root(value: Path | str) -> str:
    return artifact_location(str(value), "REPRORUN_ARTIFACT_ROOT")


# Also valid as an experiment's location: a tracking server's artifact proxy.
PROXIED_SCHEMES = ("mlflow-artifacts", "http", "https")


def artifact_location(value: str, source: str, *, proxied: bool = False) -> str:
    """An artifact root or location as stored: a folder becomes its absolute file:// URI and
    ``s3://bucket/prefix`` stays as given. Any other scheme is refused, naming ``source``
    (the setting or option it came from), what was given and what is supported; with
    ``proxied``, a tracking server's ``mlflow-artifacts:``/http(s) locations are kept too."""
    text = value.strip()
    scheme = urlparse(text).scheme.lower()
    if scheme == "file":
        return text.rstrip("/")
    if scheme == "s3":
        parsed = urlparse(text)
        if not parsed.netloc:
            raise UnsupportedArtifactLocation(
                f"{source}={value!r} names no bucket: use s3://BUCKET or s3://BUCKET/PREFIX."
            )
        return f"s3://{parsed.netloc}{parsed.path.rstrip('/')}"
    if proxied and scheme in PROXIED_SCHEMES:
        return text.rstrip("/")
    if len(scheme) > 1:  # one letter would be a Windows drive
        supported = ", ".join(
            ["a folder (a path or file:///...)", "s3://BUCKET/PREFIX"]
            + (["mlflow-artifacts:/PATH", "http(s)://SERVER/..."] if proxied else [])
        )
        raise UnsupportedArtifactLocation(
            f"{source}={value!r}: reprorun cannot store artifacts at a {scheme}:// URI. "
            f"Supported: {supported} (S3-compatible servers through MLFLOW_S3_ENDPOINT_URL). "
            "A folder whose name has a colon can be written ./NAME."
        )
    return Path(text).expanduser().resolve().as_uri()
