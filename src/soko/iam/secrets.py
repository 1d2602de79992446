"""The server master key: encrypts stored secrets (AES-256-GCM), derives the key that signs ECR tokens and the key
that wraps KMS key material.

The key comes from ``master_key`` (SOKO_MASTER_KEY, base64 of 32 bytes; required to be shared by nodes that share
a database) or is generated once into ``<data-dir>/master.key`` with mode 0600.
"""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from soko import private

_VERSION = b"\x01"


class MasterKey:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the master key must be 32 bytes (base64 of 32 random bytes)")
        self._aead = AESGCM(self._derive(key, b"soko/secrets"))
        self.token_key = self._derive(key, b"soko/ecr-tokens")
        self.kms_wrapping_key = self._derive(key, b"soko/kms-key-material")  # wraps KMS key material (soko.kms)
        self.storage_key = self._derive(key, b"soko/storage-encryption/v1")  # wraps blobs' data keys (soko.crypto)

    @staticmethod
    def _derive(key: bytes, purpose: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(key)

    @classmethod
    def load(cls, configured: str, data_dir: str) -> MasterKey:
        if configured:
            try:
                return cls(base64.b64decode(configured, validate=True))
            except ValueError as exc:
                raise ValueError(f"master_key (SOKO_MASTER_KEY) is not valid: {exc}") from None
        path = os.path.join(data_dir, "master.key")
        private.make_dirs(data_dir)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            with open(path, "rb") as f:
                return cls(base64.b64decode(f.read().strip()))
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64encode(os.urandom(32)) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        with open(path, "rb") as f:
            return cls(base64.b64decode(f.read().strip()))

    def encrypt(self, plaintext: str, context: str) -> bytes:
        """``context`` (e.g. the access key id) is bound as associated data: a row cannot be swapped for another."""
        nonce = os.urandom(12)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext.encode(), context.encode())

    def decrypt(self, blob: bytes, context: str) -> str:
        if blob[:1] != _VERSION:
            raise ValueError("unknown secret encoding")
        return self._aead.decrypt(blob[1:13], blob[13:], context.encode()).decode()
