"""Metering: GB-month samples of stored bytes, and transfer/request counts per day (see ``soko.metering``).

Stored bytes themselves are never kept here: they are computed from blobs, links and manifests on demand.
"""

from __future__ import annotations

import sqlalchemy as sa

from soko.meta.schema.base import Timestamp, metadata

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
    sa.Index(None, "slot_start"),
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
