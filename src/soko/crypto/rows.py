"""Sealed database values: manifests (and the pull-through cache's pending manifests) are stored encrypted in their
rows, so a copy of the database without the master key holds no image's manifest.

::

    stored = MAGIC "\\x00SKM1" | nonce (12) | AES-256-GCM(payload) + tag (16)

The key is derived from the service key (``KeyRing.row_key``), or, with ``KEYED_MAGIC`` (``\x00SKK1``) instead,
it is the row key of a customer-key keyspace (a KMS repository's manifests: ``registry/encryption.py``); the
associated data is the manifest's digest, so a payload moved to another row, edited or cut fails (``RowBroken``,
never wrong bytes). A value without a magic is plaintext an earlier version stored (JSON never starts with a NUL
byte): it is read as it is, and ``soko encrypt-existing`` seals it. The overhead is fixed, so sizes are computed in
SQL (``plain_length``).
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"\x00SKM1"
# the same format under a customer-key keyspace's row key (a KMS repository's manifests, registry/encryption.py)
KEYED_MAGIC = b"\x00SKK1"
NONCE = 12
OVERHEAD = len(MAGIC) + NONCE + 16


class RowBroken(Exception):
    """A sealed value failed authentication (tampered, moved to another row, cut) or its key is not this one."""


def is_sealed(stored: bytes) -> bool:
    return stored[: len(MAGIC)] in (MAGIC, KEYED_MAGIC)


def is_keyed(stored: bytes) -> bool:
    return stored[: len(KEYED_MAGIC)] == KEYED_MAGIC


class RowSealer:
    def __init__(self, key: bytes, magic: bytes = MAGIC) -> None:
        self._cipher = AESGCM(key)
        self._magic = magic

    def seal(self, payload: bytes, bound_to: str) -> bytes:
        nonce = os.urandom(NONCE)
        return self._magic + nonce + self._cipher.encrypt(nonce, payload, bound_to.encode())

    def open(self, stored: bytes, bound_to: str) -> bytes:
        stored = bytes(stored)
        if not is_sealed(stored):
            return stored  # plaintext of an earlier version
        if stored[: len(self._magic)] != self._magic:
            raise RowBroken(f"the stored value of {bound_to} is sealed under another key")
        body = stored[len(MAGIC) :]
        try:
            return self._cipher.decrypt(body[:NONCE], body[NONCE:], bound_to.encode())
        except InvalidTag:
            raise RowBroken(f"the stored value of {bound_to} fails authentication (tampered with, or moved)") from None


def sealed_sql(column: sa.ColumnElement) -> sa.ColumnElement[bool]:
    """Whether a column's value is sealed (under either key), in SQL."""
    head = sa.func.substr(column, 1, len(MAGIC))
    return sa.or_(head == sa.literal(MAGIC, sa.LargeBinary), head == sa.literal(KEYED_MAGIC, sa.LargeBinary))


def plain_length(column: sa.ColumnElement) -> sa.ColumnElement[int]:
    """The plaintext length of a column of sealed (or earlier plaintext) values, in SQL."""
    return sa.func.length(column) - sa.case((sealed_sql(column), OVERHEAD), else_=0)
