"""Runs' working copies (``<home>/work/<run_id>``): what a git or archive run ran in, with
whatever it wrote there. Kept after the run; ``reprorun work prune`` removes old ones."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from reprorun.config import home


def work_root() -> Path:
    return home() / "work"


def prune_work(older_than_days: float, active_run_ids: set[str]) -> list[Path]:
    """Remove working copies last modified more than ``older_than_days`` ago, except those of
    ``active_run_ids`` (runs still going)."""
    cutoff = time.time() - older_than_days * 86400
    removed: list[Path] = []
    root = work_root()
    if not root.is_dir():
        return removed
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or folder.name in active_run_ids:
            continue
        if folder.stat().st_mtime < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
