"""Shared fixtures: every metadata test runs on SQLite and on the local PostgreSQL (a fresh schema per test)."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from soko.config import Settings, load_settings
from soko.meta import Database
from soko.registry import Registry
from soko.storage import FilesystemDriver

PG_URL = os.environ.get("SOKO_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _pg_available() -> bool:
    try:
        engine = sa.create_engine(PG_URL)
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


_PG = _pg_available()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'metadata.db'}"
        return
    if not _PG:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {PG_URL}; CI must run every metadata test on it")
        pytest.skip("PostgreSQL not reachable")
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def settings(tmp_path, database_url) -> Settings:
    return load_settings(overrides={"data_dir": str(tmp_path / "data"), "database_url": database_url}, env={})


@pytest.fixture
def registry(settings) -> Iterator[Registry]:
    os.makedirs(settings.data_dir, exist_ok=True)
    db = Database(settings.effective_database_url, pool_size=4)
    db.migrate()
    reg = Registry(settings, db, FilesystemDriver(settings.blob_root))
    yield reg
    reg.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    url: str
    host: str
    registry: Registry


@pytest.fixture
def server(registry, settings) -> Iterator[RunningServer]:
    """The real aiohttp application on a real port, in a background thread, in this process."""
    from aiohttp import web

    from soko.app import build_app

    port = free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner_box: dict = {}

    async def start() -> None:
        runner = web.AppRunner(build_app(settings, registry), access_log=None, shutdown_timeout=5)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runner_box["runner"] = runner

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(15), "server did not start"
    yield RunningServer(f"http://127.0.0.1:{port}", f"127.0.0.1:{port}", registry)
    asyncio.run_coroutine_threadsafe(runner_box["runner"].cleanup(), loop).result(15)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


@pytest.fixture
def client(server):
    import httpx

    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c
