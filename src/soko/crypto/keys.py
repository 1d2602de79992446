"""The keys that wrap data keys.

``service/v1`` is the service-managed key (ECR's AES256): derived from the server master key with HKDF for this
one purpose (``MasterKey.storage_key``), never stored anywhere. A key ring maps the key id a sealed header names
to the cipher that unwraps it; an id it does not know is ``KeyUnavailable`` (a key that is gone, not corruption).
"""

from __future__ import annotations

import functools

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from soko.crypto.segments import KeyUnavailable

SERVICE_KEY_ID = "service/v1"


class KeyRing:
    def __init__(self, keys: dict[str, bytes], current: str) -> None:
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        if current not in self._ciphers:
            raise ValueError(f"the current key {current!r} is not in the ring")
        self.current = current
        self._current_key = keys[current]

    def _derive(self, info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(self._current_key)

    @functools.cached_property
    def row_key(self) -> bytes:
        """The key of sealed database values (soko.crypto.rows: manifests), derived from the current key."""
        return self._derive(b"soko/rows/v1")

    @functools.cached_property
    def account_wrap_key(self) -> bytes:
        """The key that wraps per-account service keys (soko.registry.account_keys), derived from the current key."""
        return self._derive(b"soko/account-keys/v1")

    @classmethod
    def service(cls, storage_key: bytes) -> KeyRing:
        """The service-managed key ring of a deployment (``storage_key``: ``MasterKey.storage_key``)."""
        return cls({SERVICE_KEY_ID: storage_key}, SERVICE_KEY_ID)

    def cipher(self, key_id: str, path: str) -> AESGCM:
        try:
            return self._ciphers[key_id]
        except KeyError:
            raise KeyUnavailable(path, f"its key {key_id!r} is not available") from None
