from __future__ import annotations

import sqlalchemy as sa

from soko.meta.schema.base import Id, Timestamp, metadata

repositories = sa.Table(
    "repositories",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(12), nullable=False),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("tag_mutability", sa.String(32), nullable=False, server_default="MUTABLE"),
    # JSON list of {"filterType","filter"} for the *_WITH_EXCLUSION mutabilities.
    sa.Column("tag_mutability_filters", sa.Text, nullable=True),
    sa.Column("scan_on_push", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("encryption_type", sa.String(16), nullable=False, server_default="AES256"),
    sa.Column("kms_key", sa.String(2048), nullable=True),
    sa.Column("policy_text", sa.Text, nullable=True),  # the ECR repository policy
    sa.UniqueConstraint("account_id", "name"),
    sa.Index(None, "account_id", "created_at"),  # the console's list by creation time (keyset pages)
)
