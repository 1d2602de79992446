"""Which blob rows have a service-key copy (``blobs/``, or the archive tier), in SQL: the one rule metering and
``soko fsck`` share. A blob uploaded only to KMS repositories has none, only its keyed copies (``blob_copies``); one
an AES256 repository stored keeps its object (``seal_id``) while the row lives, even after every AES256 repository
let it go (the collector deletes it only with the row)."""

from __future__ import annotations

import sqlalchemy as sa

from soko.kernel.keyspaces import KEYED_TYPES
from soko.meta.schema import blob_copies, blobs, repository_blobs
from soko.meta.schema import repositories as repos


def service_key_held() -> sa.ColumnElement[bool]:
    """Whether something reads the row's service-key copy: an AES256 repository links it, or it is the only copy."""
    aes_linked = sa.exists().where(
        repository_blobs.c.digest == blobs.c.digest,
        repository_blobs.c.repository_id == repos.c.id,
        repos.c.encryption_type.not_in(list(KEYED_TYPES)),
    )
    copied = sa.exists().where(blob_copies.c.digest == blobs.c.digest)
    return aes_linked | ~copied


def has_service_copy() -> sa.ColumnElement[bool]:
    """Whether the row has a service-key copy: held, or sealed by this version (an earlier version's plaintext that
    only KMS repositories hold now is not counted: nothing says whether it was ever stored)."""
    return blobs.c.seal_id.is_not(None) | service_key_held()
