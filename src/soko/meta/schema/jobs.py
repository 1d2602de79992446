"""Leased jobs (``soko.jobs``): one row per job — a periodic kind's single row, or one per key of a keyed kind.

A process runs a job only while it holds the row's lease (``owner``, ``lease_until``), taken by a conditional
UPDATE and renewed by heartbeats; a process that dies stops renewing, and once ``lease_until`` passes another
process takes the job over. The counters are cluster-wide (``soko jobs``, ``/metrics``).
"""

from __future__ import annotations

import sqlalchemy as sa

from soko.meta.schema.base import Timestamp, metadata

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("kind", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(256), primary_key=True),  # "" for a periodic kind's one job
    sa.Column("owner", sa.String(128), nullable=True),  # host:pid:random of the process holding the lease
    sa.Column("lease_until", Timestamp, nullable=True),
    sa.Column("next_run", Timestamp, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),  # failures in a row (backoff)
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("runs", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("failures", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("last_run_at", Timestamp, nullable=True),
    sa.Column("last_duration", sa.Float(precision=53), nullable=True),
    sa.Column("last_lag", sa.Float(precision=53), nullable=True),  # how late the last run started
    sa.Index(None, "next_run"),
)
