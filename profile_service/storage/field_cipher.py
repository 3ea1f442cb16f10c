"""A profile field sealed at rest (PROFILE_ENCRYPTION_KEYS): AES-256-GCM from `cryptography`,
in Python, so that no key ever reaches the database (decision 17).

Stored form, one text value: MARKER, the format's version, the key's name, then base64 of
nonce + ciphertext + tag:

    \\ufdd0v1:<key name>:<base64>

MARKER is a Unicode noncharacter, which validation refuses in any text a caller writes: a
stored value that starts with it was sealed here, anything else is plaintext (rows written
before the keys were set). The associated data binds the value to its field and its owner, so
ciphertext copied into another row does not open there.
"""

import base64
import os
import uuid
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MARKER = "\ufdd0"
VERSION = "v1"
_NONCE_BYTES = 12  # GCM's standard nonce; random per value (2^32 values per key is far off)


class Undecryptable(Exception):
    """A sealed value that cannot be opened: its key is not configured, or it fails
    authentication (altered, or copied from another row). The message holds no data."""

    def __init__(self, key_name: str, why: str) -> None:
        super().__init__(f"key {key_name!r}: {why}")
        self.key_name = key_name


def is_sealed(stored: str) -> bool:
    """Whether a stored value was sealed (else it is plaintext)."""
    return stored.startswith(MARKER)


class FieldCipher:
    """Seals and opens field values with named keys: the first seals, all open.

    With no keys, values are written in clear, plaintext reads as itself, and a sealed value
    is Undecryptable."""

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        self._keys = {name: AESGCM(key) for name, key in keys}
        self._sealing = keys[0][0] if keys else None

    @property
    def seals(self) -> bool:
        """Whether new values are sealed (keys are configured)."""
        return self._sealing is not None

    @property
    def current_prefix(self) -> str | None:
        """What a value sealed with the current key starts with (None: no keys)."""
        return None if self._sealing is None else f"{MARKER}{VERSION}:{self._sealing}:"

    def seal(self, field: str, owner_id: str, plaintext: str) -> str:
        """`plaintext` as stored in `field` of `owner_id`'s profile: sealed with the first key,
        or as it is when there are no keys."""
        if self._sealing is None:
            return plaintext
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._keys[self._sealing].encrypt(
            nonce, plaintext.encode(), _associated(field, owner_id)
        )
        return f"{self.current_prefix}{base64.b64encode(nonce + sealed).decode('ascii')}"

    def open(self, field: str, owner_id: str, stored: str) -> str:
        """The plaintext of a value stored in `field` of `owner_id`'s profile (plaintext as it
        is); raise Undecryptable."""
        if not is_sealed(stored):
            return stored
        version, _, rest = stored[len(MARKER) :].partition(":")
        name, _, encoded = rest.partition(":")
        if version != VERSION:
            raise Undecryptable(name, f"unknown format {version!r}")
        key = self._keys.get(name)
        if key is None:
            raise Undecryptable(name, "key not configured")
        try:
            blob = base64.b64decode(encoded, validate=True)
            plaintext = key.decrypt(
                blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], _associated(field, owner_id)
            )
        except (InvalidTag, ValueError):
            raise Undecryptable(name, "authentication failed") from None
        return plaintext.decode()


def _associated(field: str, owner_id: str) -> bytes:
    # The owner in its canonical form, as PostgreSQL prints a uuid.
    return f"profile.profiles.{field}:{uuid.UUID(owner_id)}".encode()
