"""KMS state (``soko.kms``): customer and AWS-managed keys, their versions of key material (wrapped by the master
key), aliases and tags."""

from __future__ import annotations

import sqlalchemy as sa

from soko.meta.schema.base import Timestamp, metadata

kms_keys = sa.Table(
    "kms_keys",
    metadata,
    sa.Column("key_id", sa.String(36), primary_key=True),  # a UUID, unique across accounts (as in AWS)
    sa.Column("account_id", sa.String(12), nullable=False),
    sa.Column("description", sa.String(8192), nullable=False, server_default=""),
    # Enabled | Disabled | PendingDeletion | Deleted (Deleted: material destroyed, answered as NotFound)
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("manager", sa.String(16), nullable=False),  # CUSTOMER | AWS
    sa.Column("policy_text", sa.Text, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("deletion_date", Timestamp, nullable=True),  # PendingDeletion: when the material is destroyed
    sa.Column("pending_window_days", sa.Integer, nullable=True),
    sa.Column("rotation_enabled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("rotation_period_days", sa.Integer, nullable=True),
    sa.Column("next_rotation_at", Timestamp, nullable=True),
    sa.Column("current_version", sa.Integer, nullable=False, server_default="1"),
    sa.Index(None, "account_id"),
    sa.Index(None, "state", "deletion_date"),
)

kms_key_material = sa.Table(
    "kms_key_material",
    metadata,
    sa.Column("key_id", sa.String(36), sa.ForeignKey("kms_keys.key_id", ondelete="CASCADE"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("wrapped", sa.LargeBinary, nullable=False),  # AES-256-GCM under the master key's KMS wrapping key
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("rotation_type", sa.String(16), nullable=True),  # AUTOMATIC | ON_DEMAND (None: the original)
)

kms_aliases = sa.Table(
    "kms_aliases",
    metadata,
    sa.Column("account_id", sa.String(12), primary_key=True),
    sa.Column("alias_name", sa.String(256), primary_key=True),  # "alias/..."
    sa.Column("key_id", sa.String(36), sa.ForeignKey("kms_keys.key_id", ondelete="CASCADE"), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Index(None, "key_id"),
)

kms_key_tags = sa.Table(
    "kms_key_tags",
    metadata,
    sa.Column("key_id", sa.String(36), sa.ForeignKey("kms_keys.key_id", ondelete="CASCADE"), primary_key=True),
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)
