"""Projects from git repositories: one mirror per URL, one immutable snapshot per commit.

Layout under ``<home>/sources/git/<key>/``: ``mirror.git`` (a bare mirror clone), ``lock``,
and ``snapshots/<commit>/`` (the tree at that commit, files read-only). The mirror is fetched
only when the requested version is not already there or has moved: a branch, a tag or the
default branch (HEAD) is checked against the remote with one ``git ls-remote``, however it is
spelled (``v1``, ``tags/v1``, ``refs/tags/v1``, ``v1^{}``, ``main~2``, ``HEAD``); a tag is used
from the cache, with a warning, only when the remote does not answer (a branch never is).
Only a commit id (7 to 40 hex digits that the commit found starts with) needs no check.
Authentication is the user's own git configuration, or ``user:password@`` in an http(s) URL,
which git gets through a credential helper reading this process's environment: never on a
command line or in a file.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse, urlunparse

from reprorun._utils import die_with_parent
from reprorun.errors import GitError, SourceNotFound
from reprorun.sources.base import Provenance, ResolvedSource, redact, strip_credentials
from reprorun.sources.cache import (
    key_for,
    lock,
    make_read_only,
    publish,
    remove_stale_builds,
    sources_root,
)

GIT_TIMEOUT_SECONDS = 600
# How long a tag's check may wait for the remote before the cached commit is used.
REF_CHECK_TIMEOUT_SECONDS = 20
# No terminal prompts for credentials: a missing credential is an error the user can act on.
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": "", "LC_ALL": "C"}

# What reprorun records as reprorun.source.refCheck.
CHECKED_REMOTE = "remote"  # the version was resolved against what the remote says now
CACHE_OFFLINE = "cache-offline"  # the remote did not answer: the cached tag was used
COMMIT_ID = "commit"  # a commit id: immutable, nothing to check

# The credential helper for user:password@ in an http(s) URL. git runs it with "get" (or
# "store"/"erase", ignored) and the request on stdin; it answers only for the URL's own host
# (not for a host a redirect leads to), from variables in git's environment, which only the
# user (and root) can read, unlike a command line.
_HELPER = (
    '!f() { test "$1" = get || return 0; h=; '
    'while IFS= read -r line && test -n "$line"; do '
    'case "$line" in host=*) h="${line#host=}";; esac; done; '
    'test "$h" = "$REPRORUN_GIT_HOST" || return 0; '
    'printf \'username=%s\\npassword=%s\\n\' "$REPRORUN_GIT_USERNAME" "$REPRORUN_GIT_PASSWORD"; '
    "}; f"
)

# git talking to a server runs under this shell, in a process group of its own. When reprorun
# dies, even by SIGKILL, the kernel sends the shell SIGTERM (PR_SET_PDEATHSIG) and it kills
# the whole group: git and the helpers git starts (git-remote-http, upload-pack, index-pack),
# which a signal to git alone would leave running.
_GROUP_GUARD = 'trap "kill -KILL 0" TERM; "$@" & wait $!'


_NO_GIT = "git is not installed (reprorun needs the git command for git URLs)."


@dataclass(frozen=True)
class _Remote:
    """How git reaches a URL: the address it is given (no user:password) and, when the URL
    carried credentials, the options and environment of the helper that hands them over."""

    address: str
    options: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    own_group: bool = True  # False for ssh, which may need the terminal (passphrase, host key)


def _remote(url: str) -> _Remote:
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    over_ssh = scheme in ("ssh", "git+ssh") or (not scheme and "@" in url and ":" in url)
    if not (scheme and "@" in parsed.netloc):
        return _Remote(url, own_group=not over_ssh)
    userinfo, host = parsed.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    if scheme not in ("http", "https"):
        # ssh://user:password@: ssh asks for passwords itself; the user name stays.
        return _Remote(urlunparse(parsed._replace(netloc=f"{user}@{host}")), own_group=False)
    username, secret = unquote(user), unquote(password)
    if any(c in username + secret for c in "\n\r\0"):
        raise GitError(
            f"The credentials in {strip_credentials(url)} contain a line break or NUL, which "
            "git cannot pass on: check the URL."
        )
    return _Remote(
        address=urlunparse(parsed._replace(netloc=host)),
        # The first (empty) entry drops the user's own helpers for this command: a `store`
        # helper would otherwise save the URL's password to disk once it worked.
        options=("-c", "credential.helper=", "-c", f"credential.helper={_HELPER}"),
        env=(
            ("REPRORUN_GIT_HOST", host),
            ("REPRORUN_GIT_USERNAME", username),
            ("REPRORUN_GIT_PASSWORD", secret),
        ),
    )


def _git(
    args: list[str], url: str, *, cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """A local git command (in the mirror): short, and never given credentials."""
    done = _run(["git", *args], url, args[0], cwd=cwd, env={}, own_group=False)
    if check and done.returncode != 0:
        raise _failed(args[0], url, done)
    return done


def _git_remote(
    args: list[str],
    url: str,
    *,
    cwd: Path | None = None,
    timeout: float = GIT_TIMEOUT_SECONDS,
) -> subprocess.CompletedProcess[str]:
    """git ``args`` talking to ``url``'s server: ``args`` name the URL as ``{url}``, which is
    replaced by the address without credentials (they go through the helper)."""
    remote = _remote(url)
    argv = ["git", *remote.options, *(remote.address if a == "{url}" else a for a in args)]
    return _run(
        argv,
        url,
        args[0],
        cwd=cwd,
        env=dict(remote.env),
        own_group=remote.own_group,
        timeout=timeout,
    )


def _run(
    argv: list[str],
    url: str,
    verb: str,
    *,
    cwd: Path | None,
    env: dict[str, str],
    own_group: bool,
    timeout: float = GIT_TIMEOUT_SECONDS,
) -> subprocess.CompletedProcess[str]:
    if own_group:
        argv = ["sh", "-c", _GROUP_GUARD, "sh", *argv]
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env={**os.environ, **_GIT_ENV, **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=own_group,
            # Only where it matters: a preexec_fn makes every start a slower fork().
            preexec_fn=die_with_parent(signal.SIGTERM) if own_group else None,
        )
    except FileNotFoundError as exc:
        raise GitError(_NO_GIT) from exc
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException as exc:  # a timeout, Ctrl-C: nothing of git's stays behind
        _kill(proc, own_group)
        if isinstance(exc, subprocess.TimeoutExpired):
            raise GitError(
                f"git {verb} of {strip_credentials(url)} timed out after {timeout:g} s."
            ) from None
        raise
    if own_group and proc.returncode == 127 and "git" in err and "not found" in err:
        raise GitError(_NO_GIT)  # the shell could not find git
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _kill(proc: subprocess.Popen[str], group: bool) -> None:
    try:
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except ProcessLookupError:
        pass
    proc.communicate()


def _failed(verb: str, url: str, done: subprocess.CompletedProcess[str]) -> GitError:
    message = redact((done.stderr or done.stdout).strip(), url)
    return GitError(f"git {verb} failed for {strip_credentials(url)}: {message}")


def resolve_git(url: str, version: str | None, subdirectory: str | None) -> ResolvedSource:
    """Fetch (if needed) and snapshot ``url`` at ``version``; return the project directory."""
    clean_url = strip_credentials(url)
    root = sources_root() / "git" / key_for(clean_url)
    mirror = root / "mirror.git"
    with lock(root / "lock"):
        remove_stale_builds(root)  # clones and exports of a process killed midway
        remove_stale_builds(root / "snapshots")
        if not mirror.exists():
            publish(mirror, lambda tmp: _clone(url, tmp), private=True)
            fetched = True
        else:
            fetched = False
        resolved = _resolve_version(mirror, url, version, fetched)
        commit = resolved.commit
        snapshot = root / "snapshots" / commit
        publish(snapshot, lambda tmp: _export(mirror, url, commit, tmp), private=True)
    directory = snapshot
    if subdirectory:
        directory = (snapshot / subdirectory).resolve()
        if not directory.is_relative_to(snapshot) or not directory.is_dir():
            raise SourceNotFound(
                f"{clean_url}: commit {commit[:12]} has no directory {subdirectory!r}."
            )
    provenance = Provenance(
        source_name=clean_url + (f"#{subdirectory}" if subdirectory else ""),
        source_kind="git",
        git_commit=commit,
        git_repo_url=clean_url,
        git_branch=resolved.branch,
        git_dirty=False,
        subdirectory=subdirectory,
        version=version,
        uri=clean_url + (f"#{subdirectory}" if subdirectory else ""),
        ref_check=resolved.check,
        ref_check_warning=resolved.warning,
    )
    return ResolvedSource(directory, provenance, snapshot=snapshot)


_REFSPECS = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]


def _clone(url: str, dest: Path) -> None:
    # The mirror is configured with the address alone: no credentials are ever stored.
    done = _git_remote(["clone", "--mirror", "--quiet", "--", "{url}", str(dest)], url)
    if done.returncode != 0:
        raise _failed("clone", url, done)


def _fetch(mirror: Path, url: str) -> None:
    done = _git_remote(["fetch", "--prune", "--quiet", "--", "{url}", *_REFSPECS], url, cwd=mirror)
    if done.returncode != 0:
        raise _failed("fetch", url, done)


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
    done = _git(
        ["for-each-ref", "--format=%(objectname)%09%(refname)", *refs],
        url,
        cwd=mirror,
        check=False,
    )
    return {ref: oid for oid, ref in _pairs(done.stdout) if ref in refs}


def _ls_remote(mirror: Path, url: str, args: list[str]) -> list[tuple[str, str]] | str:
    """``git ls-remote args`` as (value, ref) pairs, or why the remote did not answer."""
    try:
        done = _git_remote(["ls-remote", *args], url, cwd=mirror, timeout=REF_CHECK_TIMEOUT_SECONDS)
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
class _Resolved:
    commit: str
    branch: str | None
    check: str  # CHECKED_REMOTE | CACHE_OFFLINE | COMMIT_ID
    warning: str | None = None


def _rev_parse(mirror: Path, url: str, rev: str) -> str | None:
    done = _git(
        ["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], url, cwd=mirror, check=False
    )
    return done.stdout.strip() if done.returncode == 0 else None


def _resolve_version(mirror: Path, url: str, version: str | None, fetched: bool) -> _Resolved:
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
            _fetch(mirror, url)
            fetched = True
            commit = _rev_parse(mirror, url, base)
        if commit is not None and commit.startswith(base.lower()):
            if suffix:
                found = _rev_parse(mirror, url, commit + suffix)
                commit = _no_commit(version, url, f"commit {base}", suffix, found)
            return _Resolved(commit, None, COMMIT_ID)
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
) -> _Resolved:
    """A branch or tag (checked against the remote with one ls-remote, fetched when it
    moved), then ``suffix`` from its commit."""
    candidates = _candidates(base)
    warning = None
    local = {} if fetched else _local_refs(mirror, url, candidates)
    if local:
        remote = _remote_refs(mirror, url, candidates)
        if isinstance(remote, str):
            if any(ref.startswith("refs/heads/") for ref in local):
                _fetch(mirror, url)  # a branch moves: without the remote, it is an error
                fetched = True
            else:
                warning = _offline_warning(url, version, remote)
        elif remote != local:  # moved, created or deleted upstream
            _fetch(mirror, url)
            fetched = True
    elif not fetched:  # not in the mirror (yet)
        _fetch(mirror, url)
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
        return _Resolved(commit, branch, CACHE_OFFLINE, f"{warning} (commit {commit[:12]})")
    return _Resolved(commit, branch, CHECKED_REMOTE)


def _resolve_head(
    mirror: Path, url: str, version: str | None, suffix: str, fetched: bool
) -> _Resolved:
    """The remote's default branch (checked with one ls-remote, which also says which branch
    it is now; fetched when it moved), then ``suffix`` from its commit."""
    symbolic = _git(["symbolic-ref", "--quiet", "HEAD"], url, cwd=mirror, check=False)
    head = symbolic.stdout.strip() or None
    commit = None
    if not fetched:
        remote = _remote_head(mirror, url)
        if isinstance(remote, str):
            _fetch(mirror, url)  # the default branch moves: without the remote, an error
        else:
            branch, oid = remote
            if oid is None:
                raise SourceNotFound(f"{strip_credentials(url)} has no commits.")
            if branch is not None and branch != head:  # a new default branch upstream
                _git(["symbolic-ref", "HEAD", branch], url, cwd=mirror)
                head = branch
            commit = _rev_parse(mirror, url, "HEAD")
            if commit != oid:
                _fetch(mirror, url)
                commit = None
    if commit is None or suffix:
        commit = _rev_parse(mirror, url, "HEAD" + suffix)
    if commit is None and not suffix:
        raise SourceNotFound(f"{strip_credentials(url)} has no commits.")
    commit = _no_commit(version or "HEAD", url, "HEAD", suffix, commit)
    name = head.removeprefix("refs/heads/") if head and head.startswith("refs/heads/") else None
    return _Resolved(commit, None if suffix else name, CHECKED_REMOTE)


def _offline_warning(url: str, version: str, reason: str) -> str:
    return (
        f"could not check tag {version!r} against {strip_credentials(url)} ({reason}); "
        "running the commit it named when last fetched, which may have moved since"
    )


def _known_refs(mirror: Path, url: str) -> str:
    done = _git(
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


def _export(mirror: Path, url: str, commit: str, dest: Path) -> None:
    """Write the tree of ``commit`` into ``dest`` (git archive, streamed through tarfile)."""
    dest.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **_GIT_ENV}
    proc = subprocess.Popen(
        ["git", "archive", "--format=tar", commit],
        cwd=mirror,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=die_with_parent(),
    )
    assert proc.stdout is not None
    with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
        archive.extractall(dest, filter="data")
    _, err = proc.communicate()
    if proc.returncode != 0:
        message = redact(err.decode(errors="replace"), url)
        raise GitError(f"git archive failed for {strip_credentials(url)}: {message}")
    make_read_only(dest)
