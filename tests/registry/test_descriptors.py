"""A registry runs for months, and a test process opens thousands of them: what opening, serving and closing
takes in descriptors it gives back. Each test repeats an operation and compares this process's open descriptors."""

from __future__ import annotations

import os

import pytest

from soko.meta.changes import Generation, PostgresListener
from soko.registry import Registry
from soko.registry.models import RepoRef
from tests.conftest import _pg_available
from tests.databases import PG_URL

ROUNDS = 5


def open_descriptors() -> list[str]:
    """This process's open descriptors, as what they point at (``socket:[…]``, ``pipe:[…]``, paths)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            found.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the listing's own descriptor, closed by now
            pass
    return sorted(found)


def test_a_closed_registry_keeps_no_descriptor(settings) -> None:
    Registry.open(settings).close()  # the first opening's lasting state (imports, the migrated schema)
    before = open_descriptors()
    for round in range(ROUNDS):
        registry = Registry.open(settings)
        registry.repositories.create(RepoRef("000000000000", f"repo-{round}"))
        registry.close()
    assert open_descriptors() == before


@pytest.mark.skipif(not _pg_available(), reason="needs PostgreSQL on 127.0.0.1:5432")
def test_a_stopped_change_listener_has_closed_its_connection(tmp_path) -> None:
    """stop() returns once the thread has let go of its LISTEN connection (and of the generation it bumps)."""
    dsn = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    generation = Generation(str(tmp_path / "generation"))
    before = open_descriptors()
    for _ in range(ROUNDS):
        listener = PostgresListener(dsn, generation)
        listener.start()
        listener.stop()
        assert not listener.is_alive()
        assert open_descriptors() == before
    generation.close()
