"""Accounts and IAM: users, roles, access keys, policies, and STS sessions.

Secret access keys must be recoverable to verify SigV4 signatures, so they are stored encrypted (AES-256-GCM under
the server master key), never hashed and never in clear.
"""

from __future__ import annotations

import sqlalchemy as sa

from soko.meta.schema.base import Timestamp, metadata

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.String(12), primary_key=True),
    sa.Column("created_at", Timestamp, nullable=False),
)

iam_users = sa.Table(
    "iam_users",
    metadata,
    sa.Column("account_id", sa.String(12), sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.String(32), nullable=False, unique=True),
    sa.Column("path", sa.String(512), nullable=False, server_default="/"),
    sa.Column("created_at", Timestamp, nullable=False),
)

iam_roles = sa.Table(
    "iam_roles",
    metadata,
    sa.Column("account_id", sa.String(12), sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("role_id", sa.String(32), nullable=False, unique=True),
    sa.Column("path", sa.String(512), nullable=False, server_default="/"),
    sa.Column("trust_policy", sa.Text, nullable=False),
    sa.Column("description", sa.String(1000), nullable=True),
    sa.Column("max_session_duration", sa.Integer, nullable=False, server_default="3600"),
    sa.Column("created_at", Timestamp, nullable=False),
)

# IAM tags of users and roles (principal_type "user" | "role"). Keys are unique per principal without regard to
# case (the stored spelling is the last one set); they become aws:PrincipalTag/<key> and, on IAM requests that
# target the principal, aws:ResourceTag/<key>.
iam_tags = sa.Table(
    "iam_tags",
    metadata,
    sa.Column("account_id", sa.String(12), primary_key=True),
    sa.Column("principal_type", sa.String(8), primary_key=True),
    sa.Column("principal_name", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)

# Long-term keys: a user's, or the account root's (user_name NULL).
access_keys = sa.Table(
    "access_keys",
    metadata,
    sa.Column("access_key_id", sa.String(32), primary_key=True),
    sa.Column("account_id", sa.String(12), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("user_name", sa.String(64), nullable=True),
    sa.Column("secret_encrypted", sa.LargeBinary, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="Active"),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index(None, "account_id", "user_name"),
)

# Temporary credentials from sts:AssumeRole.
sts_sessions = sa.Table(
    "sts_sessions",
    metadata,
    sa.Column("access_key_id", sa.String(32), primary_key=True),
    sa.Column("secret_encrypted", sa.LargeBinary, nullable=False),
    sa.Column("session_token_sha256", sa.String(64), nullable=False),
    sa.Column("account_id", sa.String(12), nullable=False),
    sa.Column("role_name", sa.String(64), nullable=False),
    sa.Column("role_id", sa.String(32), nullable=False),
    sa.Column("session_name", sa.String(64), nullable=False),
    sa.Column("source_arn", sa.String(2048), nullable=False),
    sa.Column("expires_at", Timestamp, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index(None, "expires_at"),
)

managed_policies = sa.Table(
    "managed_policies",
    metadata,
    sa.Column("arn", sa.String(2048), primary_key=True),
    sa.Column("account_id", sa.String(12), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("policy_id", sa.String(32), nullable=False, unique=True),
    sa.Column("path", sa.String(512), nullable=False, server_default="/"),
    sa.Column("description", sa.String(1000), nullable=True),
    sa.Column("document", sa.Text, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.UniqueConstraint("account_id", "name"),
)

# principal_type: "user" | "role"
policy_attachments = sa.Table(
    "policy_attachments",
    metadata,
    sa.Column("account_id", sa.String(12), primary_key=True),
    sa.Column("principal_type", sa.String(8), primary_key=True),
    sa.Column("principal_name", sa.String(64), primary_key=True),
    sa.Column("policy_arn", sa.String(2048), sa.ForeignKey("managed_policies.arn"), primary_key=True),
    sa.Index(None, "policy_arn"),
)

inline_policies = sa.Table(
    "inline_policies",
    metadata,
    sa.Column("account_id", sa.String(12), primary_key=True),
    sa.Column("principal_type", sa.String(8), primary_key=True),
    sa.Column("principal_name", sa.String(64), primary_key=True),
    sa.Column("policy_name", sa.String(128), primary_key=True),
    sa.Column("document", sa.Text, nullable=False),
)
