"""audit_events (resource, at): the console's audit search by repository reads one repository's rows newest first
instead of walking the whole log backwards by time

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-06 21:25:00
"""

from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.create_index(batch.f("ix_audit_events_resource_at"), ["resource", "at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_index(batch.f("ix_audit_events_resource_at"))
