"""KMS keys, their wrapped key material (one row per version), aliases and tags

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06 18:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

_TS = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "kms_keys",
        sa.Column("key_id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("description", sa.String(length=8192), server_default="", nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("manager", sa.String(length=16), nullable=False),
        sa.Column("policy_text", sa.Text(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("deletion_date", _TS, nullable=True),
        sa.Column("pending_window_days", sa.Integer(), nullable=True),
        sa.Column("rotation_enabled", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("rotation_period_days", sa.Integer(), nullable=True),
        sa.Column("next_rotation_at", _TS, nullable=True),
        sa.Column("current_version", sa.Integer(), server_default="1", nullable=False),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_kms_keys")),
    )
    with op.batch_alter_table("kms_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_kms_keys_account_id"), ["account_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_kms_keys_state_deletion_date"), ["state", "deletion_date"], unique=False)
    op.create_table(
        "kms_key_material",
        sa.Column("key_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("rotation_type", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(
            ["key_id"], ["kms_keys.key_id"], name=op.f("fk_kms_key_material_key_id_kms_keys"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("key_id", "version", name=op.f("pk_kms_key_material")),
    )
    op.create_table(
        "kms_aliases",
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("alias_name", sa.String(length=256), nullable=False),
        sa.Column("key_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"], ["kms_keys.key_id"], name=op.f("fk_kms_aliases_key_id_kms_keys"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("account_id", "alias_name", name=op.f("pk_kms_aliases")),
    )
    with op.batch_alter_table("kms_aliases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_kms_aliases_key_id"), ["key_id"], unique=False)
    op.create_table(
        "kms_key_tags",
        sa.Column("key_id", sa.String(length=36), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"], ["kms_keys.key_id"], name=op.f("fk_kms_key_tags_key_id_kms_keys"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("key_id", "key", name=op.f("pk_kms_key_tags")),
    )


def downgrade() -> None:
    op.drop_table("kms_key_tags")
    with op.batch_alter_table("kms_aliases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_kms_aliases_key_id"))
    op.drop_table("kms_aliases")
    op.drop_table("kms_key_material")
    with op.batch_alter_table("kms_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_kms_keys_state_deletion_date"))
        batch_op.drop_index(batch_op.f("ix_kms_keys_account_id"))
    op.drop_table("kms_keys")
