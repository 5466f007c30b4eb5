"""An environment's pip lock (``requirements.lock``) read back for a remote cluster that rebuilds
the environment itself (Ray's ``runtime_env.pip``, Databricks' PyPI libraries): its requirement
lines, and those no other machine can install because they point at this machine's files."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LockLines:
    """The lock's lines without comments: ``pip``, what pip takes, in the lock's order (an
    editable install from a VCS URL, which installs anywhere, as its URL; options such as
    ``--index-url`` start with '-'), and ``local``, the lines installing this machine's files,
    as written."""

    pip: list[str] = field(default_factory=list)
    local: list[str] = field(default_factory=list)


def read_lock_lines(lock_text: str | None) -> LockLines:
    """The lock's lines by kind (see LockLines)."""
    lines = LockLines()
    for raw in (lock_text or "").splitlines():
        given = line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        for flag in ("-e ", "--editable "):
            if line.startswith(flag) and "://" in line:
                line = line[len(flag) :].strip()
        if (
            line.startswith(("-e", "--editable", "file:", "/", "."))
            or "@ file:" in line
            or "@file:" in line
        ):
            lines.local.append(given)
        else:
            lines.pip.append(line)
    return lines
