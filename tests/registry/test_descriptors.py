"""A registry runs for months, and a test process opens thousands of them: what opening, serving and closing
takes in descriptors it gives back. Each test repeats an operation and compares this process's open descriptors."""

from __future__ import annotations

import os
from collections import Counter

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


def postgres_sockets() -> set[str]:
    """This process's connections to PostgreSQL (remote port 5432), as ``socket:[inode]``."""
    found = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == 5432:  # the remote port
                    found.add(f"socket:[{fields[9]}]")
    return found


def registry_descriptors(root: str) -> Counter[str]:
    """This process's open descriptors a registry or a change listener could have opened, as what they point at:
    files under ``root`` (the test's own), PostgreSQL connections and pipes. Not the whole process's: in a test
    worker, what earlier tests left to the garbage collector or to the page cache's budget closes at any moment."""
    postgres = postgres_sockets()
    return Counter(
        target
        for target in open_descriptors()
        if target.startswith(root) or target in postgres or target.startswith("pipe:")
    )


def opened_since(before: Counter[str], root: str) -> Counter[str]:
    return registry_descriptors(root) - before


def test_a_closed_registry_keeps_no_descriptor(settings) -> None:
    Registry.open(settings).close()  # the first opening's lasting state (imports, the migrated schema)
    root = os.path.abspath(settings.data_dir)
    before = registry_descriptors(root)
    for round in range(ROUNDS):
        registry = Registry.open(settings)
        registry.repositories.create(RepoRef("000000000000", f"repo-{round}"))
        registry.close()
    assert not opened_since(before, root)


@pytest.mark.skipif(not _pg_available(), reason="needs PostgreSQL on 127.0.0.1:5432")
def test_a_stopped_change_listener_has_closed_its_connection(tmp_path) -> None:
    """stop() returns once the thread has let go of its LISTEN connection (and of the generation it bumps)."""
    dsn = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    generation = Generation(str(tmp_path / "generation"))
    root = str(tmp_path)
    before = registry_descriptors(root)
    for _ in range(ROUNDS):
        listener = PostgresListener(dsn, generation)
        listener.start()
        listener.stop()
        assert not listener.is_alive()
        assert not opened_since(before, root)
    generation.close()
