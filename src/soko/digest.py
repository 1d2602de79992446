"""Content digests: parsing, validation and streaming hashers (sha256 and sha512, as OCI allows)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from soko.errors import DigestInvalid

# OCI image-spec descriptor digest grammar, restricted to the registered algorithms we verify.
_ENCODED = {"sha256": re.compile(r"[a-f0-9]{64}"), "sha512": re.compile(r"[a-f0-9]{128}")}
_GENERIC = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
SUPPORTED_ALGORITHMS = tuple(_ENCODED)


@dataclass(frozen=True, slots=True)
class Digest:
    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @classmethod
    def parse(cls, value: str) -> Digest:
        """Parse ``alg:hex``; raise DigestInvalid for malformed or unsupported digests."""
        if not isinstance(value, str) or len(value) > 200 or not _GENERIC.fullmatch(value):
            raise DigestInvalid(f"'{str(value)[:80]}' is not a valid digest; expected e.g. sha256:<64 hex digits>")
        algorithm, _, encoded = value.partition(":")
        pattern = _ENCODED.get(algorithm)
        if pattern is None:
            raise DigestInvalid(
                f"digest algorithm '{algorithm}' is not supported; use one of {', '.join(SUPPORTED_ALGORITHMS)}"
            )
        if not pattern.fullmatch(encoded):
            raise DigestInvalid(f"'{value[:80]}' is not a valid {algorithm} digest (wrong length or characters)")
        return cls(algorithm, encoded)

    def hasher(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm)


def is_digest(reference: str) -> bool:
    """True when a manifest reference looks like a digest rather than a tag."""
    return ":" in reference


def compute(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
