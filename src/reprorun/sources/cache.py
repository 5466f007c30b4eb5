"""The source cache's layout, locks and atomic publishing; working copies for runs."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from reprorun.config import home

if TYPE_CHECKING:
    from filelock import FileLock

LOCK_TIMEOUT_SECONDS = 600


def sources_root() -> Path:
    return home() / "sources"


def key_for(text: str) -> str:
    """A short stable folder name for a URL: readable slug plus a hash."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", text.rsplit("/", 1)[-1].removesuffix(".git")).strip("-")
    return f"{slug[:40] or 'src'}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def lock(path: Path) -> FileLock:
    """A cross-process lock (``with lock(p):``), so two runs never fetch into one place."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path), timeout=LOCK_TIMEOUT_SECONDS)


def publish(final: Path, build: Callable[[Path], None]) -> Path:
    """Build into a temporary sibling, then rename it into place: ``final`` exists only
    complete. A failed build leaves nothing behind."""
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    try:
        build(tmp)
        tmp.replace(final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if final.exists():  # another process published the same thing first: use theirs
            return final
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def make_read_only(root: Path) -> None:
    """Files of a snapshot become read-only: a run cannot change the code of later runs."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if path.is_symlink():
                continue
            mode = path.stat().st_mode
            path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def working_copy(snapshot: Path, dest: Path) -> Path:
    """A run's own folder: a copy of the snapshot, writable. Copies, not hard links: a link
    would let a run (root ignores read-only bits) change the snapshot later runs read."""

    def copy(src: str, dst: str) -> None:
        shutil.copy2(src, dst)
        target = Path(dst)
        target.chmod(target.stat().st_mode | stat.S_IWUSR)

    shutil.copytree(snapshot, dest, symlinks=True, copy_function=copy)
    return dest
