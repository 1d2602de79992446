"""The events outbox: every domain write that changes what clients see leaves its events here, in its own
transaction (``UnitOfWork.emit``), so an event exists exactly when its change committed. Each row is a whole
EventBridge-shaped envelope; a delivery worker (later) drains the table in ``id`` order."""

from __future__ import annotations

import sqlalchemy as sa

from soko.meta.schema.base import Id, Timestamp, metadata

event_outbox = sa.Table(
    "event_outbox",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(36), nullable=False, unique=True),  # the envelope's "id" (UUID)
    sa.Column("account_id", sa.String(12), nullable=False),
    sa.Column("source", sa.String(64), nullable=False),  # aws.ecr | soko.registry
    sa.Column("detail_type", sa.String(64), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("body", sa.Text, nullable=False),  # the JSON envelope
)
