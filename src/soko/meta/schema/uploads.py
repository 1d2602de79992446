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
    sa.Index(None, "updated_at"),
)
