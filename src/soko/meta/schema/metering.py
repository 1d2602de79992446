"""Metering: GB-month samples of stored bytes, and transfer/request counts per day (see ``soko.metering``).

Stored bytes themselves are never kept here: they are computed from blobs, links and manifests on demand.
"""

from __future__ import annotations

import sqlalchemy as sa

from soko.meta.schema.base import DIGEST_LENGTH, Id, Timestamp, metadata

# One row per repository per sampling slot; the first node to sample a slot wins (insert-ignore on the key), so any
# number of nodes may sample. No FK: a deleted repository keeps the storage it accrued before deletion.
usage_samples = sa.Table(
    "usage_samples",
    metadata,
    sa.Column("account_id", sa.String(12), primary_key=True),
    sa.Column("repository_name", sa.String(256), primary_key=True),
    sa.Column("slot_start", sa.BigInteger, primary_key=True),  # epoch seconds, a multiple of slot_seconds
    sa.Column("slot_seconds", sa.Integer, nullable=False),
    sa.Column("logical_bytes", sa.BigInteger, nullable=False),
    # The repository's share of its account's deduplicated bytes (shares add up exactly to the account's).
    sa.Column("physical_bytes", sa.BigInteger, nullable=False),
    sa.Column("sampled_at", Timestamp, nullable=False),
    # The same two figures for the content in the archive tier (priced apart; logical/physical are standard).
    sa.Column("archive_logical_bytes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("archive_physical_bytes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Index(None, "slot_start"),
)

# ECR bills archived images for at least 90 days: an image deleted or restored sooner is charged the rest of them
# (its size x the seconds left) when it leaves the archive. No FK, like the samples.
archive_charges = sa.Table(
    "archive_charges",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(12), nullable=False),
    sa.Column("repository_name", sa.String(256), nullable=False),
    sa.Column("image_digest", sa.String(DIGEST_LENGTH), nullable=False),
    sa.Column("byte_seconds", sa.BigInteger, nullable=False),
    sa.Column("charged_at", Timestamp, nullable=False),
    sa.Column("reason", sa.String(16), nullable=False),  # "delete" | "restore"
    sa.Index(None, "charged_at"),
)

# Bytes served and requests, per day, added to by every process's periodic flush (upsert-add).
transfer_usage = sa.Table(
    "transfer_usage",
    metadata,
    sa.Column("account_id", sa.String(12), primary_key=True),
    sa.Column("repository_name", sa.String(256), primary_key=True),
    sa.Column("endpoint", sa.String(64), primary_key=True),  # "public" or the VPC endpoint id
    sa.Column("network", sa.String(16), primary_key=True),  # internet | same-region | private
    sa.Column("operation", sa.String(32), primary_key=True),  # blob_get, manifest_get, manifest_put, …
    sa.Column("day", sa.Date, primary_key=True),  # UTC
    sa.Column("bytes_out", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("requests", sa.BigInteger, nullable=False, server_default="0"),
    sa.Index(None, "day"),
)
