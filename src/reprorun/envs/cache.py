"""The cache of built environments: ``<home>/envs/<manager>/<hash>/``.

An environment is usable only once its marker ``reprorun-env.json`` is in place and its
interpreter exists; anything else under its name is half-built or broken and gets rebuilt.
Builds run under a per-environment file lock, so two runs needing the same environment
build it once. Relocatable environments (uv) are built aside and renamed into place.
"""

from __future__ import annotations

import json
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


def is_complete(env_dir: Path) -> bool:
    # exists() follows the interpreter symlink: a removed base Python makes the env broken.
    return (env_dir / MARKER).is_file() and python_of(env_dir).exists()


def get_or_build(
    manager: str,
    key: str,
    build: Callable[[Path], dict[str, Any]],
    *,
    relocatable: bool,
) -> Path:
    """The environment ``manager/key``, built by ``build(folder) -> metadata`` if missing."""
    from filelock import FileLock

    final = envs_root() / manager / key
    if is_complete(final):
        _touch(final)
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final.parent / f"{key}.lock"), timeout=3600):
        if is_complete(final):  # built by a concurrent run while we waited
            _touch(final)
            return final
        if final.exists():
            shutil.rmtree(final)  # half-built or broken
        target = final.parent / f".tmp-{key}-{uuid.uuid4().hex[:8]}" if relocatable else final
        try:
            metadata = build(target)
            metadata.update({"manager": manager, "key": key, "created": time.time()})
            (target / MARKER).write_text(json.dumps(metadata, indent=2))
            if relocatable:
                target.replace(final)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
    _touch(final)
    return final


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


def list_envs() -> list[CachedEnv]:
    """Every complete environment in the cache, most recently used first."""
    result = []
    for manager_dir in sorted(envs_root().glob("*")):
        if not manager_dir.is_dir() or manager_dir.name == "client":
            continue
        for env_dir in manager_dir.iterdir():
            if env_dir.name.startswith(".") or not is_complete(env_dir):
                continue
            meta = json.loads((env_dir / MARKER).read_text())
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
    for manager_dir in sorted(envs_root().glob("*")):
        if not manager_dir.is_dir() or manager_dir.name == "client":
            continue
        for env_dir in manager_dir.iterdir():
            if not env_dir.is_dir():
                continue
            stale_tmp = (
                env_dir.name.startswith(".tmp-") and time.time() - env_dir.stat().st_mtime > 3600
            )
            used = env_dir / LAST_USED
            last = used.stat().st_mtime if used.exists() else env_dir.stat().st_mtime
            if stale_tmp or cutoff is None or last < cutoff:
                from filelock import FileLock

                with FileLock(str(manager_dir / f"{env_dir.name}.lock"), timeout=60):
                    shutil.rmtree(env_dir, ignore_errors=True)
                removed.append(env_dir)
    return removed
