"""How two runs differ: parameters, code, environment, data, backend, metrics, fingerprint.

``diff_runs`` returns plain JSON-able data with stable keys; ``reprorun runs diff`` renders it.
Nothing here prints. Whatever cannot be compared (no commit, no repository holding both
commits, no lock file, no fingerprint) is reported as a reason string, never raised, so one
missing piece never hides the rest of the report. Unknown run ids raise the store's own
``ResourceNotFound``.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from reprorun.errors import ReprorunError

# The run's fingerprint (a sha256 of its parts) and its parts as JSON: data content hashes per
# `path` parameter, the source tree, the environment, the entry point. Older runs have neither.
from reprorun.projects.fingerprint import PARTS_TAG as FINGERPRINT_PARTS_TAG
from reprorun.projects.fingerprint import TAG as FINGERPRINT_TAG
from reprorun.tracking.entities import Run, SystemTags

if TYPE_CHECKING:
    from reprorun.tracking.store.base import TrackingStore


MAX_SUBJECTS = 20  # one-line commit subjects listed per direction
GIT_TIMEOUT_SECONDS = 30
_COMMIT_RE = re.compile(r"[0-9a-f]{7,64}")  # also keeps option-like text away from git's argv
# Read-only git commands, never prompting, in C locale; the caller's GIT_DIR & co. must not
# redirect them to another repository.
_GIT_ENV_DROP = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY")
_GIT_ENV_SET = {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_OPTIONAL_LOCKS": "0"}


def diff_runs(store: TrackingStore, run_a_id: str, run_b_id: str) -> dict[str, Any]:
    """Compare run A (the baseline) with run B. Ids may be unique prefixes."""
    run_a = store.get_run(store.resolve_run_id(run_a_id))
    run_b = store.get_run(store.resolve_run_id(run_b_id))
    tracking_uri = getattr(store, "uri", None)
    return {
        "runs": {"a": _run_summary(run_a), "b": _run_summary(run_b)},
        "params": diff_mappings(run_a.data.params, run_b.data.params),
        "code": diff_code(run_a.data.tags, run_b.data.tags),
        "environment": _diff_environment(run_a, run_b, tracking_uri),
        "data": diff_data(fingerprint_parts(run_a.data.tags), fingerprint_parts(run_b.data.tags)),
        "backend": _side_by_side(
            run_a.data.tags.get(SystemTags.BACKEND), run_b.data.tags.get(SystemTags.BACKEND)
        ),
        "metrics": diff_metrics(run_a.data.metrics, run_b.data.metrics),
        "fingerprint": diff_fingerprints(run_a.data.tags, run_b.data.tags),
    }


def _run_summary(run: Run) -> dict[str, Any]:
    info = run.info
    return {
        "run_id": info.run_id,
        "run_name": info.run_name,
        "experiment_id": info.experiment_id,
        "status": info.status.value,
        "start_time": info.start_time,
        "end_time": info.end_time,
    }


def _side_by_side(a: str | None, b: str | None) -> dict[str, Any]:
    return {"a": a, "b": b, "same": a == b}


# parameters ---------------------------------------------------------------------------------


def diff_mappings(a: Mapping[str, str], b: Mapping[str, str]) -> dict[str, Any]:
    """Keys added in B, removed from A, changed (with both values); how many are the same."""
    added = {k: b[k] for k in sorted(b.keys() - a.keys())}
    removed = {k: a[k] for k in sorted(a.keys() - b.keys())}
    changed = {k: {"a": a[k], "b": b[k]} for k in sorted(a.keys() & b.keys()) if a[k] != b[k]}
    return {
        "same": not (added or removed or changed),
        "added": added,
        "removed": removed,
        "changed": changed,
        "unchanged": len(a.keys() & b.keys()) - len(changed),
    }


# metrics ------------------------------------------------------------------------------------


def _equal(x: float, y: float) -> bool:
    return x == y or (math.isnan(x) and math.isnan(y))


def diff_metrics(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, Any]:
    """Latest values in both runs: absolute and relative change (relative is None from 0)."""
    changed: dict[str, dict[str, Any]] = {}
    unchanged: dict[str, float] = {}
    for key in sorted(a.keys() & b.keys()):
        va, vb = float(a[key]), float(b[key])
        if _equal(va, vb):
            unchanged[key] = va
            continue
        delta = vb - va
        relative = delta / abs(va) if va != 0 and math.isfinite(va) else None
        changed[key] = {"a": va, "b": vb, "delta": delta, "relative": relative}
    return {
        "same": not changed and a.keys() == b.keys(),
        "changed": changed,
        "unchanged": unchanged,
        "only_a": {k: float(a[k]) for k in sorted(a.keys() - b.keys())},
        "only_b": {k: float(b[k]) for k in sorted(b.keys() - a.keys())},
    }


# code ---------------------------------------------------------------------------------------


def _code_side(tags: Mapping[str, str]) -> dict[str, Any]:
    dirty = tags.get(SystemTags.GIT_DIRTY)
    return {
        "commit": tags.get(SystemTags.GIT_COMMIT),
        "repo_url": tags.get(SystemTags.GIT_REPO_URL),
        "branch": tags.get(SystemTags.GIT_BRANCH),
        "source": tags.get(SystemTags.SOURCE_NAME),
        "source_kind": tags.get(SystemTags.SOURCE_KIND),
        "dirty": None if dirty is None else dirty == "true",
        "uncommitted_diff": tags.get(SystemTags.GIT_DIFF) if dirty == "true" else None,
    }


def diff_code(tags_a: Mapping[str, str], tags_b: Mapping[str, str]) -> dict[str, Any]:
    """Each run's commit and dirty flag; between the commits, the log and per-file line counts
    (``range``), or why they cannot be had (``range_unavailable``)."""
    side_a, side_b = _code_side(tags_a), _code_side(tags_b)
    commit_a, commit_b = side_a["commit"], side_b["commit"]
    result: dict[str, Any] = {
        "a": side_a,
        "b": side_b,
        "same_commit": None,
        "range": None,
        "range_unavailable": None,
    }
    missing = [name for name, c in (("A", commit_a), ("B", commit_b)) if not c]
    if missing:
        result["range_unavailable"] = (
            f"run {' and '.join(missing)} recorded no git commit (not run from a git checkout)"
        )
        return result
    result["same_commit"] = commit_a == commit_b
    if commit_a == commit_b:
        return result
    bad = [c for c in (commit_a, commit_b) if not _COMMIT_RE.fullmatch(c)]
    if bad:
        result["range_unavailable"] = f"not a commit id: {bad[0]!r}"
        return result
    candidates = list(
        dict.fromkeys([*repository_candidates(tags_a), *repository_candidates(tags_b)])
    )
    try:
        repo = find_repository(candidates, [commit_a, commit_b])
        if repo is None:
            result["range_unavailable"] = (
                "no repository on this machine holds both commits (looked in: "
                + ", ".join(str(c) for c in candidates)
                + ")"
                if candidates
                else "no checkout or mirror of the repository on this machine"
            )
            return result
        result["range"] = commit_range(repo, commit_a, commit_b)
    except GitUnavailable as exc:
        result["range_unavailable"] = str(exc)
    return result


class GitUnavailable(Exception):
    """git is missing, timed out or failed: the range is reported unavailable, with this."""


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in _GIT_ENV_DROP} | _GIT_ENV_SET
    try:
        done = subprocess.run(
            ["git", "--no-pager", *args],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=GIT_TIMEOUT_SECONDS,
        )
    except FileNotFoundError as exc:
        raise GitUnavailable("git is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise GitUnavailable(
            f"git {args[0]} in {repo} took more than {GIT_TIMEOUT_SECONDS} s"
        ) from exc
    if check and done.returncode != 0:
        raise GitUnavailable(f"git {args[0]} failed in {repo}: {done.stderr.strip()[:500]}")
    return done


def _local_path(location: str) -> Path | None:
    """A repository URL that names a folder on this machine (a path or file:// URI)."""
    parsed = urlparse(location)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if not parsed.scheme and location.startswith("/"):
        return Path(location)
    return None


def repository_candidates(tags: Mapping[str, str]) -> list[Path]:
    """Where a run's commit may be found: the checkout at (or above) its project folder for
    local sources, reprorun's mirror of its repository URL, a local repository URL itself."""
    found: list[Path] = []
    project_dir = tags.get(SystemTags.PROJECT_DIR)
    if project_dir and tags.get(SystemTags.SOURCE_KIND, "local") == "local":
        # git looks upward from here; the folder itself may be gone in a later checkout.
        folder = Path(project_dir)
        existing = next((p for p in (folder, *folder.parents) if p.is_dir()), None)
        if folder.is_absolute() and existing is not None and existing != Path(existing.anchor):
            found.append(existing)
    repo_url = tags.get(SystemTags.GIT_REPO_URL)
    if repo_url:
        from reprorun.sources.cache import key_for, sources_root

        mirror = sources_root() / "git" / key_for(repo_url) / "mirror.git"
        if mirror.is_dir():
            found.append(mirror)
        local = _local_path(repo_url)
        if local is not None and local.is_dir():
            found.append(local)
    return found


def find_repository(candidates: Iterable[Path], commits: Iterable[str]) -> Path | None:
    """The first candidate in which every commit exists."""
    wanted = list(commits)
    for repo in candidates:
        if all(
            _git(repo, "cat-file", "-e", f"{c}^{{commit}}", check=False).returncode == 0
            for c in wanted
        ):
            return repo
    return None


def _log(repo: Path, spec: str) -> list[dict[str, str]]:
    out = _git(repo, "log", f"-n{MAX_SUBJECTS}", "--format=%H%x09%s", spec, "--").stdout
    entries = []
    for line in out.splitlines():
        commit, _, subject = line.partition("\t")
        entries.append({"commit": commit, "subject": subject})
    return entries


def changed_files(repo: Path, commit_a: str, commit_b: str) -> list[dict[str, Any]]:
    """``git diff --numstat A B``: each changed file with the lines added and deleted (None
    for binary files)."""
    numstat = _git(
        repo,
        "diff",
        "--numstat",
        "-z",
        "--no-renames",
        "--no-ext-diff",
        "--no-textconv",
        commit_a,
        commit_b,
        "--",
    ).stdout
    files = []
    for record in filter(None, numstat.split("\0")):
        added, deleted, path = record.split("\t", 2)
        files.append(
            {
                "path": path,
                "added": int(added) if added.isdigit() else None,
                "deleted": int(deleted) if deleted.isdigit() else None,
            }
        )
    return files


def commit_range(repo: Path, commit_a: str, commit_b: str) -> dict[str, Any]:
    """Commits from A to B (in B, not in A) and back (in A, not in B; both non-zero when the
    histories diverged), up to MAX_SUBJECTS subjects each, newest first; and the changed
    files (``changed_files``)."""
    forward = int(_git(repo, "rev-list", "--count", f"{commit_a}..{commit_b}", "--").stdout)
    backward = int(_git(repo, "rev-list", "--count", f"{commit_b}..{commit_a}", "--").stdout)
    files = changed_files(repo, commit_a, commit_b)
    return {
        "repository": str(repo),
        "commits_a_to_b": forward,
        "commits_b_to_a": backward,
        "log_a_to_b": _log(repo, f"{commit_a}..{commit_b}") if forward else [],
        "log_b_to_a": _log(repo, f"{commit_b}..{commit_a}") if backward else [],
        "files": files,
        "insertions": sum(f["added"] or 0 for f in files),
        "deletions": sum(f["deleted"] or 0 for f in files),
    }


# environment --------------------------------------------------------------------------------


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


_CONDA_PACKAGE = re.compile(r"/([^/]+)-([^-/]+)-([^-/]+)\.(?:conda|tar\.bz2)$")


def parse_lock(text: str) -> dict[str, str]:
    """Package name -> version from a lock file: ``# comment`` lines, then ``name==version``
    lines (pip/uv freeze; ``name @ url`` keeps the URL as the version), or the URLs of a conda
    explicit list. Names are kept as written; compare them with ``diff_packages``."""
    packages: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip()  # environment markers aside
        if not line or line.startswith(("#", "@")):
            continue
        conda = _CONDA_PACKAGE.search(line)
        if "==" in line:
            name, _, version = line.partition("==")
        elif " @ " in line:
            name, _, url = line.partition(" @ ")
            version = "@ " + url
        elif conda is not None:
            name, version = conda.group(1), conda.group(2)
        else:
            name, version = line, ""
        packages[name.strip()] = version.strip()
    return packages


def diff_packages(a: Mapping[str, str], b: Mapping[str, str]) -> dict[str, Any]:
    """Added, removed and changed packages, names compared as PEP 503 normalises them."""
    names_a = {_normalise(k): k for k in a}
    names_b = {_normalise(k): k for k in b}
    added = {names_b[n]: b[names_b[n]] for n in sorted(names_b.keys() - names_a.keys())}
    removed = {names_a[n]: a[names_a[n]] for n in sorted(names_a.keys() - names_b.keys())}
    changed = {
        names_b[n]: {"a": a[names_a[n]], "b": b[names_b[n]]}
        for n in sorted(names_a.keys() & names_b.keys())
        if a[names_a[n]] != b[names_b[n]]
    }
    return {
        "same": not (added or removed or changed),
        "added": added,
        "removed": removed,
        "changed": changed,
        "unchanged": len(names_a.keys() & names_b.keys()) - len(changed),
    }


def read_lock(run: Run, tracking_uri: str | None = None) -> tuple[str | None, str | None]:
    """(lock text, None) or (None, why there is none) for one run."""
    from reprorun.tracking.artifacts import download, is_remote, local_path

    path = run.data.tags.get(SystemTags.ENV_LOCK)
    if not path:
        return None, "no lock recorded"
    artifact_uri = run.info.artifact_uri
    try:
        if is_remote(artifact_uri):
            with tempfile.TemporaryDirectory(prefix="reprorun-diff-") as tmp:
                local = download(artifact_uri, path, tmp, tracking_uri=tracking_uri)
                return local.read_text(encoding="utf-8", errors="replace"), None
        file = local_path(artifact_uri, path)
        if not file.is_file():
            return None, f"lock artifact {path} is missing"
        return file.read_text(encoding="utf-8", errors="replace"), None
    except (ReprorunError, OSError) as exc:
        return None, f"lock artifact {path} unreadable: {exc}"


def _lock_header(text: str) -> str | None:
    first = next((line for line in text.splitlines() if line.startswith("#")), None)
    return first.lstrip("# ").strip() if first else None


def _env_side(run: Run) -> dict[str, Any]:
    tags = run.data.tags
    return {
        "manager": tags.get(SystemTags.ENV),
        "hash": tags.get(SystemTags.ENV_HASH),
        "python": tags.get(SystemTags.ENV_PYTHON),
        "image": tags.get(SystemTags.ENV_IMAGE),
        "lock": tags.get(SystemTags.ENV_LOCK),
    }


def _diff_environment(run_a: Run, run_b: Run, tracking_uri: str | None) -> dict[str, Any]:
    side_a, side_b = _env_side(run_a), _env_side(run_b)
    result: dict[str, Any] = {
        "a": side_a,
        "b": side_b,
        "same": all(side_a[k] == side_b[k] for k in ("manager", "hash", "python", "image")),
        "packages": None,
        "packages_unavailable": None,
    }
    text_a, why_a = read_lock(run_a, tracking_uri)
    text_b, why_b = read_lock(run_b, tracking_uri)
    side_a["lock_header"] = _lock_header(text_a) if text_a is not None else None
    side_b["lock_header"] = _lock_header(text_b) if text_b is not None else None
    if text_a is None or text_b is None:
        reasons = [f"run {n}: {why}" for n, why in (("A", why_a), ("B", why_b)) if why]
        result["packages_unavailable"] = "; ".join(reasons)
        return result
    result["packages"] = diff_packages(parse_lock(text_a), parse_lock(text_b))
    result["same"] = result["same"] and result["packages"]["same"]
    return result


# fingerprints and data ----------------------------------------------------------------------


def fingerprint_parts(tags: Mapping[str, str]) -> dict[str, Any] | None:
    """The run's fingerprint parts (``reprorun.fingerprint.parts``), None when not recorded."""
    text = tags.get(FINGERPRINT_PARTS_TAG)
    if not text:
        return None
    try:
        parts = json.loads(text)
    except ValueError:
        return None
    return parts if isinstance(parts, dict) else None


def diff_data(
    parts_a: Mapping[str, Any] | None, parts_b: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Per ``path`` parameter, whether the content hash of its file or folder is the same."""
    if parts_a is None or parts_b is None:
        missing = [n for n, p in (("A", parts_a), ("B", parts_b)) if p is None]
        return {
            "recorded": False,
            "not_recorded": f"data fingerprints not recorded for run {' and '.join(missing)}",
            "same": None,
            "params": {},
        }
    data_a = parts_a.get("data") or {}
    data_b = parts_b.get("data") or {}
    params: dict[str, dict[str, Any]] = {}
    for name in sorted(data_a.keys() | data_b.keys()):
        ha, hb = data_a.get(name), data_b.get(name)
        if ha is None:
            status = "only_b"
        elif hb is None:
            status = "only_a"
        else:
            status = "same" if ha == hb else "changed"
        params[name] = {"status": status, "a": ha, "b": hb}
    return {
        "recorded": True,
        "not_recorded": None,
        "same": all(p["status"] == "same" for p in params.values()),
        "params": params,
    }


def diff_fingerprints(tags_a: Mapping[str, str], tags_b: Mapping[str, str]) -> dict[str, Any]:
    """The whole fingerprints, and which of their parts (source tree, commit, dirty flag,
    entry point, params, environment, data) differ, each side by side."""
    fp_a, fp_b = tags_a.get(FINGERPRINT_TAG), tags_b.get(FINGERPRINT_TAG)
    parts_a, parts_b = fingerprint_parts(tags_a), fingerprint_parts(tags_b)
    parts: dict[str, dict[str, Any]] = {}
    if parts_a is not None and parts_b is not None:
        names = sorted((parts_a.keys() | parts_b.keys()) - {"version"})
        parts = {n: _side_by_side(parts_a.get(n), parts_b.get(n)) for n in names}
    return {
        "a": fp_a,
        "b": fp_b,
        "recorded": bool(fp_a and fp_b),
        "same": (fp_a == fp_b) if fp_a and fp_b else None,
        "parts": parts,
    }
