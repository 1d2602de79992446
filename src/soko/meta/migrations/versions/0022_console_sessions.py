"""web console sessions (server-side: sign-out revokes; idle and absolute expiry)

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06 18:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("id_sha256", sa.String(64), nullable=False),
        sa.Column("access_key_id", sa.String(128), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float(precision=53), nullable=False),
        sa.Column("last_seen_at", sa.Float(precision=53), nullable=False),
        sa.Column("expires_at", sa.Float(precision=53), nullable=False),
        sa.Column("source_ip", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id_sha256", name="pk_console_sessions"),
    )
    op.create_index("ix_console_sessions_expires_at", "console_sessions", ["expires_at"])
    op.create_index("ix_console_sessions_access_key_id", "console_sessions", ["access_key_id"])
    # The console's repository list sorts by creation time too (keyset pages: account, created_at, name).
    op.create_index("ix_repositories_account_id_created_at", "repositories", ["account_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_repositories_account_id_created_at", table_name="repositories")
    op.drop_table("console_sessions")
