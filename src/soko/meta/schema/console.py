"""Web console sign-in sessions (``soko.console.sessions``): server-side, so signing out really revokes one."""

from __future__ import annotations

import sqlalchemy as sa

from soko.meta.schema.base import Timestamp, metadata

console_sessions = sa.Table(
    "console_sessions",
    metadata,
    # SHA-256 of the cookie's random value: a copy of this table does not sign anyone in.
    sa.Column("id_sha256", sa.String(64), primary_key=True),
    sa.Column("access_key_id", sa.String(128), nullable=False),
    sa.Column("csrf_token", sa.String(64), nullable=False),  # the form token of this session (not a secret key)
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("last_seen_at", Timestamp, nullable=False),
    sa.Column("expires_at", Timestamp, nullable=False),  # absolute expiry (idle expiry: last_seen_at + idle timeout)
    sa.Column("source_ip", sa.String(64), nullable=True),
    sa.Index(None, "expires_at"),
    sa.Index(None, "access_key_id"),
)
