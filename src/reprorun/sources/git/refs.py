"""Which commit a version names now: a branch, a tag or the default branch (HEAD), however
it is spelled, is checked against the remote with one ``git ls-remote`` (the mirror fetched
when it moved); a tag is used from the cache, with a warning, only when the remote does not
answer; a commit id needs no check."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from reprorun.errors import GitError, SourceNotFound
from reprorun.sources.base import redact, strip_credentials
from reprorun.sources.git.command import fetch, git, git_remote

# How long a tag's check may wait for the remote before the cached commit is used.
REF_CHECK_TIMEOUT_SECONDS = 20

# What reprorun records as reprorun.source.refCheck.
CHECKED_REMOTE = "remote"  # the version was resolved against what the remote says now
CACHE_OFFLINE = "cache-offline"  # the remote did not answer: the cached tag was used
COMMIT_ID = "commit"  # a commit id: immutable, nothing to check

# A commit id, full or abbreviated: immutable, so it needs no check against the remote.
_COMMIT_ID = re.compile(r"[0-9a-fA-F]{7,40}")
# What may follow a ref name or commit id: git's ~N, ^N, ^{} and ^{commit}, which name a
# commit from the one before them without needing anything but the mirror.
_SUFFIX = re.compile(r"(?:~[0-9]*|\^[0-9]*|\^\{(?:commit)?\})*")
# What git refuses in a ref name (git check-ref-format), most of which means something else
# in a revision: v1:path, a..b, v1@{1}, patterns.
_NOT_IN_A_REF = (":", "?", "*", "[", "\\", "..", "@{", "//", "/.")
_SUPPORTED = (
    "use a branch or tag name (also as refs/heads/NAME, heads/NAME, refs/tags/NAME or "
    "tags/NAME), HEAD (the remote's default branch) or a commit id (7 to 40 hex digits), "
    "optionally followed by ~N, ^N or ^{}"
)


def _is_ref_name(name: str) -> bool:
    return not (
        not name
        or any(s in name for s in _NOT_IN_A_REF)
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
        or name.startswith(("/", "."))
        or name.endswith(("/", ".", ".lock"))
    )


def _parse_version(version: str) -> tuple[str, str]:
    """``version`` as (base, suffix): a ref name or commit id, and the ~N, ^N, ^{} after it."""
    marks = [i for i in (version.find("^"), version.find("~")) if i >= 0]
    cut = min(marks, default=len(version))
    base, suffix = version[:cut], version[cut:]
    if base == "@":  # git's short name for HEAD
        base = "HEAD"
    if (
        not _is_ref_name(base)
        or not _SUFFIX.fullmatch(suffix)
        or (base.startswith("refs/") and not base.startswith(("refs/heads/", "refs/tags/")))
    ):
        raise SourceNotFound(f"Version {version!r} is not supported: {_SUPPORTED}.")
    return base, suffix


def _candidates(base: str) -> tuple[str, ...]:
    """The branches and tags ``base`` may name, in the order git prefers them (git
    rev-parse's rules, restricted to the refs a fetch keeps up to date)."""
    if base.startswith("refs/"):
        return (base,)
    full = (f"refs/{base}",) if base.startswith(("heads/", "tags/")) else ()
    return (*full, f"refs/tags/{base}", f"refs/heads/{base}")


def _pairs(listing: str) -> list[tuple[str, str]]:
    """git's ``<value>TAB<ref>`` lines as (value, ref) pairs."""
    lines = (line.partition("\t") for line in listing.splitlines())
    return [(value, ref) for value, tab, ref in lines if tab]


def _local_refs(mirror: Path, url: str, refs: tuple[str, ...]) -> dict[str, str]:
    """Which of ``refs`` the mirror has: {ref: object id}."""
    done = git(
        ["for-each-ref", "--format=%(objectname)%09%(refname)", *refs],
        url,
        cwd=mirror,
        check=False,
    )
    return {ref: oid for oid, ref in _pairs(done.stdout) if ref in refs}


def _ls_remote(mirror: Path, url: str, args: list[str]) -> list[tuple[str, str]] | str:
    """``git ls-remote args`` as (value, ref) pairs, or why the remote did not answer."""
    try:
        done = git_remote(["ls-remote", *args], url, cwd=mirror, timeout=REF_CHECK_TIMEOUT_SECONDS)
    except GitError as exc:  # timed out
        return str(exc)
    if done.returncode != 0:
        lines = redact(done.stderr or done.stdout, url).strip().splitlines()
        return lines[-1] if lines else f"git ls-remote exited with {done.returncode}"
    return _pairs(done.stdout)


def _remote_refs(mirror: Path, url: str, refs: tuple[str, ...]) -> dict[str, str] | str:
    """Which of ``refs`` the remote has ({ref: object id}, one ls-remote), or why the
    remote did not answer."""
    listing = _ls_remote(mirror, url, ["--", "{url}", *refs])
    if isinstance(listing, str):
        return listing
    return {ref: oid for oid, ref in listing if ref in refs}


def _remote_head(mirror: Path, url: str) -> tuple[str | None, str | None] | str:
    """The remote's default branch and its commit (one ls-remote; the branch is None when
    the server does not say, the commit when it has none), or why it did not answer."""
    listing = _ls_remote(mirror, url, ["--symref", "--", "{url}", "HEAD"])
    if isinstance(listing, str):
        return listing
    head = [value for value, ref in listing if ref == "HEAD"]
    branch = next((v[5:] for v in head if v.startswith("ref: ")), None)
    if branch is not None and not (branch.startswith("refs/heads/") and _is_ref_name(branch)):
        branch = None  # not something to point the mirror's HEAD at
    return branch, next((v for v in head if not v.startswith("ref: ")), None)


@dataclass(frozen=True)
class Resolved:
    commit: str
    branch: str | None
    check: str  # CHECKED_REMOTE | CACHE_OFFLINE | COMMIT_ID
    warning: str | None = None


def _rev_parse(mirror: Path, url: str, rev: str) -> str | None:
    done = git(
        ["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], url, cwd=mirror, check=False
    )
    return done.stdout.strip() if done.returncode == 0 else None


def resolve_version(mirror: Path, url: str, version: str | None, fetched: bool) -> Resolved:
    """The commit ``version`` names now. Only a commit id is taken from the mirror unchecked;
    every other version is a branch, a tag or HEAD (whatever follows it, ~N, ^N or ^{}, is
    applied to it afterwards), checked against the remote first. ``fetched``: the mirror
    was just cloned or fetched, so it is what the remote has now."""
    if version is None:
        return _resolve_head(mirror, url, None, "", fetched)
    if version.startswith("-") or not version.strip() or any(c.isspace() for c in version):
        raise SourceNotFound(f"Invalid version {version!r}: expected a branch, tag or commit.")
    base, suffix = _parse_version(version)
    if _COMMIT_ID.fullmatch(base):
        commit = _rev_parse(mirror, url, base)
        if commit is None and not fetched:
            fetch(mirror, url)
            fetched = True
            commit = _rev_parse(mirror, url, base)
        if commit is not None and commit.startswith(base.lower()):
            if suffix:
                found = _rev_parse(mirror, url, commit + suffix)
                commit = _no_commit(version, url, f"commit {base}", suffix, found)
            return Resolved(commit, None, COMMIT_ID)
        # Not a commit (git found a branch or tag named like one, or nothing): a ref.
    if base == "HEAD":
        return _resolve_head(mirror, url, version, suffix, fetched)
    return _resolve_ref(mirror, url, version, base, suffix, fetched)


def _no_commit(version: str, url: str, base: str, suffix: str, commit: str | None) -> str:
    """``commit``, or an error saying that ``suffix`` leads nowhere from ``base``."""
    if commit is None:
        raise SourceNotFound(
            f"Version {version!r} names no commit of {strip_credentials(url)}: "
            f"{base} has no {suffix!r}."
        )
    return commit


def _resolve_ref(
    mirror: Path, url: str, version: str, base: str, suffix: str, fetched: bool
) -> Resolved:
    """A branch or tag (checked against the remote with one ls-remote, fetched when it
    moved), then ``suffix`` from its commit."""
    candidates = _candidates(base)
    warning = None
    local = {} if fetched else _local_refs(mirror, url, candidates)
    if local:
        remote = _remote_refs(mirror, url, candidates)
        if isinstance(remote, str):
            if any(ref.startswith("refs/heads/") for ref in local):
                fetch(mirror, url)  # a branch moves: without the remote, it is an error
                fetched = True
            else:
                warning = _offline_warning(url, version, remote)
        elif remote != local:  # moved, created or deleted upstream
            fetch(mirror, url)
            fetched = True
    elif not fetched:  # not in the mirror (yet)
        fetch(mirror, url)
        fetched = True
    if fetched:
        local = _local_refs(mirror, url, candidates)  # what the fetch brought
    ref = next((r for r in candidates if r in local), None)
    if ref is None:
        raise SourceNotFound(
            f"Version {version!r} is not a branch, tag or commit of {strip_credentials(url)}. "
            f"{_known_refs(mirror, url)}"
        )
    commit = _no_commit(version, url, ref, suffix, _rev_parse(mirror, url, ref + suffix))
    branch = ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None
    if suffix:
        branch = None  # not the branch's commit
    if warning is not None:
        return Resolved(commit, branch, CACHE_OFFLINE, f"{warning} (commit {commit[:12]})")
    return Resolved(commit, branch, CHECKED_REMOTE)


def _resolve_head(
    mirror: Path, url: str, version: str | None, suffix: str, fetched: bool
) -> Resolved:
    """The remote's default branch (checked with one ls-remote, which also says which branch
    it is now; fetched when it moved), then ``suffix`` from its commit."""
    symbolic = git(["symbolic-ref", "--quiet", "HEAD"], url, cwd=mirror, check=False)
    head = symbolic.stdout.strip() or None
    commit = None
    if not fetched:
        remote = _remote_head(mirror, url)
        if isinstance(remote, str):
            fetch(mirror, url)  # the default branch moves: without the remote, an error
        else:
            branch, oid = remote
            if oid is None:
                raise SourceNotFound(f"{strip_credentials(url)} has no commits.")
            if branch is not None and branch != head:  # a new default branch upstream
                git(["symbolic-ref", "HEAD", branch], url, cwd=mirror)
                head = branch
            commit = _rev_parse(mirror, url, "HEAD")
            if commit != oid:
                fetch(mirror, url)
                commit = None
    if commit is None or suffix:
        commit = _rev_parse(mirror, url, "HEAD" + suffix)
    if commit is None and not suffix:
        raise SourceNotFound(f"{strip_credentials(url)} has no commits.")
    commit = _no_commit(version or "HEAD", url, "HEAD", suffix, commit)
    name = head.removeprefix("refs/heads/") if head and head.startswith("refs/heads/") else None
    return Resolved(commit, None if suffix else name, CHECKED_REMOTE)


def _offline_warning(url: str, version: str, reason: str) -> str:
    return (
        f"could not check tag {version!r} against {strip_credentials(url)} ({reason}); "
        "running the commit it named when last fetched, which may have moved since"
    )


def _known_refs(mirror: Path, url: str) -> str:
    done = git(
        ["for-each-ref", "--format=%(refname)", "refs/heads", "refs/tags"],
        url,
        cwd=mirror,
        check=False,
    )
    heads = [
        r.removeprefix("refs/heads/") for r in done.stdout.split() if r.startswith("refs/heads/")
    ]
    tags = [r.removeprefix("refs/tags/") for r in done.stdout.split() if r.startswith("refs/tags/")]
    text = f"Branches: {', '.join(heads[:20]) or 'none'}."
    return text + (f" Tags: {', '.join(tags[-20:])}." if tags else "")
