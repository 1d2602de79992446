"""Fresh, empty metadata databases for tests and benches: a SQLite file, or a new PostgreSQL schema dropped after."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import sqlalchemy as sa

from tests import migrated

PG_URL = os.environ.get("SOKO_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@contextlib.contextmanager
def fresh_database(kind: str, workdir: str, pg_url: str = PG_URL, prefix: str = "t") -> Iterator[str]:
    """Yield a database URL: ``sqlite`` → a file in ``workdir``; ``postgresql`` → a schema of its own."""
    if kind == "sqlite":
        yield f"sqlite:///{os.path.join(workdir, 'metadata.db')}"
        return
    schema = f"{prefix}_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in pg_url else "?"
    url = f"{pg_url}{sep}options=-csearch_path%3D{schema}"
    migrated.register_fresh(url, schema, pg_url)
    try:
        yield url
    finally:
        if not migrated.release(url, schema):  # else recycled for the next test (tests/migrated.py)
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
