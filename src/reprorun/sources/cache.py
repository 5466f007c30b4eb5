"""The source cache's layout, locks and atomic publishing; working copies for runs.

The cache is the user's alone: its root and every folder reprorun makes in it are owner-only
(0700), so no other local user reads code, mirrors, or a clone still in progress."""

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


def private_dirs(path: Path) -> Path:
    """Make ``path`` (in the source cache) and the folders above it, up to the cache's
    root, owner-only; a root left open by an older reprorun is closed."""
    root = sources_root()
    if not path.is_relative_to(root):
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path
    root.parent.mkdir(parents=True, exist_ok=True)
    root.mkdir(mode=0o700, exist_ok=True)
    if root.stat().st_mode & 0o077:
        root.chmod(0o700)
    folder = root
    for part in path.relative_to(root).parts:
        folder = folder / part
        folder.mkdir(mode=0o700, exist_ok=True)
    return path


def key_for(text: str) -> str:
    """A short stable folder name for a URL: readable slug plus a hash."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", text.rsplit("/", 1)[-1].removesuffix(".git")).strip("-")
    return f"{slug[:40] or 'src'}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def lock(path: Path) -> FileLock:
    """A cross-process lock (``with lock(p):``), so two runs never fetch into one place."""
    from filelock import FileLock

    private_dirs(path.parent)
    return FileLock(str(path), timeout=LOCK_TIMEOUT_SECONDS)


TMP_PREFIX = ".tmp-"


def publish(final: Path, build: Callable[[Path], None], *, private: bool = False) -> Path:
    """Build into a temporary sibling, then rename it into place: ``final`` exists only
    complete. A failed build leaves nothing behind. ``private``: the temporary folder (so
    ``final``) is created owner-only before ``build`` fills it, in owner-only parents."""
    if final.exists():
        return final
    if private:
        private_dirs(final.parent)
    else:
        final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f"{TMP_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}"
    try:
        if private:
            tmp.mkdir(mode=0o700)
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


def remove_stale_builds(folder: Path, name: str = "") -> None:
    """Remove the temporary folders of builds (of ``name``, else of anything) in ``folder``
    that never finished: a process killed midway. Call only while holding the lock that
    every such build holds."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.name.startswith(f"{TMP_PREFIX}{name}"):
            shutil.rmtree(entry, ignore_errors=True)


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
    would let a run (root ignores read-only bits) change the snapshot later runs read.
    The copy's folder gets the user's usual mode (the snapshot's own is owner-only): a
    container running as another user may need to read it."""

    def copy(src: str, dst: str) -> None:
        shutil.copy2(src, dst)
        target = Path(dst)
        target.chmod(target.stat().st_mode | stat.S_IWUSR)

    dest.mkdir(parents=True)
    usual = stat.S_IMODE(dest.stat().st_mode)
    shutil.copytree(snapshot, dest, symlinks=True, copy_function=copy, dirs_exist_ok=True)
    dest.chmod(usual)
    return dest
