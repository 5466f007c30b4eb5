"""MLflow-style page tokens: base64 JSON ``{"offset": n}``."""

from __future__ import annotations

import base64
import binascii
import json

from reprorun.errors import SearchError


def encode_page_token(offset: int) -> str:
    return base64.b64encode(json.dumps({"offset": offset}).encode()).decode()


def decode_page_token(token: str | None) -> int:
    """The offset in an MLflow-style page token (base64 JSON ``{"offset": n}``)."""
    if not token:
        return 0
    try:
        offset = json.loads(base64.b64decode(token, validate=True))["offset"]
        offset = int(offset)
    except (binascii.Error, ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
        raise SearchError(f"Invalid page token {token!r}: {exc}") from None
    if not 0 <= offset < 2**62:  # databases take 64-bit offsets
        raise SearchError(f"Invalid page token {token!r}: offset {offset} out of range.")
    return offset
