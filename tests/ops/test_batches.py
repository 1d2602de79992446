"""Audit rows and pull times are never lost to a failed database write (both databases): the batch waits for the
next flush; memory stays bounded, and what the bound drops is counted on /metrics."""

from __future__ import annotations

import contextlib

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest

from soko.audit import AuditLog, AuditQuery
from soko.batcher import Batcher
from soko.http.metrics import BatchCollector
from soko.meta.schema import manifests
from soko.registry.models import RepoRef
from tests.domain import push_image


@contextlib.contextmanager
def table_gone(registry, table: str):
    """The table is unreachable (renamed away) meanwhile: every write to it fails, as with a database outage."""
    with registry.ctx.db.write() as conn:
        conn.execute(sa.text(f"ALTER TABLE {table} RENAME TO {table}_away"))
    try:
        yield
    finally:
        with registry.ctx.db.write() as conn:
            conn.execute(sa.text(f"ALTER TABLE {table}_away RENAME TO {table}"))


def test_audit_rows_survive_a_failed_flush(registry) -> None:
    audit = AuditLog(registry.ctx)
    audit.record("authz", "arn:aws:iam::000000000000:root", "ecr:BatchGetImage", "r", "allow", None, None)
    audit.record("authz", "arn:aws:iam::000000000000:user/x", "ecr:PutImage", "r", "deny", "no policy", None)
    with table_gone(registry, "audit_events"):
        with pytest.raises(sa.exc.DBAPIError):
            audit.flush()
        # More arrive while the database is away: the allow merges into the row waiting, the denial adds one.
        audit.record("authz", "arn:aws:iam::000000000000:root", "ecr:BatchGetImage", "r", "allow", None, None)
        audit.record("authz", "arn:aws:iam::000000000000:user/x", "ecr:PutImage", "r", "deny", "no policy", None)
    assert audit.flush() == 3
    rows = audit.query(AuditQuery())
    assert sorted((r["decision"], r["count"]) for r in rows) == [("allow", 2), ("deny", 1), ("deny", 1)]
    assert audit.flush() == 0


def test_pull_times_survive_a_failed_flush(registry) -> None:
    ref = RepoRef("000000000000", "batches/pulls")
    digest = push_image(registry, ref, "v1", [b"layer"])
    registry.manifests.get(ref, digest, record_pull=True)
    with table_gone(registry, "manifests"), pytest.raises(sa.exc.DBAPIError):
        registry.manifests.flush_pulls()
    assert registry.manifests.flush_pulls() == 1
    with registry.ctx.db.read() as conn:
        assert conn.execute(sa.select(manifests.c.last_pulled_at).where(manifests.c.digest == digest)).scalar()


def test_a_full_batch_drops_new_keys_and_counts_them(registry) -> None:
    written: list[dict] = []
    failing = True

    def write(batch: dict) -> None:
        if failing:
            raise OSError("database unreachable")
        written.append(batch)

    batcher: Batcher[str, int] = Batcher("test-bounded", write, lambda a, b: a + b, limit=2)
    batcher.add("a", 1)
    batcher.add("b", 1)
    with pytest.raises(OSError):
        batcher.flush()
    batcher.add("a", 1)  # merges into a waiting key: kept
    batcher.add("c", 1)  # a new key past the bound: dropped, counted
    assert (len(batcher), batcher.dropped) == (2, 1)
    collectors = CollectorRegistry(auto_describe=False)
    collectors.register(BatchCollector())
    text = generate_latest(collectors).decode()
    assert 'soko_batch_dropped_total{batch="test-bounded"} 1.0' in text
    assert 'soko_batch_pending{batch="test-bounded"} 2.0' in text
    failing = False
    assert batcher.flush() == 2 and written == [{"a": 2, "b": 1}]
