"""Sealed database values: manifests (and the pull-through cache's pending manifests) are stored encrypted in their
rows, so a copy of the database without the master key holds no image's manifest.

::

    stored = MAGIC "\\x00SKM1" | nonce (12) | AES-256-GCM(payload) + tag (16)

The key is derived from the service key (``KeyRing.row_key``); the associated data is the manifest's digest, so a
payload moved to another row, edited or cut fails (``RowBroken``, never wrong bytes). A value without the magic is
plaintext an earlier version stored (JSON never starts with a NUL byte): it is read as it is, and
``soko encrypt-existing`` seals it. The overhead is fixed, so sizes are computed in SQL (``plain_length``).
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"\x00SKM1"
NONCE = 12
OVERHEAD = len(MAGIC) + NONCE + 16


class RowBroken(Exception):
    """A sealed value failed authentication (tampered, moved to another row, cut) or its key is not this one."""


def is_sealed(stored: bytes) -> bool:
    return stored[: len(MAGIC)] == MAGIC


class RowSealer:
    def __init__(self, key: bytes) -> None:
        self._cipher = AESGCM(key)

    def seal(self, payload: bytes, bound_to: str) -> bytes:
        nonce = os.urandom(NONCE)
        return MAGIC + nonce + self._cipher.encrypt(nonce, payload, bound_to.encode())

    def open(self, stored: bytes, bound_to: str) -> bytes:
        stored = bytes(stored)
        if not is_sealed(stored):
            return stored  # plaintext of an earlier version
        body = stored[len(MAGIC) :]
        try:
            return self._cipher.decrypt(body[:NONCE], body[NONCE:], bound_to.encode())
        except InvalidTag:
            raise RowBroken(f"the stored value of {bound_to} fails authentication (tampered with, or moved)") from None


def plain_length(column: sa.ColumnElement) -> sa.ColumnElement[int]:
    """The plaintext length of a column of sealed (or earlier plaintext) values, in SQL."""
    sealed = sa.func.substr(column, 1, len(MAGIC)) == sa.literal(MAGIC, sa.LargeBinary)
    return sa.func.length(column) - sa.case((sealed, OVERHEAD), else_=0)
