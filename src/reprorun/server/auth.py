"""Server authentication: a bearer token, and/or basic auth against a file of hashed passwords.

The password file holds one ``user:hash`` per line (``#`` comments allowed), where ``hash`` is
``scrypt$<n>$<r>$<p>$<salt b64>$<key b64>``; ``reprorun server-user add FILE USER`` writes it.
Comparisons are constant-time. Secrets that are empty or short are refused, never taken as "no
authentication". A password check (scrypt: tens of milliseconds and 16 MB by design) runs off
the event loop, a few at a time, and a client that keeps guessing wrong waits longer and longer
(``Backoff``) before its next guess is even checked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from reprorun.errors import UserInputError

_N, _R, _P = 2**14, 8, 1
MIN_TOKEN_LENGTH = 16
MIN_PASSWORD_LENGTH = 8
REFUSED_REMEMBERED = 10_000


def check_token(token: str | None, source: str = "--auth-token") -> None:
    """Refuse an empty or short bearer token (``--auth-token "$TOKEN"`` with TOKEN unset must
    not start a server without authentication)."""
    if token is None:
        return
    if not token.strip():
        raise UserInputError(
            f"{source} is empty, so the server would run without authentication. Give a "
            f'secret of at least {MIN_TOKEN_LENGTH} characters (if you wrote "$TOKEN", that '
            "variable is not set), e.g. TOKEN=$(python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')."
        )
    if len(token) < MIN_TOKEN_LENGTH:
        raise UserInputError(
            f"{source} is {len(token)} characters long; a bearer token must have at least "
            f"{MIN_TOKEN_LENGTH} (e.g. python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')."
        )


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
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserInputError(
            f"The password for {user!r} is {len(password)} characters long; use at least "
            f"{MIN_PASSWORD_LENGTH}."
        )
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
    # Verified basic credentials, so scrypt (tens of ms by design) runs once per password;
    # and the latest refused ones, so a client repeating a wrong password costs nothing.
    _verified: set[tuple[str, str]] = field(default_factory=set)
    _refused: OrderedDict[tuple[str, str], None] = field(default_factory=OrderedDict)

    @classmethod
    def from_options(cls, token: str | None, password_file: str | None) -> Authenticator | None:
        """None when neither option is given; an empty or short token, or a password file
        with no users, is an error rather than a server nobody (or everybody) can use."""
        if token is None and password_file is None:
            return None
        check_token(token)
        users = read_password_file(Path(password_file)) if password_file else {}
        if password_file and not users:
            raise UserInputError(
                f"The password file {password_file} has no users, so nobody could sign in. "
                f"Add one with: reprorun server-user add {password_file} USER"
            )
        return cls(token=token, users=users)

    def check(self, header: str) -> bool:
        """Whether the ``Authorization`` header is valid (may run scrypt: call it off the
        event loop unless ``quick_check`` has answered)."""
        verdict = self.quick_check(header)
        if verdict is not None:
            return verdict
        user, password = _basic_credentials(header) or ("", "")
        encoded = self.users[user]
        key = (user, _digest(user, password, encoded))
        if not verify_password(password, encoded):
            self._refused[key] = None
            while len(self._refused) > REFUSED_REMEMBERED:
                self._refused.popitem(last=False)
            return False
        self._verified.add(key)
        return True

    def quick_check(self, header: str) -> bool | None:
        """The answer when it costs no password hashing: the token, malformed headers,
        unknown users and passwords verified before; None when scrypt must decide."""
        scheme, _, credentials = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self.token:
            return hmac.compare_digest(credentials.strip().encode(), self.token.encode())
        if scheme != "basic":
            return False
        parsed = _basic_credentials(header)
        if parsed is None:
            return False
        user, password = parsed
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
        key = (user, _digest(user, password, encoded))
        if key in self._verified:
            return True
        if key in self._refused:
            return False
        return None


def _basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, _, password = decoded.partition(":")
    return user, password


def basic_user(header: str) -> str:
    """The user name of a basic ``Authorization`` header ("" for anything else)."""
    parsed = _basic_credentials(header)
    return "" if parsed is None else parsed[0]


def _digest(user: str, password: str, encoded: str) -> str:
    return hashlib.sha256(f"{user}:{password}:{encoded}".encode()).hexdigest()


class Backoff:
    """Wrong passwords per client (each one cost a scrypt): the first ``free`` are free, then each
    doubles the wait (from ``base`` seconds up to ``cap``) before that client's next guess
    is checked at all. A success, or ``forget_after`` seconds without failure, clears the
    count. At most ``max_clients`` are remembered (the oldest are forgotten first), so a
    flood of addresses cannot grow it without bound."""

    def __init__(
        self,
        free: int = 5,
        base: float = 1.0,
        cap: float = 60.0,
        forget_after: float = 900.0,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.free, self.base, self.cap = free, base, cap
        self.forget_after, self.max_clients, self.clock = forget_after, max_clients, clock
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def retry_after(self, client: str) -> float:
        """Seconds ``client`` must still wait before a guess is checked (0: go ahead)."""
        entry = self._failures.get(client)
        if entry is None:
            return 0.0
        count, last = entry
        elapsed = self.clock() - last
        if elapsed > self.forget_after:
            del self._failures[client]
            return 0.0
        if count < self.free:
            return 0.0
        wait = min(self.cap, self.base * 2.0 ** min(count - self.free, 32))
        return max(0.0, wait - elapsed)

    def failed(self, client: str) -> None:
        count, _ = self._failures.pop(client, (0, 0.0))
        self._failures[client] = (count + 1, self.clock())
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)
