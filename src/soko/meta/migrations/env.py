"""Alembic environment: Soko runs migrations programmatically (``Database.migrate``) on a given connection."""

from alembic import context

from soko.meta.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run Soko migrations through `soko migrate` or Database.migrate(), not the alembic CLI")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
