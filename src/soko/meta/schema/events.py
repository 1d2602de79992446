"""The events outbox: every domain write that changes what clients see leaves its events here, in its own
transaction (``UnitOfWork.emit``), so an event exists exactly when its change committed. Each row is a whole
EventBridge-shaped envelope; ``soko.events`` drains the table in ``id`` order."""

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

# Where events go (``soko.events``): one row per target (a webhook) of an account. ``position`` is the outbox id up
# to which the target is done (delivered, skipped by its pattern, or dead-lettered): the outbox is committed in id
# order (``UnitOfWork.before_commit``), so a cursor loses nothing and keeps the order. ``attempts`` and
# ``next_attempt_at`` belong to the event right after ``position`` (the head), while it is being retried.
event_targets = sa.Table(
    "event_targets",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(12), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("secret", sa.LargeBinary, nullable=False),  # HMAC key, encrypted with the master key
    sa.Column("pattern", sa.Text, nullable=True),  # EventBridge event pattern (JSON); NULL: every event
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("timeout", sa.Float(precision=53), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", Timestamp, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("last_delivered_at", Timestamp, nullable=True),
    sa.Column("last_lag", sa.Float(precision=53), nullable=True),  # created → delivered, the last event
    sa.Column("delivered", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("failures", sa.BigInteger, nullable=False, server_default="0"),
    sa.UniqueConstraint("account_id", "name"),
)

# Events a target gave up on after ``max_attempts`` (status ``dead``), and those ``soko events redeliver`` asked to
# be sent again (status ``retry``, with their own attempts and backoff). The body is kept: the outbox is pruned.
event_dead_letters = sa.Table(
    "event_dead_letters",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("target_id", Id, sa.ForeignKey("event_targets.id", ondelete="CASCADE"), nullable=False),
    sa.Column("outbox_id", sa.BigInteger, nullable=False),
    sa.Column("event_id", sa.String(36), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("status", sa.String(8), nullable=False),  # dead | retry
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", Timestamp, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("dead_at", Timestamp, nullable=False),
    sa.UniqueConstraint("target_id", "event_id"),
    sa.Index(None, "status", "next_attempt_at"),
)
