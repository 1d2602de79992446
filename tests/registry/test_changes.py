"""The generation counter's PostgreSQL listener: a notification that has reached the socket is honoured by the next
read even before the listener thread has counted it, and a writer can wait for its own notification to come back."""

from __future__ import annotations

import select
import time

import psycopg
import pytest

from soko.meta.changes import CHANNEL, Generation, PostgresListener
from tests.conftest import _pg_available
from tests.databases import PG_URL

pytestmark = pytest.mark.skipif(not _pg_available(), reason="needs PostgreSQL on 127.0.0.1:5432")
DSN = PG_URL.replace("postgresql+psycopg://", "postgresql://")


def test_a_waiting_notification_moves_the_generation_on_the_next_read(tmp_path) -> None:
    generation = Generation(str(tmp_path / "generation"))
    listener = PostgresListener(DSN, generation)  # not started: its thread never gets to count anything
    assert generation.current() != generation.current()  # not listening yet: nothing cached is trusted
    with psycopg.connect(DSN, autocommit=True) as listening, psycopg.connect(DSN, autocommit=True) as writer:
        listening.execute(f"LISTEN {CHANNEL}_test_sync")
        listener._fd = listening.fileno()
        before = generation.current()
        assert generation.current() == before  # nothing waiting: the cache stays valid
        writer.execute(f"NOTIFY {CHANNEL}_test_sync")
        select.select([listening.fileno()], [], [], 5)
        assert generation.current() > before


def test_a_writer_waits_until_its_notification_has_come_back(tmp_path) -> None:
    generation = Generation(str(tmp_path / "generation"))
    listener = PostgresListener(DSN, generation)
    listener.start()
    try:
        deadline = time.monotonic() + 10
        while listener._fd is None and time.monotonic() < deadline:
            time.sleep(0.01)
        payload = listener.expect()
        with psycopg.connect(DSN, autocommit=True) as writer:
            writer.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
        assert listener.delivered(payload)
        assert payload not in listener._awaited
        other = listener.expect()
        listener.forget(other)  # a rolled-back write never notifies: nothing is left waiting
        assert listener.delivered(other)
    finally:
        listener.stop()
        listener.join(5)
