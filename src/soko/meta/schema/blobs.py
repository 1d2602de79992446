from __future__ import annotations

import sqlalchemy as sa

from soko.meta.schema.base import DIGEST_LENGTH, Id, Timestamp, metadata

# The content-addressed store: one row per stored blob, however many repositories use it.
blobs = sa.Table(
    "blobs",
    metadata,
    sa.Column("digest", sa.String(DIGEST_LENGTH), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    # The sealed object (soko.crypto) holding the content; NULL: plaintext stored by a version before encryption.
    sa.Column("seal_id", sa.String(32), nullable=True),
    # Where the content is (registry/storage_class.py): NULL, standard storage at blobs/<alg>/<2 hex>/<hex>;
    # "archive", the archive store at archive_path (unique per copy, so a stale copy is never the live one).
    sa.Column("tier", sa.String(16), nullable=True),
    sa.Column("archive_path", sa.String(300), nullable=True),
    sa.Column("archived_at", Timestamp, nullable=True),
)

# Which repositories may read which blobs ("linked" blobs, as in Distribution's linkedblobstore).
repository_blobs = sa.Table(
    "repository_blobs",
    metadata,
    sa.Column("repository_id", Id, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("digest", sa.String(DIGEST_LENGTH), sa.ForeignKey("blobs.digest"), primary_key=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index(None, "digest"),
)

# A blob's content stored under a customer key (repositories with encryptionType KMS or KMS_DSSE): one copy per
# digest and keyspace (``kms/<key id>`` or ``dsse/<key id>``), at ``keyed/<keyspace>/<digest path>`` (soko.crypto),
# its data key wrapped by the KMS key (``wrapped_key``, a KMS ciphertext blob). The ``blobs`` row stays the digest's
# one row (size, links, GC); the service-key copy at ``blobs/…`` exists only when an AES256 repository holds it.
blob_copies = sa.Table(
    "blob_copies",
    metadata,
    sa.Column("digest", sa.String(DIGEST_LENGTH), sa.ForeignKey("blobs.digest"), primary_key=True),
    sa.Column("keyspace", sa.String(64), primary_key=True),
    sa.Column("seal_id", sa.String(32), nullable=False),
    sa.Column("wrapped_key", sa.LargeBinary, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index(None, "keyspace"),
)

# The key a customer-key keyspace's database values are sealed under (soko.crypto.rows, KEYED_MAGIC: the manifests
# of KMS and KMS_DSSE repositories): a data key KMS generated on the keyspace's key, kept only as KMS's ciphertext
# (``wrapped_key``, with the keyspace as encryption context); made on the keyspace's first manifest, never changed.
keyspace_keys = sa.Table(
    "keyspace_keys",
    metadata,
    sa.Column("keyspace", sa.String(64), primary_key=True),
    sa.Column("wrapped_key", sa.LargeBinary, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
)

# Per-account service keys (ECR's AES256, soko.registry.account_keys): random 256-bit keys, each wrapped by a key
# derived from the master key (``wrapped``: nonce | AES-256-GCM, the account and key id as associated data). An
# account may hold several (rotation: the newest wraps new objects); deleting an account's rows crypto-shreds
# everything only that account holds.
account_keys = sa.Table(
    "account_keys",
    metadata,
    sa.Column("account_id", sa.String(12), primary_key=True),
    sa.Column("key_id", sa.String(16), primary_key=True),
    sa.Column("wrapped", sa.LargeBinary, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
)

# The key of a service-key object (``blobs/…``) as each account holding the digest sees it: the object's own random
# key (its header's key-encrypting key) wrapped by that account's service key. One object per digest, readable by an
# account only through its own row; no row for a digest: content of an earlier version under the deployment key.
blob_keys = sa.Table(
    "blob_keys",
    metadata,
    sa.Column("digest", sa.String(DIGEST_LENGTH), sa.ForeignKey("blobs.digest"), primary_key=True),
    sa.Column("account_id", sa.String(12), primary_key=True),
    sa.Column("wrapped_key", sa.LargeBinary, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index(None, "account_id"),
)
