from __future__ import annotations

import sqlalchemy as sa

from soko.meta.schema.base import Id, Timestamp, metadata

# In-flight blob uploads. The data lives in storage at uploads/<id>/data; the row is what makes the session real
# (and what expiry and GC consult), so a session survives restarts and works from any node.
uploads = sa.Table(
    "uploads",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("repository_id", Id, sa.ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    # The request writing a chunk (or completing) right now, on any process or node: a claim with a heartbeat, so
    # two requests never write the same bytes, and a writer that died stops blocking the session: at once when it
    # was a process of this node (the token names it: soko.process_identity), after the heartbeat goes stale if not.
    sa.Column("writer", sa.String(128), nullable=True),
    sa.Column("writer_seen", Timestamp, nullable=True),
    # The principal (ARN) that opened the session: open sessions are capped per principal and repository.
    sa.Column("owner", sa.String(2048), nullable=True),
    # ECR's layer API only: the end offset of the first part under its 5 MiB minimum. Such a part is allowed only as
    # the last one, which only completion knows (CompleteLayerUpload then refuses with LayerPartTooSmallException).
    sa.Column("short_part_end", sa.BigInteger, nullable=True),
    # Repositories with a customer key (KMS, KMS_DSSE): the keyspace and the KMS-wrapped key the data is sealed
    # under from its first byte (soko.registry.encryption); NULL: the service key.
    sa.Column("keyspace", sa.String(64), nullable=True),
    sa.Column("wrapped_key", sa.LargeBinary, nullable=True),
    sa.Index(None, "updated_at"),
    sa.Index("ix_uploads_repository_id_owner", "repository_id", "owner"),
)
