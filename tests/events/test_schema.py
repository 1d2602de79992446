"""Migration 0020 creates exactly the event-target tables the schema declares, and goes down and up again, on both
databases; the outbox retention keeps what an enabled target has yet to pass."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

from soko.meta.db import _MIGRATIONS
from soko.meta.schema import event_outbox, metadata
from soko.registry import outbox
from soko.registry.models import RepoRef
from tests.metering.test_schema import _tables

TABLES = {"event_targets", "event_dead_letters"}


def test_the_migrated_schema_matches_the_declared_tables_and_goes_down_and_up(registry) -> None:
    engine = registry.ctx.db.engine
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert not (_tables(diff) & TABLES), [d for d in diff if _tables([d]) & TABLES]
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0019")
    with engine.connect() as conn:
        assert not TABLES & set(sa.inspect(conn).get_table_names())
    registry.ctx.db.migrate()
    with engine.connect() as conn:
        assert set(sa.inspect(conn).get_table_names()) >= TABLES


def test_retention_never_prunes_what_an_enabled_target_has_yet_to_pass(registry) -> None:
    from soko.events import Targets

    targets = Targets(registry.ctx)
    targets.create("000000000000", "hook", "https://hooks.example.com/")
    clock = [registry.ctx.clock()]
    registry.ctx.clock = lambda: clock[0]
    for i in range(3):
        registry.repositories.create(RepoRef("000000000000", f"events/r{i}"))
    clock[0] += 30 * 86400
    assert outbox.prune(registry.ctx, 86400) == 0  # all three still to go to the target
    targets.update("000000000000", "hook", enabled=False)
    assert outbox.prune(registry.ctx, 86400) == 3  # a disabled target holds nothing back
    with registry.ctx.db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(event_outbox)).scalar() == 0
