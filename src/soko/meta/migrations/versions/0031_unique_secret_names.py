"""A secret's name is unique in its account (Secrets Manager's rule), now in the schema: two concurrent CreateSecret
calls of one name could both succeed on PostgreSQL. Duplicates such a race left keep their ARNs (rules name them, and
each value is sealed with its ARN as associated data): the newest keeps the name — the secret lookups by name
already answered — and each other takes its ARN's last part (``<name>-<suffix>``) as its name.

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-06 23:50:00
"""

import itertools

import sqlalchemy as sa
from alembic import op

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None

NAME_MAX = 512  # secrets.name


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.text("SELECT arn, account_id, name FROM secrets ORDER BY account_id, name, created_at DESC, arn DESC")
    ).all()
    seen: set[tuple[str, str]] = set()
    taken = {(row.account_id, row.name) for row in rows}
    for row in rows:
        if (row.account_id, row.name) not in seen:
            seen.add((row.account_id, row.name))
            continue
        renamed = _free_name(row.account_id, row.name, row.arn, taken)
        taken.add((row.account_id, renamed))
        conn.execute(sa.text("UPDATE secrets SET name = :name WHERE arn = :arn"), {"name": renamed, "arn": row.arn})
    op.drop_index("ix_secrets_account_name", "secrets")
    op.create_index("ix_secrets_account_name", "secrets", ["account_id", "name"], unique=True)


def _free_name(account_id: str, name: str, arn: str, taken: set[tuple[str, str]]) -> str:
    """``<name>-<suffix>``, the ARN's last part (arn:…:secret:<name>-<suffix>), unless another secret has that name
    or it is past the column's 512 characters: then the name cut to fit, and a counter if need be."""
    tail = "-" + arn.rsplit("-", 1)[-1]
    for n in itertools.count():
        end = tail if n == 0 else f"{tail}-{n}"
        candidate = name[: NAME_MAX - len(end)] + end
        if (account_id, candidate) not in taken:
            return candidate
    raise AssertionError("unreachable")


def downgrade() -> None:
    op.drop_index("ix_secrets_account_name", "secrets")
    op.create_index("ix_secrets_account_name", "secrets", ["account_id", "name"])
