"""Passwords of the MQTT listener: config holds only salted PBKDF2-SHA256 hashes, never a password.

Hash format (the layout Django and passlib use): `pbkdf2_sha256$<iterations>$<salt, base64>$<key, base64>`.
Make one with `hash_password("s3cret")`. Each hash carries its own iteration count, so raising the default
later does not invalidate existing hashes.

Checking a hash is deliberately slow, so `Authenticator` remembers, per user, a fast digest of the last
password that verified: a sensor that reconnects costs one SHA-256, not one PBKDF2. Failures are never
remembered. The listener runs the slow path in a worker thread (hashlib releases the GIL while hashing).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Mapping
from enum import Enum

from . import reasons

SCHEME = "pbkdf2_sha256"
# 100,000: ~42 ms here (x86 EPYC), several times that on a Raspberry Pi 4. A gateway restart makes every
# sensor reconnect at once, each user costing one hash; OWASP's 600,000 targets human passwords, while sensor
# credentials are machine-generated secrets. Pass `iterations=` for more.
DEFAULT_ITERATIONS = 100_000
_SALT_BYTES = 16
_MIN_ITERATIONS = 1_000


def hash_password(
    password: str | bytes, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
) -> str:
    """A hash to put in the listener's `users` table for `password`."""
    if iterations < _MIN_ITERATIONS:
        raise ValueError(f"iterations must be at least {_MIN_ITERATIONS}")
    secret = password.encode() if isinstance(password, str) else password
    salt = os.urandom(_SALT_BYTES) if salt is None else salt
    key = hashlib.pbkdf2_hmac("sha256", secret, salt, iterations)
    return f"{SCHEME}${iterations}${_b64(salt)}${_b64(key)}"


def parse_password_hash(encoded: str) -> tuple[int, bytes, bytes]:
    """(iterations, salt, key) of a hash; ValueError saying what is wrong with it otherwise."""
    parts = encoded.split("$")
    if len(parts) != 4 or parts[0] != SCHEME:
        raise ValueError(f"not a {SCHEME}$<iterations>$<salt>$<key> hash")
    try:
        iterations = int(parts[1])
        salt = base64.b64decode(parts[2], validate=True)
        key = base64.b64decode(parts[3], validate=True)
    except ValueError:
        raise ValueError(f"not a {SCHEME}$<iterations>$<salt>$<key> hash (bad number or base64)") from None
    if iterations < _MIN_ITERATIONS or not salt or len(key) != 32:
        raise ValueError(f"{SCHEME} hash with {iterations} iterations, a {len(salt)}-byte salt and a "
                         f"{len(key)}-byte key: need >= {_MIN_ITERATIONS} iterations, a salt and 32 bytes")
    return iterations, salt, key


def verify_password(password: bytes, encoded: str) -> bool:
    iterations, salt, key = parse_password_hash(encoded)
    return hmac.compare_digest(hashlib.pbkdf2_hmac("sha256", password, salt, iterations), key)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class Refusal(Enum):
    """Why a CONNECT is refused, with the CONNACK codes for MQTT 3.1.1 and MQTT 5."""

    BAD_CREDENTIALS = (reasons.V3_BAD_USER_NAME_OR_PASSWORD, reasons.BAD_USER_NAME_OR_PASSWORD)
    NOT_AUTHORIZED = (reasons.V3_NOT_AUTHORIZED, reasons.NOT_AUTHORIZED)
    IDENTIFIER_REJECTED = (reasons.V3_IDENTIFIER_REJECTED, reasons.CLIENT_IDENTIFIER_NOT_VALID)
    SERVER_UNAVAILABLE = (reasons.V3_SERVER_UNAVAILABLE, reasons.SERVER_UNAVAILABLE)

    def code(self, protocol_version: int) -> int:
        v3, v5 = self.value
        return v5 if protocol_version == 5 else v3


class Authenticator:
    """Decides who may connect: a user with a matching password, a verified client certificate, or anyone
    when anonymous access is on. A user name that is given must always match, whatever else holds."""

    def __init__(self, users: Mapping[str, str], *, allow_anonymous: bool) -> None:
        self._users = {name: parse_password_hash(encoded) for name, encoded in users.items()}
        self._allow_anonymous = allow_anonymous
        self._verified: dict[str, bytes] = {}
        # Checked for unknown users too, so a wrong user name costs as long as a wrong password.
        self._dummy = parse_password_hash(hash_password(os.urandom(8), iterations=_MIN_ITERATIONS))

    def is_fast(self, username: str | None, password: bytes | None) -> bool:
        """Whether `check` answers without hashing (no user name, or a password that verified before)."""
        return username is None or self._remembered(username, password)

    def check(self, username: str | None, password: bytes | None, *, certificate: bool) -> Refusal | None:
        """None to accept, or why not. Slow by design unless `is_fast`: run it off the event loop then."""
        if username is None:
            if password is not None:
                return Refusal.BAD_CREDENTIALS
            return None if certificate or self._allow_anonymous else Refusal.NOT_AUTHORIZED
        if self._remembered(username, password):
            return None
        iterations, salt, key = self._users.get(username, self._dummy)
        derived = hashlib.pbkdf2_hmac("sha256", password or b"", salt, iterations)
        if username in self._users and password is not None and hmac.compare_digest(derived, key):
            self._verified[username] = hashlib.sha256(salt + password).digest()
            return None
        return Refusal.BAD_CREDENTIALS

    def _remembered(self, username: str, password: bytes | None) -> bool:
        remembered = self._verified.get(username)
        if remembered is None or password is None:
            return False
        salt = self._users[username][1]
        return hmac.compare_digest(remembered, hashlib.sha256(salt + password).digest())
