"""Audit events: every authentication and authorization decision, and every lifecycle expiry."""

from __future__ import annotations

import sqlalchemy as sa

from soko.meta.schema.base import Id, Timestamp, metadata

audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("at", Timestamp, nullable=False),
    sa.Column("event", sa.String(32), nullable=False),  # authn | authz | lifecycle | …
    sa.Column("principal", sa.String(2048), nullable=True),
    sa.Column("action", sa.String(128), nullable=True),
    sa.Column("resource", sa.String(2048), nullable=True),
    sa.Column("decision", sa.String(16), nullable=False),  # allow | deny | challenge | error
    sa.Column("reason", sa.String(1024), nullable=True),
    sa.Column("source_ip", sa.String(64), nullable=True),
    sa.Column("endpoint", sa.String(64), nullable=True),
    sa.Column("request_id", sa.String(64), nullable=True),  # the first request's, when count > 1
    # Identical allow decisions within one flush window (~1 s) are one row with a count; denials are never merged.
    sa.Column("count", sa.Integer, nullable=False, server_default="1"),
    sa.Index(None, "at"),
    sa.Index(None, "principal"),
    sa.Index(None, "resource", "at"),  # the console's search by repository, newest first
)
