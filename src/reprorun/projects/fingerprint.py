"""A run's fingerprint: a hash of everything that determines its result.

    source tree   the content of every file the project's command can see (tracked and
                  untracked, minus what git ignores), so a dirty checkout is hashed as it is
    entry point   and the resolved parameters (as passed on the command line)
    environment   the hash of the environment's lock (the exact package set); for the local
                  environment, the caller's python's version and installed distributions' names
    data          the content of each ``path`` parameter that names a file or a folder

Two runs with the same fingerprint ran the same code, with the same inputs, in the same
environment. File hashes are cached by path, size, modification time and inode (as DVC does),
so fingerprinting an unchanged tree costs one ``stat`` per file. Reuse lives here too:
``check_reuse`` finds the FINISHED run with the same fingerprint, else the closest one.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reprorun.envs.base import PreparedEnv
    from reprorun.projects.planning import RunPlan
    from reprorun.tracking.store.base import TrackingStore

VERSION = 1
TAG = "reprorun.fingerprint"
PARTS_TAG = "reprorun.fingerprint.parts"
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Fingerprint:
    digest: str
    parts: dict[str, Any]

    @property
    def tags(self) -> dict[str, str]:
        return {TAG: self.digest, PARTS_TAG: json.dumps(self.parts, sort_keys=True)}

    @staticmethod
    def of(parts: Mapping[str, Any]) -> str:
        text = json.dumps(parts, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def fingerprint(
    the_plan: RunPlan,
    prepared: PreparedEnv,
    cache: HashCache | None = None,
    patch: Path | None = None,
) -> Fingerprint:
    """The fingerprint of ``the_plan`` run in ``prepared``; ``patch``: uncommitted changes
    the run applies to its working copy (a rerun of a dirty run), hashed with the tree."""
    from reprorun.params import ParamType

    own = cache is None
    cache = cache or HashCache.default()
    try:
        directory = the_plan.project.directory
        data = {}
        params = {}
        declared = the_plan.entry_point.parameters
        for p in the_plan.params:
            spec = declared.get(p.name)
            if spec is not None and spec.type is ParamType.PATH and Path(str(p.value)).exists():
                # Data is its content, wherever it lies (another checkout, a rerun's copy).
                data[p.name] = content_hash(Path(str(p.value)), cache)
                params[p.name] = "(content: see data)"
            else:
                params[p.name] = _param_text(p.text, directory)
        source = tree_hash(directory, project_files(directory), cache)
        dirty = the_plan.provenance.git_dirty
        if patch is not None:
            patched = hashlib.sha256(patch.read_bytes()).hexdigest()
            source = hashlib.sha256(f"{source}+patch:{patched}".encode()).hexdigest()
            dirty = True
        parts = {
            "version": VERSION,
            "source_tree": source,
            "commit": the_plan.provenance.git_commit,
            "dirty": dirty,
            "entry_point": the_plan.entry_point.name,
            "params": params,
            "env": env_hash(prepared),
            "data": data,
        }
    finally:
        if own:
            cache.close()
    return Fingerprint(Fingerprint.of(parts), parts)


LONG_PARAM = 200  # longer values enter the parts as their hash (tags hold 8,000 characters)


def _param_text(text: str, directory: Path) -> str:
    """A parameter as the fingerprint keeps it: a path inside the project relative to it (two
    checkouts of one commit match), a long value as its hash."""
    root = str(directory.resolve()) + os.sep
    if text.startswith(root):
        text = "./" + text[len(root) :]
    if len(text) > LONG_PARAM:
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return text


def differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """What differs between two fingerprints' parts, in words."""
    found = []
    if a.get("entry_point") != b.get("entry_point"):
        found.append(f"entry point {a.get('entry_point')} -> {b.get('entry_point')}")
    pa, pb = a.get("params") or {}, b.get("params") or {}
    for name in sorted(set(pa) | set(pb)):
        if pa.get(name) != pb.get(name):
            found.append(f"parameter {name}: {pa.get(name, '(none)')} -> {pb.get(name, '(none)')}")
    if a.get("source_tree") != b.get("source_tree"):
        commits = (a.get("commit") or "")[:12], (b.get("commit") or "")[:12]
        if commits[0] != commits[1]:
            what = f"commit {commits[0]} -> {commits[1]}"
        else:
            what = "uncommitted or untracked files; `reprorun runs diff` names them"
        found.append(f"source code ({what})")
    if a.get("env") != b.get("env"):
        found.append("environment (its package lock)")
    da, db = a.get("data") or {}, b.get("data") or {}
    for name in sorted(set(da) | set(db)):
        if da.get(name) != db.get(name):
            found.append(f"data of parameter {name}")
    return found


@dataclass(frozen=True)
class Reuse:
    """Whether a run would be reused: the FINISHED run with the same fingerprint, else the
    closest earlier run of the project and what differs from it."""

    fingerprint: Fingerprint
    run_id: str | None = None
    closest: str | None = None
    differences: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint.digest,
            "would_reuse": self.run_id is not None,
            "run_id": self.run_id,
            "closest_run_id": self.closest,
            "differences": list(self.differences),
        }

    def explain(self) -> str:
        if self.run_id is not None:
            return (
                f"run {self.run_id} FINISHED with the same fingerprint "
                f"{self.fingerprint.digest[:12]} (same source tree, entry point, parameters, "
                "environment and data)"
            )
        if self.closest is None:
            return "no earlier run of this project has a fingerprint"
        return f"closest earlier run {self.closest} differs in: " + "; ".join(self.differences)


def check_reuse(store: TrackingStore, the_plan: RunPlan, identity: Fingerprint) -> Reuse:
    """The newest FINISHED run with ``identity``'s fingerprint, else the closest earlier run
    of the same project (fewest differing parts) among its newest 500."""
    from reprorun.tracking.entities import SystemTags
    from reprorun.tracking.search import ATTRIBUTE, Clause, format_filter
    from reprorun.tracking.search import TAG as TAGS

    experiments = [e.experiment_id for e in store.list_experiments()]
    same_fingerprint = [
        Clause(TAGS, TAG, "=", identity.digest),
        Clause(ATTRIBUTE, "status", "=", "FINISHED"),
    ]
    same = store.search_runs(experiments, format_filter(same_fingerprint), max_results=1)
    if same:
        return Reuse(identity, run_id=same[0].info.run_id)
    same_source = [Clause(TAGS, SystemTags.SOURCE_NAME, "=", the_plan.provenance.source_name)]
    candidates = store.search_runs(experiments, format_filter(same_source), max_results=500)
    best: tuple[int, str, list[str]] | None = None
    for run in candidates:
        parts = run.data.tags.get(PARTS_TAG)
        if not parts:
            continue
        found = differences(json.loads(parts), identity.parts)
        if best is None or len(found) < best[0]:
            best = (len(found), run.info.run_id, found)
    if best is None:
        return Reuse(identity)
    return Reuse(identity, closest=best[1], differences=tuple(best[2]))


def env_hash(prepared: PreparedEnv) -> str:
    if prepared.lock_text:
        return hashlib.sha256(prepared.lock_text.encode()).hexdigest()
    described = [prepared.name, prepared.python_version or "", prepared.env_hash or ""]
    if prepared.name == "local" and not prepared.env_hash:
        # (The local manager hashes the distributions of the caller's python into env_hash;
        # without one, reprorun's own interpreter is what there is to describe.)
        described += installed_distributions()
    return hashlib.sha256("\n".join(described).encode()).hexdigest()


def installed_distributions() -> list[str]:
    """The ``*.dist-info`` / ``*.egg-info`` names on this interpreter's path (name and
    version are in them): a listing per folder, much cheaper than reading the metadata."""
    names = []
    for entry in sys.path:
        try:
            with os.scandir(entry or ".") as found:
                names += [e.name for e in found if e.name.endswith((".dist-info", ".egg-info"))]
        except OSError:
            continue
    return sorted(names)


def project_files(directory: Path) -> list[str]:
    """Files of the project as its command sees them, relative, '/'-separated: in a git
    checkout the tracked and untracked files git does not ignore; elsewhere every file."""
    try:
        listed = subprocess.run(
            [
                "git",
                "-C",
                str(directory),
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        listed = None
    if listed is not None and listed.returncode == 0:
        # (A deleted but still tracked file is listed too; tree_hash skips what is gone.)
        return sorted(
            {n for n in listed.stdout.decode("utf-8", "surrogateescape").split("\0") if n}
        )
    return sorted(walk(directory))


def walk(directory: Path, follow_links: bool = False) -> Iterable[str]:
    seen: set[tuple[int, int]] = set()  # folders already walked: links may loop
    for root, dirs, files in os.walk(directory, followlinks=follow_links):
        if follow_links:
            info = os.stat(root)  # noqa: PTH116 - a string path: once per folder
            if (info.st_dev, info.st_ino) in seen:
                dirs[:] = []
                continue
            seen.add((info.st_dev, info.st_ino))
        dirs[:] = [d for d in dirs if d != ".git"]
        rel = os.path.relpath(root, directory)
        for name in files:
            yield name if rel == "." else f"{rel}/{name}".replace(os.sep, "/")


def content_hash(path: Path, cache: HashCache) -> str:
    """A file's or a folder's content hash (a folder: all its files, names included; data
    behind symbolic links is followed, since that is what the run reads)."""
    path = path.resolve()
    if path.is_dir():
        return tree_hash(path, sorted(walk(path, follow_links=True)), cache, follow_links=True)
    cache.preload(path.parent)
    value = cache.file_hash(str(path), path.stat())
    cache.flush()
    return value


def tree_hash(root: Path, files: list[str], cache: HashCache, follow_links: bool = False) -> str:
    return entries_hash(tree_entries(root, files, cache, follow_links))


def entries_hash(entries: Iterable[tuple[str, str, str]]) -> str:
    """The hash of a tree's ``(path, kind, content)`` entries, in the order given."""
    digest = hashlib.sha256()
    for rel, kind, content in entries:
        digest.update(f"{rel}\0{kind}\0{content}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def tree_entries(
    root: Path, files: list[str], cache: HashCache, follow_links: bool = False
) -> Iterator[tuple[str, str, str]]:
    """``(path, kind, content)`` of each of ``files`` under ``root`` that still exists: kind
    file, exec or link; content the file's hash or the link's target."""
    root = root.resolve()
    cache.preload(root)
    base = str(root) + os.sep
    for rel in files:
        path = base + rel  # strings, not Paths: this loop runs once per file of the project
        try:
            info = os.stat(path) if follow_links else os.lstat(path)  # noqa: PTH116
        except FileNotFoundError:  # gone, or a dangling link
            continue
        if stat.S_ISLNK(info.st_mode):
            yield rel, "link", os.readlink(path)  # noqa: PTH115
        elif stat.S_ISREG(info.st_mode):
            yield rel, "exec" if info.st_mode & 0o111 else "file", cache.file_hash(path, info)
    cache.flush()


class HashCache:
    """File content hashes by (path, size, mtime, ctime, inode), in a SQLite file. A hash is
    reused only while all of them match: an edit changes mtime and ctime, and a restored
    mtime (``touch -d``, ``cp -p``, ``tar x``) still changes ctime, which no tool can set.
    As git does for its index, a file modified in the last 2 s is hashed but not remembered:
    a second write within the clock's granularity could otherwise keep its stamps."""

    def __init__(self, path: Path, racy_ns: int = 2_000_000_000):
        self.racy_ns = racy_ns
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, "
            "mtime_ns INTEGER, ctime_ns INTEGER, inode INTEGER, sha256 TEXT)"
        )
        self.known: dict[str, tuple[int, int, int, int, str]] = {}
        self.loaded: set[str] = set()
        self.pending: list[tuple[str, int, int, int, int, str]] = []

    @classmethod
    def default(cls) -> HashCache:
        from reprorun.config import home

        return cls(home() / "cache" / "file-hashes-v2.db")

    def preload(self, root: Path) -> None:
        """Read every cached entry under ``root`` at once (one query, not one per file)."""
        prefix = str(root) + os.sep
        if prefix in self.loaded:
            return
        self.loaded.add(prefix)
        rows = self.db.execute(
            "SELECT path, size, mtime_ns, ctime_ns, inode, sha256 FROM files "
            "WHERE path >= ? AND path < ?",
            (prefix, prefix[:-1] + chr(ord(os.sep) + 1)),
        )
        self.known.update({p: (s, m, c, i, h) for p, s, m, c, i, h in rows})

    def file_hash(self, path: str | Path, info: os.stat_result) -> str:
        """``path``: absolute, under a root given to ``preload`` (else it is just slower)."""
        key = str(path)
        known = self.known.get(key)
        signature = (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)
        if known is not None and known[:4] == signature:
            return known[4]
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
        value = digest.hexdigest()
        if time.time_ns() - max(info.st_mtime_ns, info.st_ctime_ns) > self.racy_ns:
            self.known[key] = (*signature, value)
            self.pending.append((key, *signature, value))
        return value

    def flush(self) -> None:
        if not self.pending:
            return
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)", self.pending
            )
        self.pending.clear()

    def close(self) -> None:
        self.flush()
        self.db.close()
