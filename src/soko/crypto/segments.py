"""The sealed-object format: envelope encryption in authenticated segments.

::

    header   magic "SOKOSEAL" | version u8 | segment shift u8 | reserved u16 | object id (16)
             | key id (32, ASCII, NUL-padded) | wrapped data key: nonce (12) + AES-GCM(data key) + tag (16)
    segment  nonce (12) | AES-256-GCM ciphertext of up to SEGMENT plaintext bytes | tag (16)

Every object has its own random 256-bit data key, wrapped by the key the header names (the associated data of the
wrap is the header's first fields, so a header cannot be edited to point elsewhere). Segment ``i`` is encrypted with
the data key under a random nonce, with ``object id | i | final`` as associated data: a segment moved to another
position or another object, a flipped byte, or a cut anywhere fails its tag. Every segment but the last holds
exactly ``SEGMENT`` bytes; the last (``final`` = 1) holds fewer, possibly none, so a cut at a segment boundary is seen
as a missing final segment. Sizes map both ways without reading anything, and a read from any offset decrypts only
the segments it needs. Nonces are random (not counters) because a resumed writer re-encrypts the segment it resumes
in: the same key never sees the same nonce twice.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from soko.storage.base import StorageError

MAGIC = b"SOKOSEAL"
VERSION = 1
SHIFT = 18
SEGMENT = 1 << SHIFT  # 256 KiB of plaintext per segment
NONCE = 12
TAG = 16
OVERHEAD = NONCE + TAG
SEALED_SEGMENT = SEGMENT + OVERHEAD
KEY_ID_SIZE = 32
_FIXED = struct.Struct(">8sBBH16s32s")
WRAPPED = NONCE + 32 + TAG
HEADER = _FIXED.size + WRAPPED  # 120 bytes
_AAD = struct.Struct(">16sQB")


class SealBroken(StorageError):
    """Stored ciphertext failed authentication (tampered, truncated, swapped) or its key is unavailable."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"sealed object {path}: {why}; run soko fsck")
        self.path = path
        self.why = why


class KeyUnavailable(SealBroken):
    """The key that wraps the object's data key is unknown, disabled or gone (not corruption)."""


def sealed_size(plain: int) -> int:
    return HEADER + plain + (plain // SEGMENT + 1) * OVERHEAD


def plain_size(sealed: int) -> int | None:
    """The plaintext size of a sealed object of ``sealed`` bytes; None when no complete object has that size."""
    body = sealed - HEADER
    if body < OVERHEAD:
        return None
    full, last = divmod(body, SEALED_SEGMENT)
    if last < OVERHEAD:
        return None
    return full * SEGMENT + last - OVERHEAD


def stored_plain(sealed: int) -> int | None:
    """The plaintext a writer can resume after in an object of ``sealed`` bytes: ``plain_size``, or whole segments
    when a writer closed without its final one."""
    body = sealed - HEADER
    if body >= 0 and body % SEALED_SEGMENT == 0:
        return body // SEALED_SEGMENT * SEGMENT
    return plain_size(sealed)


def segment_offset(index: int) -> int:
    return HEADER + index * SEALED_SEGMENT


@dataclass(frozen=True, slots=True)
class Header:
    object_id: bytes
    key_id: str
    wrapped: bytes  # nonce + wrapped data key + tag

    def fixed(self) -> bytes:
        return _FIXED.pack(MAGIC, VERSION, SHIFT, 0, self.object_id, self.key_id.encode().ljust(KEY_ID_SIZE, b"\0"))

    def encode(self) -> bytes:
        return self.fixed() + self.wrapped

    @classmethod
    def decode(cls, data: bytes, path: str) -> Header:
        if len(data) < HEADER:
            raise SealBroken(path, "the header is cut short")
        magic, version, shift, _, object_id, key_id = _FIXED.unpack_from(data)
        if magic != MAGIC or version != VERSION or shift != SHIFT:
            raise SealBroken(path, "not a sealed object of a known version")
        return cls(object_id, key_id.rstrip(b"\0").decode("ascii", "replace"), bytes(data[_FIXED.size : HEADER]))


def new_header(key_id: str, kek: AESGCM) -> tuple[Header, AESGCM]:
    """A fresh object: its id, a random data key wrapped by ``kek``, and the data key's cipher."""
    if len(key_id.encode()) > KEY_ID_SIZE or not key_id.isascii():
        raise ValueError(f"key id {key_id!r} does not fit the header")
    data_key = AESGCM.generate_key(256)
    unwrapped = Header(os.urandom(16), key_id, b"")
    nonce = os.urandom(NONCE)
    wrapped = nonce + kek.encrypt(nonce, data_key, unwrapped.fixed())
    return Header(unwrapped.object_id, key_id, wrapped), AESGCM(data_key)


def unwrap(header: Header, kek: AESGCM, path: str) -> AESGCM:
    try:
        data_key = kek.decrypt(header.wrapped[:NONCE], header.wrapped[NONCE:], header.fixed())
    except InvalidTag:
        raise SealBroken(path, "its data key does not unwrap (header tampered with, or another key)") from None
    return AESGCM(data_key)


def seal(cipher: AESGCM, object_id: bytes, index: int, final: bool, plain: bytes | bytearray | memoryview) -> bytes:
    nonce = os.urandom(NONCE)
    return nonce + cipher.encrypt(nonce, plain, _AAD.pack(object_id, index, final))


def seal_into(
    cipher: AESGCM, object_id: bytes, index: int, final: bool, plain: bytes | bytearray | memoryview, out: memoryview
) -> memoryview:
    """``seal`` into ``out`` (room for ``len(plain) + OVERHEAD`` bytes): no fresh buffer, no concatenation.
    Returns the part of ``out`` the sealed segment fills."""
    size = len(plain) + OVERHEAD
    nonce = os.urandom(NONCE)
    out[:NONCE] = nonce
    cipher.encrypt_into(nonce, plain, _AAD.pack(object_id, index, final), out[NONCE:size])
    return out[:size]


def open_segment(
    cipher: AESGCM, object_id: bytes, index: int, final: bool, sealed: bytes | memoryview, path: str
) -> bytes:
    if len(sealed) < OVERHEAD:
        raise SealBroken(path, f"segment {index} is cut short")
    view = memoryview(sealed)  # (slicing bytes would copy the segment: a memoryview makes decryption ~5x faster)
    try:
        return cipher.decrypt(view[:NONCE], view[NONCE:], _AAD.pack(object_id, index, final))
    except InvalidTag:
        raise SealBroken(path, f"segment {index} fails authentication (tampered, truncated or moved)") from None


def open_segment_into(
    cipher: AESGCM, object_id: bytes, index: int, final: bool, sealed: memoryview, out: memoryview, path: str
) -> int:
    """``open_segment`` into ``out`` (room for ``SEGMENT`` bytes); returns the plaintext's size. A segment that fails
    authentication leaves zeros where its plaintext would be (GCM decrypts before it checks the tag): never a byte of
    unauthenticated plaintext in the caller's buffer."""
    size = len(sealed) - OVERHEAD
    if size < 0:
        raise SealBroken(path, f"segment {index} is cut short")
    target = out[:size]
    try:
        cipher.decrypt_into(sealed[:NONCE], sealed[NONCE:], _AAD.pack(object_id, index, final), target)
    except InvalidTag:
        target[:] = bytes(size)
        raise SealBroken(path, f"segment {index} fails authentication (tampered, truncated or moved)") from None
    return size
