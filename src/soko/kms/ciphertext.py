"""The ciphertext blob format and the wrapping of key material: pure functions, no I/O.

A ciphertext blob is self-describing, so Decrypt needs no KeyId and rotation keeps old blobs readable::

    0x01 | key id (36 ASCII bytes, a UUID) | key version (4 bytes, big endian) | nonce (12) | AES-256-GCM output

The associated data is the 41-byte header followed by the encryption context in a canonical form (keys sorted,
compact UTF-8 JSON): a blob decrypts only with exactly the context it was made with, and its header (which key,
which version) cannot be altered. Key material (32 random bytes per key version) is stored wrapped by a key the
master key derives (``MasterKey.kms_wrapping_key``), AES-256-GCM with ``<key id>/<version>`` as associated data, so a
row cannot be moved to another key or version.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT = 1
HEADER = 1 + 36 + 4
NONCE = 12
TAG = 16
MIN_BLOB = HEADER + NONCE + TAG
_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Malformed(ValueError):
    """Not a ciphertext blob of this format, or it does not authenticate."""


@dataclass(frozen=True, slots=True)
class BlobHeader:
    key_id: str
    version: int


def canonical_context(context: dict[str, str] | None) -> bytes:
    return json.dumps(dict(sorted((context or {}).items())), separators=(",", ":"), ensure_ascii=False).encode()


def parse_header(blob: bytes) -> BlobHeader:
    if len(blob) < MIN_BLOB or blob[0] != FORMAT or not _UUID.fullmatch(blob[1:37]):
        raise Malformed("not a ciphertext blob this KMS made")
    (version,) = struct.unpack(">I", blob[37:41])
    return BlobHeader(blob[1:37].decode(), version)


def seal(material: bytes, key_id: str, version: int, plaintext: bytes, context: dict[str, str] | None) -> bytes:
    header = bytes([FORMAT]) + key_id.encode() + struct.pack(">I", version)
    nonce = os.urandom(NONCE)
    return header + nonce + AESGCM(material).encrypt(nonce, plaintext, header + canonical_context(context))


def open_blob(material: bytes, blob: bytes, context: dict[str, str] | None) -> bytes:
    header, nonce, body = blob[:HEADER], blob[HEADER : HEADER + NONCE], blob[HEADER + NONCE :]
    try:
        return AESGCM(material).decrypt(nonce, body, header + canonical_context(context))
    except InvalidTag:
        raise Malformed("the ciphertext or its encryption context does not authenticate") from None


def wrap_material(wrapping_key: bytes, key_id: str, version: int, material: bytes) -> bytes:
    nonce = os.urandom(NONCE)
    return bytes([FORMAT]) + nonce + AESGCM(wrapping_key).encrypt(nonce, material, f"{key_id}/{version}".encode())


def unwrap_material(wrapping_key: bytes, key_id: str, version: int, wrapped: bytes) -> bytes:
    if wrapped[:1] != bytes([FORMAT]):
        raise Malformed("unknown key material encoding")
    try:
        return AESGCM(wrapping_key).decrypt(wrapped[1:13], wrapped[13:], f"{key_id}/{version}".encode())
    except InvalidTag:
        raise Malformed(
            f"the material of key {key_id} version {version} does not unwrap: is this the master key it was "
            "stored under?"
        ) from None
