"""Migrated metadata databases for tests, without running every migration for every test.

Each metadata test starts on a freshly migrated database, on SQLite and on PostgreSQL. Running the migrations for
each test was most of the suite's time (creating some 60 tables costs PostgreSQL one to several seconds), so
:func:`migrated` gives a test's new, empty database the migrated state another way:

* SQLite: the migrations run once per test process into a template file; each test's file starts as its copy;
* PostgreSQL: when a test is done with a schema it got here, the schema is emptied back to what the migrations
  leave (their rows, sequences reset) and renamed for the next test, provided its tables, columns, constraints,
  indexes, triggers and functions are still exactly what the migrations made (a test that changed them, e.g. by
  downgrading, gets its schema dropped as before). The first test of a process migrates with ``Database.migrate``.

A database that is not new and empty is migrated with ``Database.migrate``, as are the migration tests' own.
"""

from __future__ import annotations

import atexit
import os
import tempfile
import threading
import uuid
from dataclasses import dataclass

import sqlalchemy as sa

from soko.meta import Database
from soko.private import FILE_MODE

POOL_SIZE = 4  # recycled PostgreSQL schemas kept per test process (a test rarely holds more than two at once)

_lock = threading.Lock()
_sqlite_template: bytes | None = None


def migrated(url: str) -> None:
    """Bring the database at ``url`` (new and empty, as ``tests.databases.fresh_database`` makes them) to the
    newest schema, exactly as ``Database.migrate`` leaves it."""
    if url.startswith("sqlite") and _copy_sqlite_template(url):
        return
    schema = _fresh_schemas.get(url)
    if schema is not None and _pg.hand_out(schema):
        return
    empty = schema is not None and _pg.is_empty(schema)
    db = Database(url, pool_size=1)
    try:
        db.migrate()
    finally:
        db.dispose()
    if empty:  # migrated from nothing: what the migrations leave, a template for the next tests
        _pg.adopt(schema)


def close() -> None:
    """Drop the recycled schemas no test took (at the end of the test session)."""
    _pg.close()


# ---- SQLite ------------------------------------------------------------------------------------------------------
def _copy_sqlite_template(url: str) -> bool:
    path = sa.engine.make_url(url).database
    if not path or path == ":memory:" or os.path.exists(path + "-wal"):
        return False
    if os.path.exists(path) and os.path.getsize(path):
        return False
    template = _sqlite_template_bytes()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)  # private, as Database creates it
    with os.fdopen(fd, "wb") as out:
        out.write(template)
    return True


def _sqlite_template_bytes() -> bytes:
    global _sqlite_template
    with _lock:
        if _sqlite_template is None:
            with tempfile.TemporaryDirectory(prefix="soko-template-") as tmp:
                path = os.path.join(tmp, "metadata.db")
                db = Database(f"sqlite:///{path}", pool_size=1)
                db.migrate()
                with db.engine.connect() as conn:  # everything into the database file itself
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                db.dispose()
                with open(path, "rb") as f:
                    _sqlite_template = f.read()
        return _sqlite_template


# ---- PostgreSQL --------------------------------------------------------------------------------------------------
#: schema name → the admin URL, for the schemas tests.databases.fresh_database made and has not dropped yet
_fresh_schemas: dict[str, str] = {}
_admin_urls: dict[str, str] = {}  # schema → the server's admin URL


def register_fresh(url: str, schema: str, admin_url: str) -> None:
    """fresh_database made ``schema`` (empty), reached through ``url``."""
    with _lock:
        _fresh_schemas[url] = schema
        _admin_urls[schema] = admin_url


def release(url: str, schema: str) -> bool:
    """fresh_database is done with ``schema``: True when it was recycled (else the caller drops it)."""
    with _lock:
        _fresh_schemas.pop(url, None)
        admin_url = _admin_urls.pop(schema)
    return _pg.recycle(schema, admin_url)


# The shape of a schema: tables, columns, constraints, indexes, triggers, functions (with its name taken out).
_SHAPE = sa.text("""
SELECT 'rel ' || c.relname || ' ' || c.relkind::text FROM pg_class c WHERE c.relnamespace = to_regnamespace(:s)
UNION ALL
SELECT 'col ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' '
       || a.attnotnull::text || ' ' || a.attidentity::text || a.attgenerated::text || ' '
       || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE c.relnamespace = to_regnamespace(:s) AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'cols ' || c.relname || ' ' || string_agg(a.attname, ',' ORDER BY a.attnum)
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
 WHERE c.relnamespace = to_regnamespace(:s) AND a.attnum > 0 AND NOT a.attisdropped GROUP BY c.relname
UNION ALL
SELECT 'con ' || c.relname || ' ' || k.conname || ' ' || pg_get_constraintdef(k.oid)
  FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid WHERE c.relnamespace = to_regnamespace(:s)
UNION ALL
SELECT 'idx ' || pg_get_indexdef(i.indexrelid)
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relnamespace = to_regnamespace(:s)
UNION ALL
SELECT 'trg ' || c.relname || ' ' || pg_get_triggerdef(t.oid)
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
 WHERE c.relnamespace = to_regnamespace(:s) AND NOT t.tgisinternal
UNION ALL
SELECT 'fn ' || pg_get_functiondef(p.oid) FROM pg_proc p WHERE p.pronamespace = to_regnamespace(:s)
""")
_TABLES = sa.text("SELECT c.relname FROM pg_class c WHERE c.relnamespace = to_regnamespace(:s) AND c.relkind = 'r'")
_SEQUENCES = sa.text("SELECT c.relname FROM pg_class c WHERE c.relnamespace = to_regnamespace(:s) AND c.relkind = 'S'")
_FOREIGN_KEYS = sa.text("""
SELECT c.relname, r.relname FROM pg_constraint k
  JOIN pg_class c ON c.oid = k.conrelid JOIN pg_class r ON r.oid = k.confrelid
 WHERE k.contype = 'f' AND c.relnamespace = to_regnamespace(:s)
""")
_OBJECTS = sa.text("SELECT count(*) FROM pg_class c WHERE c.relnamespace = to_regnamespace(:s)")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _shape(conn: sa.Connection, schema: str) -> list[str]:
    rows = [row[0] for row in conn.execute(_SHAPE, {"s": schema})]
    return sorted(row.replace(f"{_q(schema)}.", "").replace(f"{schema}.", "") for row in rows)


@dataclass
class _Template:
    shape: list[str]
    delete_order: list[str]  # every table, each before the tables it references
    rows: dict[str, list[str]]  # table → its rows as the migrations left them (row_to_json)
    sequences: dict[str, tuple[int, bool]]  # sequence → (last_value, is_called)


def _delete_order(tables: list[str], references: list[tuple[str, str]]) -> list[str] | None:
    """Tables ordered so that each comes before the ones it references (None: a cycle)."""
    pending = {table: {ref for src, ref in references if src == table and ref != table} for table in tables}
    order: list[str] = []
    while pending:
        # a table no remaining table references can go now
        free = sorted(t for t in pending if not any(t in refs for other, refs in pending.items() if other != t))
        if not free:
            return None
        for table in free:
            order.append(table)
            del pending[table]
    return order


class _SchemaPool:
    def __init__(self) -> None:
        self.template: _Template | None = None
        self.disabled = False
        self.ours: set[str] = set()  # schemas handed out migrated (recycled or migrated here)
        self.ready: list[tuple[str, str]] = []  # (schema, admin URL) recycled, waiting for a test
        self.engines: dict[str, sa.Engine] = {}
        atexit.register(self.close)

    def engine(self, admin_url: str) -> sa.Engine:
        with _lock:
            if admin_url not in self.engines:
                self.engines[admin_url] = sa.create_engine(admin_url, pool_size=1, max_overflow=2)
            return self.engines[admin_url]

    def is_empty(self, schema: str) -> bool:
        admin_url = _admin_urls.get(schema)
        if admin_url is None:
            return False
        with self.engine(admin_url).connect() as conn:
            return not conn.execute(_OBJECTS, {"s": schema}).scalar()

    def adopt(self, schema: str | None) -> None:
        """``schema`` was just migrated from nothing for a test: the first one becomes the template (before the test
        touches it)."""
        admin_url = _admin_urls.get(schema or "")
        if schema is None or admin_url is None or self.disabled:
            return
        if self.template is None:
            with self.engine(admin_url).begin() as conn:
                self.template = self._capture(conn, schema)
            if self.template is None:
                self.disabled = True
                return
        self.ours.add(schema)

    def _capture(self, conn: sa.Connection, schema: str) -> _Template | None:
        tables = sorted(row[0] for row in conn.execute(_TABLES, {"s": schema}))
        order = _delete_order(tables, [tuple(row) for row in conn.execute(_FOREIGN_KEYS, {"s": schema})])
        if order is None:
            return None
        rows = {}
        for table in tables:
            found = [r[0] for r in conn.exec_driver_sql(f"SELECT row_to_json(t)::text FROM {_q(schema)}.{_q(table)} t")]
            if found:
                rows[table] = found
        sequences = {}
        for (name,) in conn.execute(_SEQUENCES, {"s": schema}):
            last, called = conn.exec_driver_sql(f"SELECT last_value, is_called FROM {_q(schema)}.{_q(name)}").one()
            sequences[name] = (int(last), bool(called))
        return _Template(_shape(conn, schema), order, rows, sequences)

    def hand_out(self, schema: str) -> bool:
        """Replace the new, empty ``schema`` with a recycled one under its name (False: none, or not empty)."""
        with _lock:
            if not self.ready:
                return False
            recycled, admin_url = self.ready.pop()
        if _admin_urls.get(schema) != admin_url:
            self._drop(recycled, admin_url)
            return False
        try:
            with self.engine(admin_url).begin() as conn:
                if conn.execute(_OBJECTS, {"s": schema}).scalar():
                    raise RuntimeError("not empty")
                conn.exec_driver_sql(f"DROP SCHEMA {_q(schema)}")
                conn.exec_driver_sql(f"ALTER SCHEMA {_q(recycled)} RENAME TO {_q(schema)}")
        except (sa.exc.SQLAlchemyError, RuntimeError):
            self._drop(recycled, admin_url)
            return False
        self.ours.add(schema)
        return True

    def recycle(self, schema: str, admin_url: str) -> bool:
        if schema not in self.ours or self.template is None:
            return False
        self.ours.discard(schema)
        with _lock:
            if len(self.ready) >= POOL_SIZE:
                return False
        template = self.template
        name = f"{schema.split('_', 1)[0]}_{uuid.uuid4().hex[:16]}"
        try:
            with self.engine(admin_url).begin() as conn:
                conn.exec_driver_sql("SET LOCAL lock_timeout = '5s'")  # a connection the test left in a transaction
                if _shape(conn, schema) != template.shape:
                    return False
                s = _q(schema)
                conn.exec_driver_sql("".join(f"DELETE FROM {s}.{_q(t)};" for t in template.delete_order))
                for table in reversed(template.delete_order):  # a table before the tables referencing it
                    for row in template.rows.get(table, []):
                        conn.exec_driver_sql(
                            f"INSERT INTO {s}.{_q(table)} OVERRIDING SYSTEM VALUE "
                            f"SELECT * FROM json_populate_record(NULL::{s}.{_q(table)}, %(row)s::json)",
                            {"row": row},
                        )
                for sequence, (last, called) in template.sequences.items():
                    conn.execute(sa.text("SELECT setval(:seq, :last, :called)"),
                                 {"seq": f"{s}.{_q(sequence)}", "last": last, "called": called})
                conn.exec_driver_sql(f"ALTER SCHEMA {s} RENAME TO {_q(name)}")
        except sa.exc.SQLAlchemyError:
            return False
        with _lock:
            self.ready.append((name, admin_url))
        return True

    def _drop(self, schema: str, admin_url: str) -> None:
        with self.engine(admin_url).begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {_q(schema)} CASCADE")

    def close(self) -> None:
        with _lock:
            ready, self.ready = self.ready, []
        for schema, admin_url in ready:
            try:
                self._drop(schema, admin_url)
            except sa.exc.SQLAlchemyError:
                pass
        for engine in self.engines.values():
            engine.dispose()


_pg = _SchemaPool()
