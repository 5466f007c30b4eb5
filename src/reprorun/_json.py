"""JSON on the tracking hot paths: orjson when installed (the server depends on it), else the
standard library (the in-run client copied into project environments has only that).

``loads`` accepts what ``json.loads`` accepts (bare NaN, integers beyond 64 bits): orjson
refuses those, so such a document is decoded again by ``json``. Every document it cannot
decode, however deeply nested, raises ``json.JSONDecodeError`` (a ``ValueError``), never a
``RecursionError``.
"""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - exercised where orjson is absent
    orjson = None  # type: ignore[assignment]


def loads(data: bytes | str) -> Any:
    if orjson is not None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(data)
    except RecursionError:
        text = data.decode(errors="replace") if isinstance(data, bytes) else data
        raise json.JSONDecodeError("arrays or objects nested too deeply", text, 0) from None


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON. Non-finite floats must already be strings ("NaN", "Infinity")."""
    if orjson is not None:
        return orjson.dumps(value)
    return json.dumps(value, allow_nan=False, separators=(",", ":")).encode()
