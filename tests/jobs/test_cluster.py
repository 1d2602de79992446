"""Two ``soko serve`` processes on one PostgreSQL database run each periodic job once per interval between them."""

from __future__ import annotations

import base64
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from soko.meta.schema import jobs
from tests.conftest import _PG, ROOT_KEY_ID, ROOT_SECRET
from tests.databases import fresh_database
from tests.e2e.servers import start_soko

pytestmark = pytest.mark.xdist_group("cluster")
INTERVAL = 1.0
RUNS = 5


@pytest.mark.skipif(not _PG, reason="needs PostgreSQL")
def test_two_processes_run_gc_once_per_interval(tmp_path) -> None:
    with fresh_database("postgresql", str(tmp_path)) as url:
        env = {
            "SOKO_DATABASE_URL": url,
            "SOKO_GC_INTERVAL": "1s",
            "SOKO_LIFECYCLE_INTERVAL": "0",
            "SOKO_METERING_INTERVAL": "0",
        }
        env |= {  # two nodes: their own data dirs, one master key and root key
            "SOKO_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
            "SOKO_ROOT_ACCESS_KEY_ID": ROOT_KEY_ID,
            "SOKO_ROOT_SECRET_ACCESS_KEY": ROOT_SECRET,
        }
        with ThreadPoolExecutor(2) as pool:  # start both at once (start-up is most of this test's time)
            starting = [pool.submit(start_soko, tmp_path / n, env=env, log_path=tmp_path / f"{n}.log") for n in "ab"]
        servers = [f.result() for f in starting]
        engine = sa.create_engine(url)

        def gc_runs() -> int:
            with engine.connect() as conn:
                return conn.execute(sa.select(jobs.c.runs).where(jobs.c.kind == "gc")).scalar() or 0

        try:
            # Both serve now: count the runs completed in a window measured from here.
            first, began = gc_runs(), time.monotonic()
            runs, deadline = 0, began + 12
            while runs < RUNS and time.monotonic() < deadline:
                time.sleep(0.1)
                runs = gc_runs() - first
            window = time.monotonic() - began
        finally:
            engine.dispose()
            for server in servers:
                server.stop()
        logs = "".join((tmp_path / f"{name}.log").read_text() for name in "ab")
        assert runs >= RUNS, logs[-3000:]
        # Runs start at least an interval apart whoever runs them, so a window holds at most window/interval + 1
        # starts (+ 1 for a run that started just before it). Two processes each on its own clock, as before the
        # job table, would have reached RUNS in about half the time, far over this bound.
        assert runs <= window / INTERVAL + 2, (runs, window)
        assert "Traceback" not in logs, logs[-3000:]
