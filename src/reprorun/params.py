"""Parameter types and casting: what a ``float``, ``int``, ``string``, ``path`` or ``uri``
parameter accepts, and the text a checked value is passed and recorded as.

A leaf, shared by the MLproject model (``reprorun.projects``) and the in-run API
(``reprorun.tracking``). The only I/O is the existence check of ``path`` parameters, which
MLflow Projects does too (a ``path`` given an http(s)://, s3:// or gs:// URL is checked as a URL
here and downloaded by the runner, see ``reprorun.projects.downloads``).
"""

from __future__ import annotations

import math
import re
from enum import Enum
from pathlib import Path
from urllib.parse import unquote, urlparse

REMOTE_SCHEMES = ("http", "https", "s3", "gs")


def is_remote(raw: str) -> bool:
    """A URL a ``path`` parameter downloads."""
    return urlparse(raw).scheme.lower() in REMOTE_SCHEMES


ParamValue = float | int | str


class ParamType(str, Enum):
    """The parameter types of MLflow Projects."""

    FLOAT = "float"
    INT = "int"
    STRING = "string"
    PATH = "path"
    URI = "uri"


_INT_RE = re.compile(r"[+-]?[0-9]+")
_FLOAT_RE = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_EXPECTED = {
    ParamType.FLOAT: "a float",
    ParamType.INT: "an integer",
    ParamType.STRING: "a string",
    ParamType.PATH: "an existing local file or directory, or an http(s)://, s3:// or gs:// URL",
    ParamType.URI: "a URI with a scheme (e.g. s3://bucket/key, file:///abs/path)",
}


class CastError(ValueError):
    """A value that does not fit its declared type; ``expected`` says what would."""

    def __init__(self, expected: str):
        super().__init__(expected)
        self.expected = expected


def expected_text(ptype: ParamType) -> str:
    return _EXPECTED[ptype]


def cast_value(ptype: ParamType, raw: str, *, base_dir: Path) -> ParamValue:
    """Cast ``raw`` to ``ptype``. Relative paths are resolved against ``base_dir``."""
    text = raw.strip() if ptype in (ParamType.FLOAT, ParamType.INT) else raw
    if ptype is ParamType.INT:
        if not _INT_RE.fullmatch(text):
            raise CastError(_EXPECTED[ptype])
        return int(text)
    if ptype is ParamType.FLOAT:
        if not _FLOAT_RE.fullmatch(text):
            raise CastError(_EXPECTED[ptype])
        value = float(text)
        if not math.isfinite(value):
            raise CastError("a finite float")
        return value
    if ptype is ParamType.URI:
        if not urlparse(raw).scheme:
            raise CastError(_EXPECTED[ptype])
        return raw
    if ptype is ParamType.PATH:
        if is_remote(raw):
            if not urlparse(raw).netloc:
                raise CastError(f"{_EXPECTED[ptype]} (a URL names a host or a bucket)")
            return raw  # downloaded when the run starts
        return str(_local_path(raw, base_dir))
    return raw


def _local_path(raw: str, base_dir: Path) -> Path:
    if not raw:
        raise CastError(_EXPECTED[ParamType.PATH])
    parsed = urlparse(raw)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost") or not parsed.path:
            raise CastError(f"{_EXPECTED[ParamType.PATH]} (file:///absolute/path, no host)")
        candidate = Path(unquote(parsed.path))
    elif parsed.scheme and len(parsed.scheme) > 1:  # one letter: a Windows drive, not a scheme
        raise CastError(
            f"{_EXPECTED[ParamType.PATH]} ({parsed.scheme}:// is not downloaded; "
            "declare the parameter with type uri to pass it through)"
        )
    else:
        candidate = Path(raw).expanduser()
    absolute = candidate if candidate.is_absolute() else base_dir / candidate
    absolute = Path(_normalise(absolute))
    if not absolute.exists():
        raise CastError(f"{_EXPECTED[ParamType.PATH]} (no such file or directory: {absolute})")
    return absolute


def _normalise(path: Path) -> str:
    import os.path

    return os.path.normpath(str(path))


def names_one_place(raw: str) -> bool:
    """Whether a path parameter's text means the same wherever it is read: a URI or an
    absolute path (a relative path is recorded made absolute: it depends on the folder)."""
    return bool(urlparse(raw).scheme) or raw.startswith("/")


def format_value(value: ParamValue) -> str:
    """The text of a cast value: what the command receives and what the run records."""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def passed_text(ptype: ParamType, raw: str, value: ParamValue) -> str:
    """The text the command receives and the run records for a checked value.

    As in MLflow, the text the user gave (a default: its text in the MLproject), not the value
    printed back: ``-P folds=5`` for a float parameter passes ``5``, so code doing
    ``int(sys.argv[1])`` works, and ``1e-3`` stays ``1e-3``. Numbers lose only the surrounding
    whitespace their check ignored; a path becomes the absolute path that was checked (the run
    records a ``file://`` URI or an absolute path as given; see ``resolve_parameters``).
    Two spellings of one number are therefore two commands, and two fingerprints.
    """
    if ptype in (ParamType.FLOAT, ParamType.INT):
        return raw.strip()
    if ptype is ParamType.PATH:
        return str(value)
    return raw
