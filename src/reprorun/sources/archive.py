"""Projects in .zip and .tar(.gz) archives, by path or http(s) URL.

An archive is unpacked once per content hash into ``<home>/sources/archives/<sha256>/``
(files read-only). Members that would land outside that folder (absolute paths, ``..``,
links pointing out, device files) refuse the whole archive.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import stat
import tarfile
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse, urlunparse

from reprorun.errors import SourceNotFound
from reprorun.sources.base import (
    Provenance,
    ResolvedSource,
    redact,
    strip_credentials,
)
from reprorun.sources.cache import (
    key_for,
    lock,
    make_read_only,
    private_dirs,
    publish,
    remove_stale_builds,
    sources_root,
)


def resolve_archive(
    location: str,
    subdirectory: str | None,
    *,
    cwd: Path,
    expected_sha256: str | None = None,
) -> ResolvedSource:
    """Unpack (once) and return the project in an archive. With ``expected_sha256`` (a rerun),
    the recorded content is used from the cache, or the archive must still have it."""
    is_url = location.startswith(("http://", "https://"))
    if is_url:
        clean = strip_credentials(location)
    else:
        local = Path(location.removeprefix("file://")).expanduser()
        local = (local if local.is_absolute() else cwd / local).resolve()
        clean = str(local)
    cached = sources_root() / "archives" / (expected_sha256 or "-")
    if expected_sha256 and cached.is_dir():
        digest, root = expected_sha256, cached
    else:
        if is_url:
            path = _download(location)  # a file of this run's own, removed once unpacked
        else:
            path = local
            if not path.is_file():
                raise SourceNotFound(f"Project archive {clean}: no such file.")
        digest = _sha256(path)
        if expected_sha256 and digest != expected_sha256:
            raise SourceNotFound(
                f"Project archive {clean} has changed since the recorded run (sha256 "
                f"{expected_sha256[:12]}… then, {digest[:12]}… now) and the original is no "
                "longer in the source cache: rerun cannot run the same code."
            )
        root = sources_root() / "archives" / digest
        try:
            with lock(sources_root() / "archives" / f"{digest}.lock"):
                remove_stale_builds(root.parent, f"{digest}-")  # an unpacking killed midway
                publish(root, lambda tmp: _extract(path, tmp, clean), private=True)
        finally:
            if is_url:
                path.unlink(missing_ok=True)
    base = root
    entries = list(root.iterdir())
    wrapped = len(entries) == 1 and entries[0].is_dir() and entries[0].name.lower() != "mlproject"
    named_inside = subdirectory and (root / subdirectory).is_dir()
    if wrapped and not named_inside:
        base = entries[0]  # GitHub-style archives wrap everything in one folder
    directory = base
    if subdirectory:
        directory = (base / subdirectory).resolve()
        if not directory.is_relative_to(root) or not directory.is_dir():
            raise SourceNotFound(f"Project archive {clean} has no directory {subdirectory!r}.")
    provenance = Provenance(
        source_name=clean + (f"#{subdirectory}" if subdirectory else ""),
        source_kind="archive",
        subdirectory=subdirectory,
        uri=clean + (f"#{subdirectory}" if subdirectory else ""),
        archive_sha256=digest,
    )
    return ResolvedSource(directory, provenance, snapshot=base)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _download(url: str) -> Path:
    clean = strip_credentials(url)
    name = PurePosixPath(clean.split("?", 1)[0]).name
    folder = private_dirs(sources_root() / "downloads" / key_for(clean))
    # A file of its own per download: two runs fetching one URL never touch each other's
    # bytes, and what is hashed is exactly what is unpacked.
    dest = folder / f"{uuid.uuid4().hex[:8]}-{name}"
    tmp = dest.with_name(f".{dest.name}.part")
    parsed = urlparse(url)
    # The user-info goes into a header; the query (which may carry a token) stays as given.
    plain = urlunparse(parsed._replace(netloc=parsed.netloc.rsplit("@", 1)[-1]))
    request = urllib.request.Request(plain)  # noqa: S310 - http(s) only, checked by the caller
    if parsed.username is not None:
        # user:password@ in the URL is HTTP Basic authentication, never part of the host.
        token = f"{unquote(parsed.username)}:{unquote(parsed.password or '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(token.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=120) as response, open(tmp, "wb") as out:  # noqa: S310
            shutil.copyfileobj(response, out, 1 << 20)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        raise SourceNotFound(
            f"Cannot download project archive {clean}: {redact(str(exc), url)}"
        ) from None
    tmp.replace(dest)
    return dest


def _extract(path: Path, dest: Path, label: str) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if path.name.lower().endswith(".zip"):
            _extract_zip(path, dest, label)
        else:
            with tarfile.open(path) as archive:
                for member in archive.getmembers():
                    if member.name.startswith("/") or (
                        member.islnk() and member.linkname.startswith("/")
                    ):
                        raise SourceNotFound(
                            f"Project archive {label} is unsafe: member {member.name!r} has an "
                            "absolute path. Nothing was unpacked."
                        )
                archive.extractall(dest, filter=tarfile.data_filter)  # noqa: S202 - data filter
    except tarfile.FilterError as exc:
        raise SourceNotFound(
            f"Project archive {label} is unsafe: {exc}. Nothing was unpacked."
        ) from None
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise SourceNotFound(f"Project archive {label} is corrupt or unreadable: {exc}.") from None
    make_read_only(dest)


def _extract_zip(path: Path, dest: Path, label: str) -> None:
    with zipfile.ZipFile(path) as archive:
        bad = archive.testzip()
        if bad is not None:
            raise zipfile.BadZipFile(f"bad CRC for member {bad}")
        for info in archive.infolist():
            name = PurePosixPath(info.filename.replace("\\", "/"))
            mode = info.external_attr >> 16
            if name.is_absolute() or ".." in name.parts or info.filename.startswith("/"):
                raise SourceNotFound(
                    f"Project archive {label} is unsafe: member {info.filename!r} would land "
                    "outside its folder. Nothing was unpacked."
                )
            kind = stat.S_IFMT(mode)  # 0 when the archiver recorded no file type
            if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
                raise SourceNotFound(
                    f"Project archive {label} is unsafe: member {info.filename!r} is a link or "
                    "a device. Nothing was unpacked."
                )
        archive.extractall(dest)  # noqa: S202 - every member was checked above
