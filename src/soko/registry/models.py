"""Values the domain hands to front ends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from soko.registry.encryption import Keyspace


@dataclass(frozen=True, slots=True)
class RepoRef:
    account_id: str
    name: str


@dataclass(frozen=True, slots=True)
class Repository:
    id: int
    account_id: str
    name: str
    created_at: float
    tag_mutability: str
    tag_mutability_filters: list[dict]
    scan_on_push: bool
    encryption_type: str
    kms_key: str | None


@dataclass(frozen=True, slots=True)
class BlobInfo:
    digest: str
    size: int


@dataclass(frozen=True, slots=True)
class BlobContent:
    digest: str
    size: int
    storage_path: str
    redirect_url: str | None
    seal_id: str | None = None  # the encrypted object holding it (None: plaintext of an earlier version)
    keyspace: Keyspace | None = None  # the customer key's copy (KMS, KMS_DSSE repositories); None: the service key
    wrapped_key: bytes | None = None  # that copy's key, wrapped by KMS; or the service-key object's, by the account
    account_id: str | None = None  # the account whose wrap ``wrapped_key`` is (no keyspace: soko.registry.account_keys)
    generation: int | None = None  # the metadata generation its row was read under (soko.meta.changes)
    repository: str | None = None  # the repository it was opened in (with ``account_id``: where it is linked)


@dataclass(frozen=True, slots=True)
class UploadState:
    id: str
    repository: RepoRef
    size: int
    short_part_end: int | None = None  # see uploads.short_part_end (ECR's layer API)
    keyspace: Keyspace | None = None  # sealed under a customer key (KMS, KMS_DSSE repositories)
    wrapped_key: bytes | None = None  # its key, wrapped by KMS (None with a keyspace: a session start that died)


@dataclass(frozen=True, slots=True)
class ManifestRecord:
    id: int
    digest: str
    media_type: str
    payload: bytes
    status: str = "ACTIVE"  # ECR's imageStatus: ACTIVE, ARCHIVED or ACTIVATING (only ACTIVE images are pulled)


@dataclass(frozen=True, slots=True)
class PutManifestResult:
    digest: str
    subject_digest: str | None
    created: bool  # False when the same manifest was already there (and only the tag moved)
    tag_moved: bool = False  # the tag was created or now points here (False: no tag, or it already did)
