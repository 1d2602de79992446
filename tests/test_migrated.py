"""The tests' migrated databases (tests/migrated.py) are exactly what ``Database.migrate`` leaves: a SQLite copy of
the template, and a PostgreSQL schema recycled after a test wrote to every kind of table."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

from soko.iam.service import Identity
from soko.meta import Database
from soko.registry.models import RepoRef
from tests import migrated as pool
from tests.conftest import _PG, make_settings, open_registry
from tests.databases import fresh_database
from tests.domain import push_image
from tests.migrated import migrated


def _sqlite_dump(path: str) -> dict[str, list]:
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        schema = sorted(conn.exec_driver_sql("SELECT type, name, tbl_name, sql FROM sqlite_master").all())
        dump: dict[str, list] = {"schema": schema}
        for kind, name, _, _ in schema:
            if kind == "table" and not name.startswith("sqlite_"):
                dump[name] = sorted(conn.exec_driver_sql(f'SELECT * FROM "{name}"').all())
        dump["pragmas"] = [conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in ("journal_mode", "user_version")]
    engine.dispose()
    return dump


def test_a_sqlite_database_starts_as_a_copy_of_what_the_migrations_leave(tmp_path) -> None:
    copied = str(tmp_path / "copied.db")
    migrated(f"sqlite:///{copied}")
    assert os.stat(copied).st_mode & 0o777 == 0o600  # private, as Database creates it
    by_alembic = Database(f"sqlite:///{tmp_path / 'migrated.db'}")
    by_alembic.migrate()
    by_alembic.dispose()
    assert _sqlite_dump(copied) == _sqlite_dump(str(tmp_path / "migrated.db"))


def _pg_dump(url: str) -> dict[str, object]:
    schema = url.rsplit("%3D", 1)[1]
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        dump: dict[str, object] = {"shape": pool._shape(conn, schema)}
        for (table,) in conn.execute(pool._TABLES, {"s": schema}):
            dump[table] = sorted(r[0] for r in conn.exec_driver_sql(f'SELECT row_to_json(t)::text FROM "{table}" t'))
        for (sequence,) in conn.execute(pool._SEQUENCES, {"s": schema}):
            dump[sequence] = conn.exec_driver_sql(f'SELECT last_value, is_called FROM "{sequence}"').one()
    engine.dispose()
    return dump


def test_a_recycled_postgresql_schema_is_what_the_migrations_leave(tmp_path) -> None:
    if not _PG:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("PostgreSQL not reachable")
    pool.close()  # schemas earlier tests left for recycling: the only one must be this test's (the pool is small)
    with fresh_database("postgresql", str(tmp_path)) as used:
        registry = open_registry(make_settings(str(tmp_path / "used"), used))
        try:  # rows in many tables, sequences moved on
            Identity(registry.ctx).bootstrap_root()
            ref = RepoRef("000000000000", "recycle/app")
            registry.repositories.create(ref)
            push_image(registry, ref, "v1", [b"layer one", b"layer two"])
        finally:
            registry.close()
        written = _pg_dump(used)
    assert len(pool._pg.ready) == 1, "the used schema was not recycled"
    with fresh_database("postgresql", str(tmp_path)) as reused, fresh_database("postgresql", str(tmp_path)) as fresh:
        migrated(reused)
        assert pool._pg.ready == []  # it got the recycled schema
        db = Database(fresh, pool_size=1)
        db.migrate()
        db.dispose()
        expected = _pg_dump(fresh)
        assert written != expected
        assert _pg_dump(reused) == expected
