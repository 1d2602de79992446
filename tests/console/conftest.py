"""One server and one database per test module: the console tests only add rows (repositories, users, images under
names of their own), so they share a server instead of paying for a fresh database and server per test — the
PostgreSQL schema, migrations and the server start were most of the suite's time. A test that needs a server of its
own (other settings, a clock or limiter it changes for good) builds one with ``tests.conftest.serve``."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.conftest import _PG, RunningServer, make_settings, open_registry, serve
from tests.databases import fresh_database


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database_kind(request) -> str:
    """The database the module's shared server runs on (a module may narrow the list, as test_browser does)."""
    return request.param


@pytest.fixture(scope="module")
def server(database_kind, tmp_path_factory) -> Iterator[RunningServer]:
    """The module's server (the real application and HTTP engine on a real port, in a background thread)."""
    if database_kind == "postgresql" and not _PG:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not reachable; CI must run every metadata test on it")
        pytest.skip("PostgreSQL not reachable")
    tmp = tmp_path_factory.mktemp("console")
    with fresh_database(database_kind, str(tmp)) as url:
        registry = open_registry(make_settings(str(tmp / "data"), url))
        registry.settings.event_target_allow_cidrs = ["127.0.0.1/32"]  # webhook receivers of the tests: loopback
        try:
            with serve(registry.settings, registry) as running:
                yield running
        finally:
            registry.close()
