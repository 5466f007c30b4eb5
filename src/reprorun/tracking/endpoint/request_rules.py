"""Rules a request to the REST API must meet before anything reads it, shared by
``reprorun server`` / ``reprorun ui`` (``server/app.py``) and the per-run endpoint (``sidecar.py``).

Standard library only: the per-run endpoint starts with every run.

A web page can make the user's browser send a request to 127.0.0.1 without asking the server
first only as a "simple" request: GET, HEAD, or a POST whose body is a form or ``text/plain``.
Requiring ``Content-Type: application/json`` on requests that change something makes every
such POST fail here; MLflow's clients (Python and R) always send it, and MLflow's own server
requires it on POST and PUT.
"""

from __future__ import annotations

JSON_TYPE = "application/json"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def media_type(content_type: str) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``."""
    return content_type.split(";", 1)[0].strip().lower()


def body_type_refusal(method: str, content_type: str | None, has_body: bool) -> str | None:
    """Why a request to a JSON route is refused for its ``Content-Type`` (None: accepted).

    POST and PUT must declare JSON (as MLflow's server requires); PATCH and DELETE must when
    they carry a body (a browser cannot send those cross-site without asking first anyway)."""
    if method in READ_METHODS:
        return None
    if content_type is None or not content_type.strip():
        if method in ("POST", "PUT") or has_body:
            return (
                "Content-Type is missing: send the request body as JSON "
                "(Content-Type: application/json)."
            )
        return None
    if media_type(content_type) != JSON_TYPE:
        return (
            f"Content-Type {content_type!r} is refused: send the request body as JSON "
            "(Content-Type: application/json)."
        )
    return None


def content_length(value: str | None) -> int:
    """The body size a ``Content-Length`` header announces; ValueError unless it is a plain
    decimal number (``abc``, ``-1``, ``+5``, ``1_0``, ``１`` are all refused)."""
    if value is None:
        return 0
    text = value.strip()
    if not text or not text.isascii() or not text.isdigit():
        raise ValueError(f"Invalid Content-Length {value!r}: expected a number of bytes.")
    return int(text)
