"""Code pinning: what a sweep's points run (a git source's commit, a local folder's content
hash and manifest), and what changed in the project since it was pinned, in words."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reprorun.projects.sweep.state import sweep_dir


def pin_code(source: Any) -> dict[str, Any]:
    """What the children run: a git source's commit (they get --version COMMIT); a local
    folder's commit (if any) and content hash (they run the folder in place)."""
    prov = source.provenance
    code: dict[str, Any] = {
        "kind": prov.source_kind,
        "source_name": prov.source_name,
        "commit": prov.git_commit,
        "dirty": prov.git_dirty,
        "archive_sha256": prov.archive_sha256,
        "directory": str(source.directory),
        "tree_hash": None,
        "pinned_version": prov.git_commit if prov.source_kind == "git" else None,
    }
    if prov.source_kind == "local":
        manifest = _manifest(source.directory)
        code["tree_hash"] = _manifest_hash(manifest)
        code["manifest"] = manifest
    return code


def _manifest(directory: Path) -> dict[str, Any]:
    """Each project file, as the fingerprint sees them -> [kind, content hash or link
    target]; unchanged files keep their hash through the fingerprint's cache."""
    from reprorun.projects.fingerprint import HashCache, project_files, tree_entries

    root = directory.resolve()
    cache = HashCache.default()
    try:
        return {
            rel: [kind, content]
            for rel, kind, content in tree_entries(root, project_files(root), cache)
        }
    finally:
        cache.close()


def _manifest_hash(manifest: Mapping[str, Any]) -> str:
    from reprorun.projects.fingerprint import entries_hash

    return entries_hash((rel, *manifest[rel][:2]) for rel in sorted(manifest))


def current_code(state: dict[str, Any]) -> dict[str, Any]:
    from reprorun.sources import resolve_source

    spec = state["spec"]
    source = resolve_source(spec["uri"], version=spec["version"], cwd=Path(spec["cwd"]))
    return pin_code(source)


def code_changes(state: dict[str, Any]) -> list[str]:
    """What changed in the sweep's project since its code was pinned, in words ([] if none)."""
    old = state["code"]
    new = current_code(state)
    changed: list[str] = []
    if old.get("commit") != new.get("commit"):
        a, b = (old.get("commit") or "(none)")[:12], (new.get("commit") or "(none)")[:12]
        line = f"commit {a} -> {b}"
        files = _commit_files(old, new)
        if files:
            line += f" (files: {_few(files)})"
        changed.append(line)
    if old.get("kind") == "local" and old.get("tree_hash") != new.get("tree_hash"):
        before = _read_manifest(state["id"])
        after = new.get("manifest") or {}
        diffs = [
            f"{rel} ({_file_change(rel, before, after)})"
            for rel in sorted(set(before) | set(after))
            if (before.get(rel) or [None, None])[:2] != (after.get(rel) or [None, None])[:2]
        ]
        changed.append("files " + _few(diffs) if diffs else "the project's files")
    if old.get("archive_sha256") != new.get("archive_sha256"):
        changed.append(f"archive sha256 {old.get('archive_sha256')} -> {new.get('archive_sha256')}")
    return changed


def _file_change(rel: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    if rel not in before:
        return "added"
    return "removed" if rel not in after else "modified"


def moved_message(sweep_id: str, changed: list[str], command: str) -> str:
    return (
        f"Sweep {sweep_id}: the project's code changed since the sweep started: "
        f"{'; '.join(changed)}. Run `reprorun sweep {command} {sweep_id} --allow-new-code` to "
        "run the remaining points on the new code (the points already done keep their runs)."
    )


def _read_manifest(sweep_id: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((sweep_dir(sweep_id) / "manifest.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data


def _few(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _commit_files(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Files that differ between the two commits (best effort: [] if git cannot tell)."""
    a, b = old.get("commit"), new.get("commit")
    if not a or not b:
        return []
    directory = Path(str(new.get("directory")))
    if new.get("kind") == "git":
        # The snapshot is not a repository; its mirror is two levels up (snapshots/<commit>).
        for parent in directory.parents:
            if (parent / "mirror.git").is_dir():
                directory = parent / "mirror.git"
                break
        else:
            return []
    from reprorun.projects.diff import GitUnavailable, changed_files, find_repository

    try:
        repo = find_repository([directory], [a, b])
        return [f["path"] for f in changed_files(repo, a, b)] if repo is not None else []
    except GitUnavailable:
        return []
