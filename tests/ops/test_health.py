"""/healthz and /readyz: unauthenticated probes for load balancers; /readyz says why a node cannot serve."""

from __future__ import annotations

import os
from types import SimpleNamespace

import httpx
import sqlalchemy as sa

from soko.http import health
from soko.http.health import Health
from soko.meta import Database
from soko.storage import FilesystemDriver


def _ready(url: str) -> httpx.Response:
    return httpx.get(url + "/readyz", timeout=10)  # no credentials: probes carry none


def test_probes_answer_without_credentials_and_are_not_audited(server, monkeypatch):
    monkeypatch.setattr(health, "CACHE_SECONDS", 0.0)
    alive = httpx.get(server.url + "/healthz", timeout=10)
    assert alive.status_code == 200 and alive.json() == {"status": "ok"}
    ready = _ready(server.url)
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    assert httpx.head(server.url + "/readyz", timeout=10).status_code == 200
    refused = httpx.post(server.url + "/healthz", timeout=10)
    assert refused.status_code == 405 and refused.headers["Allow"] == "GET, HEAD"
    server.identity.audit.flush()
    with server.registry.ctx.db.read() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM audit_events")).scalar() == 0


def test_readyz_is_503_with_a_reason_while_the_schema_is_behind_or_the_storage_is_gone(server, monkeypatch):
    monkeypatch.setattr(health, "CACHE_SECONDS", 0.0)
    db = server.registry.ctx.db
    head = db.head_revision()
    with db.write() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0001'"))
    try:
        r = _ready(server.url)
        assert r.status_code == 503 and r.headers["Content-Type"] == "application/json"
        assert r.json()["status"] == "unavailable"
        assert "migration 0001" in r.json()["reason"] and "soko migrate" in r.json()["reason"]
        assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200  # alive all the same
    finally:
        with db.write() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": head})
    assert _ready(server.url).status_code == 200

    root = server.registry.ctx.storage.inner.root  # (under the encryption wrapper)
    os.rename(root, root + ".away")
    try:
        r = _ready(server.url)
        assert r.status_code == 503 and r.json()["reason"].startswith("storage: ")
        assert "not a directory" in r.json()["reason"]
    finally:
        os.rename(root + ".away", root)
    assert _ready(server.url).status_code == 200


def test_an_unreachable_database_is_named(tmp_path):
    class Unreachable:
        ctx = SimpleNamespace(
            db=Database("postgresql+psycopg://soko@127.0.0.1:1/none?connect_timeout=2"),
            storage=FilesystemDriver(str(tmp_path)),
        )

    problem = Health(Unreachable()).problem()  # type: ignore[arg-type]
    assert problem is not None and problem.startswith("database: cannot query it")
    assert "database_url" in problem
