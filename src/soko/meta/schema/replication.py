"""Replication (``soko.replication``): one row per image and destination it must reach, and what the outbox reader
has consumed.

``replication_status`` is what DescribeImageReplicationStatus answers (IN_PROGRESS, COMPLETE, FAILED with a failure
code) and the key of the one-shot ``replication`` job that copies the image: ``requested`` counts requests (a push,
a tag moved onto the image, a backfill), so a run that finishes while a newer request came in runs again.
``replication_outbox`` remembers the outbox events the reader has turned into requests: events above ``low_water``
(``replication_cursor``) that it has seen, so an event that commits after a later one is still read once.
"""

from __future__ import annotations

import sqlalchemy as sa

from soko.meta.schema.base import DIGEST_LENGTH, Id, Timestamp, metadata

replication_status = sa.Table(
    "replication_status",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(12), nullable=False),  # the source registry
    sa.Column("repository", sa.String(256), nullable=False),
    sa.Column("digest", sa.String(DIGEST_LENGTH), nullable=False),
    sa.Column("dest_region", sa.String(32), nullable=False),
    sa.Column("dest_registry", sa.String(12), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # IN_PROGRESS | COMPLETE | FAILED
    sa.Column("failure_code", sa.Text, nullable=True),
    sa.Column("requested", sa.Integer, nullable=False, server_default="1"),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.UniqueConstraint(
        "account_id", "repository", "digest", "dest_region", "dest_registry", name="uq_replication_status_image"
    ),
)

replication_outbox = sa.Table(
    "replication_outbox",
    metadata,
    sa.Column("event_id", Id, primary_key=True, autoincrement=False),  # event_outbox.id, read and handled
)

replication_cursor = sa.Table(
    "replication_cursor",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("low_water", Id, nullable=False),  # every outbox event with an id at most this was handled
)


# StartReplicationBackfill: one row per backfill (ECR's ReplicationBackfill: PREPARING while the one-shot job
# ``replication_backfill`` lists the images, IN_PROGRESS while their replications run, then COMPLETE; STOPPED by
# StopReplicationBackfill), and one item per image it asked to replicate (their outcome is ``replication_status``).
RUNNING_BACKFILL = "status IN ('PREPARING', 'IN_PROGRESS')"

replication_backfills = sa.Table(
    "replication_backfills",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("account_id", sa.String(12), nullable=False),
    sa.Column("dest_region", sa.String(32), nullable=False),
    sa.Column("dest_registry", sa.String(12), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("failure_code", sa.Text, nullable=True),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("ended_at", Timestamp, nullable=True),
    sa.Index("ix_replication_backfills_account", "account_id", "started_at"),
    # one running backfill per destination region, as ECR (0032)
    sa.Index(
        "ux_replication_backfills_running",
        "account_id",
        "dest_region",
        unique=True,
        sqlite_where=sa.text(RUNNING_BACKFILL),
        postgresql_where=sa.text(RUNNING_BACKFILL),
    ),
)

replication_backfill_items = sa.Table(
    "replication_backfill_items",
    metadata,
    sa.Column(
        "backfill_id", sa.String(36), sa.ForeignKey("replication_backfills.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("repository", sa.String(256), primary_key=True),
    sa.Column("digest", sa.String(DIGEST_LENGTH), primary_key=True),
)
