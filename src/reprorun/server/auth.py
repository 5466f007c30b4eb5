"""Server authentication: a bearer token, and/or basic auth against a file of hashed passwords.

The password file holds one ``user:hash`` per line (``#`` comments allowed), where ``hash`` is
``scrypt$<n>$<r>$<p>$<salt b64>$<key b64>``; ``reprorun server-user add FILE USER`` writes it.
Comparisons are constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path

from reprorun.errors import UserInputError

_N, _R, _P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(key).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt, key = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(key)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(actual, expected)


def read_password_file(path: Path) -> dict[str, str]:
    """user -> hash; every malformed line is an error naming its line number."""
    try:
        lines = path.read_text("utf-8").splitlines()
    except OSError as exc:
        raise UserInputError(f"Cannot read the password file {path}: {exc.strerror}.") from None
    users: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, encoded = line.partition(":")
        if not sep or not user or not encoded.startswith("scrypt$") or encoded.count("$") != 5:
            raise UserInputError(
                f"{path}:{number}: expected 'user:scrypt$...' (write entries with "
                "reprorun server-user add FILE USER)."
            )
        users[user] = encoded
    return users


def add_user(path: Path, user: str, password: str) -> None:
    """Add or replace ``user`` in the password file (created with mode 600)."""
    if not user or ":" in user:
        raise UserInputError(f"Invalid user name {user!r}: it must be non-empty without ':'.")
    users = read_password_file(path) if path.exists() else {}
    users[user] = hash_password(password)
    text = "".join(f"{u}:{h}\n" for u, h in users.items())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


@dataclass
class Authenticator:
    token: str | None = None
    users: dict[str, str] = field(default_factory=dict)
    # Verified basic credentials, so scrypt (tens of ms by design) runs once per password.
    _verified: set[tuple[str, str]] = field(default_factory=set)

    @classmethod
    def from_options(cls, token: str | None, password_file: str | None) -> Authenticator | None:
        if not token and not password_file:
            return None
        users = read_password_file(Path(password_file)) if password_file else {}
        return cls(token=token or None, users=users)

    def check(self, header: str) -> bool:
        scheme, _, credentials = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self.token:
            return hmac.compare_digest(credentials.strip().encode(), self.token.encode())
        if scheme == "basic":
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return False
            user, _, password = decoded.partition(":")
            # `curl -u token:SECRET` and clients that only speak basic auth.
            if (
                self.token
                and user in ("", "token")
                and hmac.compare_digest(password.encode(), self.token.encode())
            ):
                return True
            encoded = self.users.get(user)
            if encoded is None:
                return False
            digest = hashlib.sha256(f"{user}:{password}:{encoded}".encode()).hexdigest()
            if (user, digest) in self._verified:
                return True
            if verify_password(password, encoded):
                self._verified.add((user, digest))
                return True
        return False
