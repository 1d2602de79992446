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

        def gc_runs() -> tuple[int, float]:
            """The job's run count and its last run's start (written by whichever process ran it)."""
            with engine.connect() as conn:
                row = conn.execute(
                    sa.select(jobs.c.runs, jobs.c.last_run_at).where(jobs.c.kind == "gc_review")
                ).first()
            return (row.runs, row.last_run_at) if row is not None and row.last_run_at is not None else (0, 0.0)

        try:
            # Both serve now. Wait for a first run, then for RUNS more (the deadline only guards against a hang).
            deadline = time.monotonic() + 60
            first = gc_runs()
            while first[0] == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
                first = gc_runs()
            last = first
            while last[0] - first[0] < RUNS and time.monotonic() < deadline:
                time.sleep(0.05)
                last = gc_runs()
        finally:
            engine.dispose()
            for server in servers:
                server.stop()
        logs = "".join((tmp_path / f"{name}.log").read_text() for name in "ab")
        runs = last[0] - first[0]
        assert runs >= RUNS, logs[-3000:]
        # Each run starts at least an interval after the previous one's start, whichever process runs it (a job is
        # due at ``started + interval``; both read one host clock). So the recorded starts of the first and last
        # run are at least ``runs`` intervals apart, however slow the machine: no wall-time window to guess. Two
        # processes each on its own schedule, as before the job table, would have started about twice as often.
        assert last[1] - first[1] >= runs * INTERVAL - 1e-6, (runs, last[1] - first[1])
        assert "Traceback" not in logs, logs[-3000:]
