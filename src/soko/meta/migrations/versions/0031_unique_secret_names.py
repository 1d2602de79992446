"""A secret's name is unique in its account (Secrets Manager's rule), now in the schema: two concurrent CreateSecret
calls of one name could both succeed on PostgreSQL. Duplicates such a race left keep their ARNs (rules name them, and
each value is sealed with its ARN as associated data): the newest keeps the name — the secret lookups by name
already answered — and each other takes its ARN's last part (``<name>-<suffix>``) as its name.

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-06 23:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.text("SELECT arn, account_id, name FROM secrets ORDER BY account_id, name, created_at DESC, arn DESC")
    ).all()
    seen: set[tuple[str, str]] = set()
    for row in rows:
        if (row.account_id, row.name) not in seen:
            seen.add((row.account_id, row.name))
            continue
        renamed = row.arn.rsplit(":", 1)[-1]  # arn:…:secret:<name>-<suffix>
        conn.execute(sa.text("UPDATE secrets SET name = :name WHERE arn = :arn"), {"name": renamed, "arn": row.arn})
    op.drop_index("ix_secrets_account_name", "secrets")
    op.create_index("ix_secrets_account_name", "secrets", ["account_id", "name"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_secrets_account_name", "secrets")
    op.create_index("ix_secrets_account_name", "secrets", ["account_id", "name"])
