"""Running git: a local command in the mirror, or one talking to the remote with the URL's
credentials handed over by a helper reading git's environment (never on a command line or in
a file). No prompts, a timeout, and nothing of git's left behind when reprorun dies."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse, urlunparse

from reprorun._utils import die_with_parent
from reprorun.errors import GitError
from reprorun.sources.base import redact, strip_credentials

GIT_TIMEOUT_SECONDS = 600
# No terminal prompts for credentials: a missing credential is an error the user can act on.
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": "", "LC_ALL": "C"}

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


def git(
    args: list[str], url: str, *, cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """A local git command (in the mirror): short, and never given credentials."""
    done = _run(["git", *args], url, args[0], cwd=cwd, env={}, own_group=False)
    if check and done.returncode != 0:
        raise failed(args[0], url, done)
    return done


def git_remote(
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
            env={**os.environ, **GIT_ENV, **env},
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


def failed(verb: str, url: str, done: subprocess.CompletedProcess[str]) -> GitError:
    message = redact((done.stderr or done.stdout).strip(), url)
    return GitError(f"git {verb} failed for {strip_credentials(url)}: {message}")


_REFSPECS = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]


def clone(url: str, dest: Path) -> None:
    # The mirror is configured with the address alone: no credentials are ever stored.
    done = git_remote(["clone", "--mirror", "--quiet", "--", "{url}", str(dest)], url)
    if done.returncode != 0:
        raise failed("clone", url, done)


def fetch(mirror: Path, url: str) -> None:
    done = git_remote(["fetch", "--prune", "--quiet", "--", "{url}", *_REFSPECS], url, cwd=mirror)
    if done.returncode != 0:
        raise failed("fetch", url, done)
