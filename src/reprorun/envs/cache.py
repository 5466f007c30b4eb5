"""The cache of built environments: ``<home>/envs/<manager>/<hash>/``.

An environment is usable only once its marker ``reprorun-env.json`` is in place and its
interpreter exists; anything else under its name is half-built or broken and gets rebuilt.
Builds run under a per-environment file lock, so two runs needing the same environment
build it once. Relocatable environments (uv) are built aside and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprorun.config import home

MARKER = "reprorun-env.json"
LAST_USED = ".last-used"


def envs_root() -> Path:
    return home() / "envs"


def python_of(env_dir: Path) -> Path:
    return env_dir / "bin" / "python"


def read_marker(env_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((env_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_complete(env_dir: Path) -> bool:
    # exists() follows the interpreter symlink: a removed base Python makes the env broken;
    # an unreadable marker (a crash while writing it) does too.
    return python_of(env_dir).exists() and read_marker(env_dir) is not None


def get_or_build(
    manager: str,
    key: str,
    build: Callable[[Path], dict[str, Any]],
    *,
    relocatable: bool,
) -> tuple[Path, Release]:
    """The environment ``manager/key``, built by ``build(folder) -> metadata`` if missing,
    and held in use (``prune`` leaves it alone) until the returned release is called."""
    final = envs_root() / manager / key
    final.parent.mkdir(parents=True, exist_ok=True)
    release = hold(final)
    try:
        _get_or_build(final, manager, key, build, relocatable)
    except BaseException:
        release()
        raise
    return final, release


def _get_or_build(
    final: Path,
    manager: str,
    key: str,
    build: Callable[[Path], dict[str, Any]],
    relocatable: bool,
) -> None:
    if is_complete(final):  # the warm path: no lock library, no tool, no network
        _touch(final)
        return
    from filelock import FileLock

    with FileLock(str(final.parent / f"{key}.lock"), timeout=3600):
        if is_complete(final):  # built by a concurrent run while we waited
            _touch(final)
            return
        if final.exists():
            shutil.rmtree(final)  # half-built or broken
        target = final.parent / f".tmp-{key}-{uuid.uuid4().hex[:8]}" if relocatable else final
        try:
            metadata = build(target)
            metadata.update({"manager": manager, "key": key, "created": time.time()})
            marker = target / f".{MARKER}.tmp"
            marker.write_text(json.dumps(metadata, indent=2))
            marker.replace(target / MARKER)  # the marker appears whole or not at all
            if relocatable:
                target.replace(final)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
    _touch(final)


Release = Callable[[], None]


def _in_use_file(env_dir: Path) -> Path:
    return env_dir.parent / f"{env_dir.name}.inuse"


def hold(env_dir: Path) -> Release:
    """A shared lock meaning "a run uses this environment"; prune takes it exclusively."""
    import fcntl

    fd = os.open(_in_use_file(env_dir), os.O_CREAT | os.O_RDWR, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            os.close(fd)

    return release


def _touch(env_dir: Path) -> None:
    (env_dir / LAST_USED).touch()


@dataclass(frozen=True)
class CachedEnv:
    path: Path
    manager: str
    key: str
    python: str
    source: str
    created: float
    last_used: float
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "manager": self.manager,
            "key": self.key,
            "python": self.python,
            "source": self.source,
            "created": self.created,
            "last_used": self.last_used,
            "size_bytes": self.size_bytes,
        }


def _size(path: Path) -> int:
    total = 0
    for entry in path.rglob("*"):
        try:
            if entry.is_file() and not entry.is_symlink():
                total += entry.stat().st_size
        except OSError:
            continue
    return total


def _manager_dirs() -> list[Path]:
    """``<home>/envs/<manager>/`` folders (not the client copies, not interpreters.json)."""
    return [p for p in sorted(envs_root().glob("*")) if p.is_dir() and p.name != "client"]


def list_envs() -> list[CachedEnv]:
    """Every complete environment in the cache, most recently used first."""
    result = []
    for manager_dir in _manager_dirs():
        for env_dir in manager_dir.iterdir():
            if env_dir.name.startswith(".") or not is_complete(env_dir):
                continue
            meta = read_marker(env_dir) or {}
            used = env_dir / LAST_USED
            result.append(
                CachedEnv(
                    path=env_dir,
                    manager=manager_dir.name,
                    key=env_dir.name,
                    python=str(meta.get("python", "?")),
                    source=str(meta.get("source", "")),
                    created=float(meta.get("created", 0)),
                    last_used=used.stat().st_mtime if used.exists() else 0.0,
                    size_bytes=_size(env_dir),
                )
            )
    return sorted(result, key=lambda e: e.last_used, reverse=True)


def prune(older_than_days: float | None = None) -> list[Path]:
    """Remove environments unused for ``older_than_days`` (all when None), and leftovers of
    interrupted builds. Returns what was removed."""
    removed: list[Path] = []
    cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else None
    for manager_dir in _manager_dirs():
        for env_dir in manager_dir.iterdir():
            if not env_dir.is_dir():
                continue
            stale_tmp = (
                env_dir.name.startswith(".tmp-") and time.time() - env_dir.stat().st_mtime > 3600
            )
            used = env_dir / LAST_USED
            last = used.stat().st_mtime if used.exists() else env_dir.stat().st_mtime
            if stale_tmp or cutoff is None or last < cutoff:
                key = (
                    env_dir.name[len(".tmp-") : -9]
                    if env_dir.name.startswith(".tmp-")
                    else env_dir.name
                )
                if _remove_unless_busy(manager_dir, key, env_dir):
                    removed.append(env_dir)
    return removed


def _remove_unless_busy(manager_dir: Path, key: str, env_dir: Path) -> bool:
    """Remove ``env_dir`` unless a run uses it or a build of ``key`` is in progress."""
    import fcntl

    from filelock import FileLock, Timeout

    try:
        with FileLock(str(manager_dir / f"{key}.lock"), timeout=0):
            fd = os.open(_in_use_file(manager_dir / key), os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a run is using it
            try:
                shutil.rmtree(env_dir, ignore_errors=True)
            finally:
                os.close(fd)
    except Timeout:
        return False  # being built right now
    return True
