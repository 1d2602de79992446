"""Engine set-up, transactions and migrations for SQLite (embedded) and PostgreSQL (scale-out).

Every state change is one transaction through ``Database.write()``. On SQLite a write transaction starts with
``BEGIN IMMEDIATE`` so concurrent writers (threads or processes) queue on the lock instead of failing mid-way;
readers use WAL snapshots and never block writers.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy.dialects import postgresql, sqlite

from soko import private

_MIGRATIONS = Path(__file__).parent / "migrations"
T = TypeVar("T")


SQLITE_POOL = 32


class Database:
    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = sa.engine.make_url(url).database
            if path and path != ":memory:" and os.path.isdir(os.path.dirname(os.path.abspath(path))):
                private.create_file(path)  # SQLite gives its -wal and -shm files the database file's mode
            # As many pooled connections as threads that read at once (the server's 32 I/O threads): beyond its
            # pool (5 by default) SQLAlchemy opened and closed a connection per read, PRAGMAs included, which under
            # concurrent pulls cost more than the reads themselves.
            self.engine = sa.create_engine(
                url,
                connect_args={"timeout": 30, "check_same_thread": False},
                pool_size=SQLITE_POOL,
                max_overflow=SQLITE_POOL,
            )
            sa.event.listen(self.engine, "connect", _sqlite_on_connect)
            sa.event.listen(self.engine, "begin", _sqlite_on_begin)
        else:
            self.engine = sa.create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
        self._write = self.engine.execution_options(soko_write=True)

    @contextlib.contextmanager
    def read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextlib.contextmanager
    def write(self) -> Iterator[sa.Connection]:
        with self._write.connect() as conn, conn.begin():
            yield conn

    def serialize(self, conn: sa.Connection, key: str) -> None:
        """On PostgreSQL, one transaction at a time holding ``key``, to its commit (a transaction-scoped advisory
        lock); SQLite's writers are serial already."""
        if not self.is_sqlite:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": key})

    def insert_ignore(self, table: sa.Table, **conflict_none: object) -> sa.Insert:
        """INSERT … ON CONFLICT DO NOTHING, in this database's dialect."""
        dialect = sqlite if self.is_sqlite else postgresql
        return dialect.insert(table).on_conflict_do_nothing()

    def upsert(self, table: sa.Table, index_elements: list[str], update: dict[str, object]) -> sa.Insert:
        dialect = sqlite if self.is_sqlite else postgresql
        stmt = dialect.insert(table)
        return stmt.on_conflict_do_update(
            index_elements=index_elements, set_={k: stmt.excluded[k] if v is None else v for k, v in update.items()}
        )

    def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent; safe to run from several nodes on PostgreSQL)."""
        with self.engine.begin() as conn:
            if not self.is_sqlite:
                # Serialise concurrent migrators (several nodes starting at once).
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(7263514)"))
            command.upgrade(alembic_config(conn), "head")

    def schema_revision(self) -> str | None:
        """The migration the database's schema is at (None: never migrated)."""
        with self.read() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()

    @staticmethod
    def head_revision() -> str | None:
        """The newest migration this code knows."""
        return _head_revision()

    def bytewise(self, column: sa.ColumnElement) -> sa.ColumnElement:
        """``column`` compared and sorted byte by byte (OCI pagination order) whatever the database's collation."""
        return column if self.is_sqlite else column.collate("C")

    def psycopg_dsn(self) -> str:
        """This database as a plain libpq URL (for psycopg connections outside SQLAlchemy, e.g. LISTEN)."""
        return self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(conn: sa.Connection) -> AlembicConfig:
    """Alembic's configuration for running Soko's migrations on ``conn``."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


@functools.cache
def _head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(_MIGRATIONS)).get_current_head()


def _sqlite_on_connect(dbapi_conn, _record) -> None:
    # Let SQLAlchemy's "begin" event decide how transactions start (pysqlite would otherwise BEGIN lazily).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")  # an acknowledged push survives power loss
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_on_begin(conn: sa.Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("soko_write") else "BEGIN")


def retry_on_deadlock(fn: Callable[[], T], attempts: int = 5) -> T:
    """Run a whole transaction again when PostgreSQL aborts it as a deadlock victim (SQLSTATE 40P01)."""
    for attempt in range(attempts):
        try:
            return fn()
        except sa.exc.OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) != "40P01" or attempt == attempts - 1:
                raise
            time.sleep(0.01 * (attempt + 1) * (1 + random.random()))
    raise AssertionError("unreachable")
