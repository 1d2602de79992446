"""The generation counter's PostgreSQL listener: a notification that has reached the socket is honoured by the next
read even before the listener thread has counted it, and a writer can wait for its own notification to come back."""

from __future__ import annotations

import contextlib
import select
import time
from collections.abc import Iterator

import psycopg
import pytest

from soko.meta.changes import CHANNEL, EVENTS_CHANNEL, Generation, PostgresListener
from tests.conftest import _pg_available
from tests.databases import PG_URL

needs_pg = pytest.mark.skipif(not _pg_available(), reason="needs PostgreSQL on 127.0.0.1:5432")
DSN = PG_URL.replace("postgresql+psycopg://", "postgresql://")


@needs_pg
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



@needs_pg
def test_a_socket_past_select_s_1024_descriptors_is_checked_too(tmp_path) -> None:
    """A busy node holds more than FD_SETSIZE descriptors, so the LISTEN socket may be one of them: select() raised
    ValueError there, and every cached read (an IAM credential check, say) became a 500."""
    import os
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    high = 1500
    if hard != resource.RLIM_INFINITY and hard <= high:
        pytest.skip(f"the descriptor limit ({hard}) is too low to hold a descriptor past 1024")
    if soft != resource.RLIM_INFINITY and soft <= high:
        resource.setrlimit(resource.RLIMIT_NOFILE, (high + 1, hard))
    generation = Generation(str(tmp_path / "generation"))
    listener = PostgresListener(DSN, generation)
    with psycopg.connect(DSN, autocommit=True) as listening, psycopg.connect(DSN, autocommit=True) as writer:
        listening.execute(f"LISTEN {CHANNEL}_test_high")
        os.dup2(listening.fileno(), high)
        try:
            listener._fd = high
            before = generation.current()
            assert generation.current() == before
            writer.execute(f"NOTIFY {CHANNEL}_test_high")
            deadline = time.monotonic() + 5
            while generation.current() == before and time.monotonic() < deadline:
                time.sleep(0.01)
            assert generation.current() > before
        finally:
            os.close(high)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextlib.contextmanager
def listening(tmp_path) -> Iterator[tuple[Generation, PostgresListener]]:
    """A started listener, once it is connected."""
    generation = Generation(str(tmp_path / "generation"))
    listener = PostgresListener(DSN, generation)
    listener.start()
    try:
        deadline = time.monotonic() + 10
        while listener._fd is None and time.monotonic() < deadline:
            time.sleep(0.01)
        yield generation, listener
    finally:
        listener.stop()
        listener.join(5)


@needs_pg
def test_a_writer_waits_until_its_notification_has_come_back(tmp_path) -> None:
    with listening(tmp_path) as (_, listener):
        payload = listener.expect()
        with psycopg.connect(DSN, autocommit=True) as writer:
            writer.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
        assert listener.delivered(payload)
        assert payload not in listener._awaited
        other = listener.expect()
        listener.forget(other)  # a rolled-back write never notifies: nothing is left waiting
        assert listener.delivered(other)


def test_the_events_generation_wakes_waiters_in_this_process_and_others_on_the_host(tmp_path) -> None:
    """Another process's bump reaches this one through the shared file; the cache generation does not move."""
    here, there = Generation(str(tmp_path / "generation")), Generation(str(tmp_path / "generation"))
    seen, cache = here.events(), here.current()
    assert not here.wait_events(seen, 0.05)
    there.bump_events()  # as another process on this host would
    assert here.wait_events(seen, 10) and here.events() == seen + 1 and here.current() == cache


@needs_pg
def test_another_nodes_events_notification_moves_the_events_generation(tmp_path) -> None:
    with listening(tmp_path) as (generation, _):
        seen = generation.events()
        with psycopg.connect(DSN, autocommit=True) as writer:
            writer.execute(f"NOTIFY {EVENTS_CHANNEL}")
        assert generation.wait_events(seen, 10)
