"""Resource-side policies: the registry policy per account (repository policies live on the repository row)."""

from __future__ import annotations

import sqlalchemy as sa

from soko.meta.schema.base import Timestamp, metadata

registry_policies = sa.Table(
    "registry_policies",
    metadata,
    sa.Column("account_id", sa.String(12), primary_key=True),
    sa.Column("policy_text", sa.Text, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)

# Account-level ECR settings (BLOB_MOUNTING, REGISTRY_POLICY_SCOPE, …).
account_settings = sa.Table(
    "account_settings",
    metadata,
    sa.Column("account_id", sa.String(12), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(64), nullable=False),
)
