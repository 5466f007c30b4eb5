"""The end of a run when the store will not take it.

Recording how a command ended is the last thing its owner does, and the one thing that must
not be lost: a store that refuses it (a full disk, a read-only or broken file) would leave the
run RUNNING, and the next reader, finding its owner gone, would close it FAILED as if the owner
had been killed. So the final writes are retried with a bounded back-off (``RETRY_ENV``
seconds in all), and if the store still refuses, the true end is written to a small journal
file, ``<home>/journal/<run_id>.json`` (or, if that cannot be written either, a folder of the
user's own in the temporary directory), and the caller is told with ``RunNotRecorded``. The
next reader of the run (``backends.supervised``) records the journal's end and deletes it.

A record is applied only to the run it names, and only while that run is still owned by the
process that wrote it (the run's ``reprorun.supervisor`` tag), so a stale or planted file
cannot end another run.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from reprorun.errors import ReprorunError, ResourceNotFound, RunNotRecorded
from reprorun.tracking.entities import RunStatus, SystemTags
from reprorun.tracking.store.base import TrackingStore

# Seconds the final writes are retried for before the end goes to the journal.
RETRY_ENV = "REPRORUN_END_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 5.0

T = TypeVar("T")


@dataclass(frozen=True)
class Ending:
    """How a run ended, as its owner would have recorded it."""

    run_id: str
    status: RunStatus
    end_time: int
    tags: Mapping[str, str]  # the exit code, a log error: written before the status
    owner: str  # the run's SUPERVISOR tag (process identity) when it ended

    def to_json(self) -> str:
        return json.dumps(
            {
                "run_id": self.run_id,
                "status": self.status.value,
                "end_time": self.end_time,
                "tags": dict(self.tags),
                "owner": self.owner,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Ending:
        data = json.loads(text)
        return cls(
            run_id=str(data["run_id"]),
            status=RunStatus(data["status"]),
            end_time=int(data["end_time"]),
            tags={str(k): str(v) for k, v in dict(data["tags"]).items()},
            owner=str(data["owner"]),
        )


def retry_seconds() -> float:
    from reprorun.config import setting

    raw = setting("end_retry_seconds") or ""
    try:
        value = float(raw) if raw else DEFAULT_RETRY_SECONDS
    except ValueError:
        return DEFAULT_RETRY_SECONDS
    return max(value, 0.0)


def retrying(write: Callable[[], T], seconds: float) -> T:
    """``write()``, tried again after 0.1, 0.2, 0.4 ... s until ``seconds`` have passed; the
    last error is raised. An unknown run is not retried (it will not come back)."""
    deadline = time.monotonic() + seconds
    pause = 0.1
    while True:
        try:
            return write()
        except ResourceNotFound:
            raise
        except Exception:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            time.sleep(min(pause, left))
            pause *= 2


def apply(store: TrackingStore, ending: Ending) -> None:
    """Write ``ending``: its tags, then its status unless the run's own status stands
    (``ends_over``). Then the exit reason agrees with the status that stands: one already
    recorded with it (runs kill's ``cancelled``) is kept, else ``exit_reason.settle``."""
    from reprorun.backends.base import ends_over

    run = store.get_run(ending.run_id)
    current = run.info.status
    tags = dict(ending.tags)
    if SystemTags.EXIT_REASON in tags and not ends_over(current, ending.status):
        if SystemTags.EXIT_REASON in run.data.tags:
            for key in (SystemTags.EXIT_REASON, SystemTags.EXIT_DETAIL):
                tags.pop(key, None)
        else:
            tags.update(_settled(tags, current))
    if tags:
        store.set_tags(ending.run_id, tags)
    if ends_over(current, ending.status):
        store.update_run(
            ending.run_id, status=ending.status, end_time=ending.end_time, only_if_status=current
        )


def _settled(tags: Mapping[str, str], stored: RunStatus) -> dict[str, str]:
    """The exit tags of ``tags`` made to agree with the ``stored`` status that stands."""
    from reprorun.backends.exit_reason import Exit, reason_of, settle

    reason = reason_of(tags)
    if reason is None:
        return {}
    code = _exit_code_of(tags)
    ended = Exit(reason, code, tags.get(SystemTags.EXIT_SIGNAL), tags.get(SystemTags.EXIT_DETAIL))
    return settle(ended, stored).tags()


def record_end(store: TrackingStore, ending: Ending) -> None:
    """Write ``ending`` with retries; if the store still refuses, keep it in the journal and
    raise ``RunNotRecorded``."""
    try:
        retrying(lambda: apply(store, ending), retry_seconds())
    except ResourceNotFound:
        raise
    except Exception as exc:
        cause = str(exc) if isinstance(exc, ReprorunError) else f"{type(exc).__name__}: {exc}"
        cause = cause[:2000]
        raise RunNotRecorded(
            ending.run_id,
            ending.status.value,
            _exit_code(ending),
            describe(store),
            cause,
            write(ending),
        ) from exc


def _exit_code(ending: Ending) -> int | None:
    return _exit_code_of(ending.tags)


def _exit_code_of(tags: Mapping[str, str]) -> int | None:
    text = tags.get(SystemTags.EXIT_CODE, "")
    return int(text) if text.lstrip("-").isdigit() else None


def describe(store: TrackingStore) -> str:
    """The store as a user finds it: its file, or its URI (never a password)."""
    uri = getattr(store, "uri", None)
    if isinstance(uri, str) and uri:
        return uri
    db: Any = getattr(store, "db", None)
    path = getattr(db, "path", None)
    if isinstance(path, str) and path:
        return path
    dialect = getattr(db, "dialect", "")
    return f"(the {dialect} database)" if dialect else "(the tracking store)"


def _folders() -> list[Path]:
    from reprorun.config import home

    own = Path(tempfile.gettempdir()) / f"reprorun-{os.getuid()}" / "journal"
    return [home() / "journal", own]


def write(ending: Ending) -> Path | None:
    """Keep ``ending`` in the first journal folder that takes it; None if none does."""
    for folder in _folders():
        path = folder / f"{ending.run_id}.json"
        partial = folder / f".{ending.run_id}.{os.getpid()}.tmp"
        try:
            folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            folder.mkdir(mode=0o700, exist_ok=True)
            if not _private(folder):
                continue
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(ending.to_json())
                out.flush()
                os.fsync(out.fileno())
            partial.replace(path)
            return path
        except OSError:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
    return None


def find(run_id: str) -> tuple[Path, Ending] | None:
    """The journal's record of ``run_id``'s end, if one was kept (and can be read)."""
    for folder in _folders():
        path = folder / f"{run_id}.json"
        try:
            if not _private(folder):
                continue
            ending = Ending.from_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if ending.run_id == run_id:
            return path, ending
    return None


def _private(folder: Path) -> bool:
    """Whether ``folder`` and its parent are ours alone, real folders (no symbolic link), that
    no one else may write to: the temporary directory is shared, and another user who could
    rename or replace either could hide an ending or redirect it."""
    import stat

    for path in (folder.parent, folder):
        info = path.lstat()
        if (
            not stat.S_ISDIR(info.st_mode)
            or info.st_uid != os.getuid()
            or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        ):
            return False
    return True
