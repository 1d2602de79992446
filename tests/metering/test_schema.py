"""Migration 0005 creates exactly the metering tables the schema declares (both databases)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from soko.meta.schema import metadata

TABLES = {"usage_samples", "transfer_usage"}


def _tables(diff) -> set[str]:
    names = set()
    for entry in diff:
        for item in entry if isinstance(entry, list) else [entry]:
            for part in item[1:]:
                name = getattr(part, "name", None) if not isinstance(part, str) else part
                table = getattr(part, "table", None)
                names.add(getattr(table, "name", None) or name)
    return names


def test_the_migrated_schema_matches_the_declared_tables(registry) -> None:
    with registry.ctx.db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert not (_tables(diff) & TABLES), [d for d in diff if _tables([d]) & TABLES]
