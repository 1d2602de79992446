"""Keyspaces: where a repository's blob content lives, by its encryption (``soko.registry.encryption`` uses them;
the collector and ``soko fsck`` read them). Pure: shared by the domain packages without importing any."""

from __future__ import annotations

from dataclasses import dataclass

KEYED_TYPES = {"KMS": "kms", "KMS_DSSE": "dsse"}


@dataclass(frozen=True, slots=True)
class Keyspace:
    name: str  # kms/<key id> | dsse/<key id>
    encryption_type: str  # KMS | KMS_DSSE
    key_arn: str
    account_id: str

    @property
    def context(self) -> dict[str, str]:
        """The encryption context of the keyspace's data keys: a wrapped key opens only for its own keyspace."""
        return {"soko:ecr:keyspace": self.name}


def keyspace_of(encryption_type: str, kms_key: str | None, account_id: str) -> Keyspace | None:
    """The keyspace of a repository (None: AES256, the service key). ``kms_key`` is the key ARN stored at
    creation."""
    kind = KEYED_TYPES.get(encryption_type)
    if kind is None or not kms_key:
        return None
    key_id = kms_key.rsplit("/", 1)[-1]
    return Keyspace(f"{kind}/{key_id}", encryption_type, kms_key, account_id)
