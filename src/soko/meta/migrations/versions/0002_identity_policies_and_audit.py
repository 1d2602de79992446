"""identity, policies and audit

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 16:05:40.183858
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "account_settings",
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "name", name=op.f("pk_account_settings")),
    )
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(length=12), nullable=False),
        sa.Column("created_at", sa.Float(precision=53), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("at", sa.Float(precision=53), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("principal", sa.String(length=2048), nullable=True),
        sa.Column("action", sa.String(length=128), nullable=True),
        sa.Column("resource", sa.String(length=2048), nullable=True),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=1024), nullable=True),
        sa.Column("source_ip", sa.String(length=64), nullable=True),
        sa.Column("endpoint", sa.String(length=64), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("count", sa.Integer(), server_default="1", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_events_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_principal"), ["principal"], unique=False)

    op.create_table(
        "inline_policies",
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("principal_type", sa.String(length=8), nullable=False),
        sa.Column("principal_name", sa.String(length=64), nullable=False),
        sa.Column("policy_name", sa.String(length=128), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint(
            "account_id", "principal_type", "principal_name", "policy_name", name=op.f("pk_inline_policies")
        ),
    )
    op.create_table(
        "registry_policies",
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("policy_text", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Float(precision=53), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_registry_policies")),
    )
    op.create_table(
        "sts_sessions",
        sa.Column("access_key_id", sa.String(length=32), nullable=False),
        sa.Column("secret_encrypted", sa.LargeBinary(), nullable=False),
        sa.Column("session_token_sha256", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("role_name", sa.String(length=64), nullable=False),
        sa.Column("role_id", sa.String(length=32), nullable=False),
        sa.Column("session_name", sa.String(length=64), nullable=False),
        sa.Column("source_arn", sa.String(length=2048), nullable=False),
        sa.Column("expires_at", sa.Float(precision=53), nullable=False),
        sa.Column("created_at", sa.Float(precision=53), nullable=False),
        sa.PrimaryKeyConstraint("access_key_id", name=op.f("pk_sts_sessions")),
    )
    with op.batch_alter_table("sts_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sts_sessions_expires_at"), ["expires_at"], unique=False)

    op.create_table(
        "access_keys",
        sa.Column("access_key_id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("user_name", sa.String(length=64), nullable=True),
        sa.Column("secret_encrypted", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="Active", nullable=False),
        sa.Column("created_at", sa.Float(precision=53), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_access_keys_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("access_key_id", name=op.f("pk_access_keys")),
    )
    with op.batch_alter_table("access_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_access_keys_account_id_user_name"), ["account_id", "user_name"], unique=False
        )

    op.create_table(
        "iam_roles",
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("role_id", sa.String(length=32), nullable=False),
        sa.Column("path", sa.String(length=512), server_default="/", nullable=False),
        sa.Column("trust_policy", sa.Text(), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=True),
        sa.Column("max_session_duration", sa.Integer(), server_default="3600", nullable=False),
        sa.Column("created_at", sa.Float(precision=53), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_iam_roles_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("account_id", "name", name=op.f("pk_iam_roles")),
        sa.UniqueConstraint("role_id", name=op.f("uq_iam_roles_role_id")),
    )
    op.create_table(
        "iam_users",
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("path", sa.String(length=512), server_default="/", nullable=False),
        sa.Column("created_at", sa.Float(precision=53), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_iam_users_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("account_id", "name", name=op.f("pk_iam_users")),
        sa.UniqueConstraint("user_id", name=op.f("uq_iam_users_user_id")),
    )
    op.create_table(
        "managed_policies",
        sa.Column("arn", sa.String(length=2048), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("policy_id", sa.String(length=32), nullable=False),
        sa.Column("path", sa.String(length=512), server_default="/", nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=True),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(precision=53), nullable=False),
        sa.Column("updated_at", sa.Float(precision=53), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_managed_policies_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("arn", name=op.f("pk_managed_policies")),
        sa.UniqueConstraint("account_id", "name", name=op.f("uq_managed_policies_account_id_name")),
        sa.UniqueConstraint("policy_id", name=op.f("uq_managed_policies_policy_id")),
    )
    op.create_table(
        "policy_attachments",
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("principal_type", sa.String(length=8), nullable=False),
        sa.Column("principal_name", sa.String(length=64), nullable=False),
        sa.Column("policy_arn", sa.String(length=2048), nullable=False),
        sa.ForeignKeyConstraint(
            ["policy_arn"], ["managed_policies.arn"], name=op.f("fk_policy_attachments_policy_arn_managed_policies")
        ),
        sa.PrimaryKeyConstraint(
            "account_id", "principal_type", "principal_name", "policy_arn", name=op.f("pk_policy_attachments")
        ),
    )
    with op.batch_alter_table("policy_attachments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_policy_attachments_policy_arn"), ["policy_arn"], unique=False)

    with op.batch_alter_table("repositories", schema=None) as batch_op:
        batch_op.add_column(sa.Column("policy_text", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("repositories", schema=None) as batch_op:
        batch_op.drop_column("policy_text")

    with op.batch_alter_table("policy_attachments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_policy_attachments_policy_arn"))

    op.drop_table("policy_attachments")
    op.drop_table("managed_policies")
    op.drop_table("iam_users")
    op.drop_table("iam_roles")
    with op.batch_alter_table("access_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_access_keys_account_id_user_name"))

    op.drop_table("access_keys")
    with op.batch_alter_table("sts_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sts_sessions_expires_at"))

    op.drop_table("sts_sessions")
    op.drop_table("registry_policies")
    op.drop_table("inline_policies")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_events_principal"))
        batch_op.drop_index(batch_op.f("ix_audit_events_at"))

    op.drop_table("audit_events")
    op.drop_table("accounts")
    op.drop_table("account_settings")
