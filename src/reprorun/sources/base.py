"""What every source yields: a local directory and where its code came from."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse, urlunparse


@dataclass(frozen=True)
class Provenance:
    """Where a run's code came from; recorded as MLflow's source tags (and reprorun.source.*)."""

    source_name: str
    source_type: str = "PROJECT"
    source_kind: str = "local"  # local | git | archive
    git_commit: str | None = None
    git_repo_url: str | None = None
    git_branch: str | None = None
    git_dirty: bool | None = None
    subdirectory: str | None = None
    version: str | None = None  # what the user asked for (--version)
    uri: str | None = None  # the URI as given, credentials removed
    archive_sha256: str | None = None
    # git: how the version was resolved: "remote" (checked against the remote now),
    # "cache-offline" (a cached tag used because the remote did not answer; see the warning),
    # "commit" (a commit id, immutable: nothing to check).
    ref_check: str | None = None
    ref_check_warning: str | None = None  # why the cache was trusted, for the user and the run
    uncommitted_diff: bytes | None = field(default=None, repr=False)  # dirty local checkouts


@dataclass(frozen=True)
class ResolvedSource:
    """``directory`` holds the project. When ``snapshot`` is set, it is an immutable tree in
    the source cache (``directory`` lies inside it): runs get a working copy of it."""

    directory: Path
    provenance: Provenance
    snapshot: Path | None = None


ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")


def is_archive(location: str) -> bool:
    """A project URI naming an archive (by its path's suffix, query strings aside)."""
    path = urlparse(location).path if "://" in location else location
    return path.lower().endswith(ARCHIVE_SUFFIXES)


def strip_credentials(url: str) -> str:
    """Remove secrets from a URL so none lands in a tag, a log or a message.

    http(s): the whole user-info goes (tokens are often passed as the user name); other
    schemes (ssh://git@host) keep the user name, which is not a secret, and lose any password.
    """
    parsed = urlparse(url)
    if parsed.query and parsed.scheme.lower() in ("http", "https"):
        parsed = parsed._replace(query=_redact_query(parsed.query))
        url = urlunparse(parsed)
    if not (parsed.scheme and parsed.netloc and "@" in parsed.netloc):
        return url
    userinfo, host = parsed.netloc.rsplit("@", 1)
    if parsed.scheme.lower() in ("http", "https"):
        return urlunparse(parsed._replace(netloc=host))
    user = userinfo.split(":", 1)[0]
    return urlunparse(parsed._replace(netloc=f"{user}@{host}"))


_SECRET_PARAM = re.compile(r"token|key|secret|password|passwd|signature|sig|auth|credential", re.I)


def _redact_query(query: str) -> str:
    """``private_token=abc&ref=main`` -> ``private_token=***&ref=main``."""
    parts = []
    for pair in query.split("&"):
        name, sep, _value = pair.partition("=")
        parts.append(f"{name}=***" if sep and _SECRET_PARAM.search(name) else pair)
    return "&".join(parts)


def redact(text: str, url: str) -> str:
    """``text`` (e.g. git's stderr) with the credentials of ``url`` removed."""
    clean = strip_credentials(url)
    if clean == url:
        return text
    text = text.replace(url, clean)
    parsed = urlparse(url)
    for pair in parsed.query.split("&"):
        name, sep, value = pair.partition("=")
        if sep and value and _SECRET_PARAM.search(name):
            text = text.replace(value, "***")
    if "@" not in parsed.netloc:
        return text
    userinfo = parsed.netloc.rsplit("@", 1)[0]
    for secret in {userinfo, *userinfo.split(":", 1)}:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


_FORGES = {
    "github.com": "https://github.com/{path}/tree/{commit}/{sub}",
    "gitlab.com": "https://gitlab.com/{path}/-/tree/{commit}/{sub}",
    "bitbucket.org": "https://bitbucket.org/{path}/src/{commit}/{sub}",
    "codeberg.org": "https://codeberg.org/{path}/src/commit/{commit}/{sub}",
}


def commit_url(repo_url: str, commit: str, subdirectory: str | None = None) -> str | None:
    """A browser link to the commit's tree on a known forge (GitHub, GitLab, Bitbucket,
    Codeberg), from https, ssh:// or scp-style (git@host:org/repo) URLs; else None."""
    url = strip_credentials(repo_url)
    if "://" in url:
        parsed = urlparse(url)
        host, path = (parsed.hostname or "").lower(), parsed.path
    elif "@" in url and ":" in url:  # git@github.com:org/repo.git
        host_part, _, path = url.partition(":")
        host = host_part.rsplit("@", 1)[-1].lower()
    else:
        return None
    template = _FORGES.get(host)
    path = path.strip("/").removesuffix(".git")
    if template is None or path.count("/") < 1:
        return None
    return template.format(path=path, commit=commit, sub=subdirectory or "").rstrip("/")
