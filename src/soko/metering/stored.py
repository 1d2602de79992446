"""Stored bytes, computed exactly from the metadata database on demand; GB-month samples and their accrual."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import sqlalchemy as sa

from soko.crypto.rows import plain_length
from soko.kernel.keyspaces import KEYED_TYPES
from soko.kernel.service_copies import has_service_copy
from soko.meta import Database
from soko.meta.schema import archive_charges, blob_copies, blobs, manifests, repository_blobs, usage_samples
from soko.meta.schema import repositories as repos


@dataclass(frozen=True)
class RepositoryBytes:
    account_id: str
    repository: str
    logical_bytes: int  # Σ linked blob sizes + Σ manifest payload bytes
    physical_bytes: int  # this repository's share of the account's deduplicated bytes (one copy per key)
    # The same for content in the archive tier (blobs.tier; priced apart). The two figures above are standard storage.
    archive_logical_bytes: int = 0
    archive_physical_bytes: int = 0


@dataclass
class StoredBytes:
    repositories: list[RepositoryBytes]
    account_logical: dict[str, int] = field(default_factory=dict)
    account_physical: dict[str, int] = field(default_factory=dict)  # DISTINCT (blob, key) of the account + manifests
    registry_blob_bytes: int = 0  # Σ service-key copies + Σ per-key copies (blob_copies): what the blob store holds
    registry_manifest_bytes: int = 0


@contextlib.contextmanager
def snapshot(db: Database) -> Iterator[sa.Connection]:
    """A read transaction whose statements all see one snapshot (SQLite's WAL reads already do)."""
    if db.is_sqlite:
        with db.read() as conn:
            yield conn
        return
    with db.engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
        yield conn


def _storage_key() -> tuple[sa.ColumnElement, sa.ColumnElement]:
    """Which stored copy of a blob a repository's link uses: the service-key one (AES256: both NULL) or its
    keyspace's (soko.kernel.keyspaces: KMS / KMS_DSSE with the key ARN), each stored once per digest, so each
    counted once per account."""
    keyed = repos.c.encryption_type.in_(list(KEYED_TYPES))
    return (
        sa.case((keyed, repos.c.encryption_type), else_=sa.null()),
        sa.case((keyed, repos.c.kms_key), else_=sa.null()),
    )


def repository_bytes(conn: sa.Connection, account_id: str | None = None) -> list[RepositoryBytes]:
    """Per repository: logical bytes, and physical bytes where each stored copy's size (the service-key copy, or
    a customer key's: ``blob_copies``) is split evenly among the account's repositories reading that copy (the
    remainder bytes go one each to the lowest repository ids), so the repositories' physical bytes add up exactly
    to the account's deduplicated total; standard storage (with the manifests) and the archive tier apart."""
    archive = {(r.account_id, r.repository): r for r in _tier_bytes(conn, account_id, archive=True) if r.logical_bytes}
    out = []
    for r in _tier_bytes(conn, account_id, archive=False):
        a = archive.get((r.account_id, r.repository))
        if a is not None:
            r = RepositoryBytes(
                r.account_id, r.repository, r.logical_bytes, r.physical_bytes, a.logical_bytes, a.physical_bytes
            )
        out.append(r)
    return out


def _tier_bytes(conn: sa.Connection, account_id: str | None, *, archive: bool) -> list[RepositoryBytes]:
    rb = repository_blobs.c
    scope = (repos.c.account_id, *_storage_key(), rb.digest)
    link_query = sa.select(
        rb.repository_id,
        blobs.c.size,
        sa.func.count().over(partition_by=scope).label("n"),
        sa.func.row_number().over(partition_by=scope, order_by=rb.repository_id).label("k"),
    ).select_from(repository_blobs.join(repos, repos.c.id == rb.repository_id).join(blobs, blobs.c.digest == rb.digest))
    # the archive tier holds service-key content only: a keyed copy (KMS) is standard storage whatever blobs.tier says
    in_archive = blobs.c.tier.is_not(None) & repos.c.encryption_type.not_in(list(KEYED_TYPES))
    link_query = link_query.where(in_archive if archive else sa.not_(in_archive))
    if account_id is not None:
        link_query = link_query.where(repos.c.account_id == account_id)
    links = link_query.subquery()
    share = links.c.size // links.c.n + sa.case((links.c.k <= links.c.size % links.c.n, 1), else_=0)
    blob_totals = (
        sa.select(
            links.c.repository_id,
            sa.func.sum(links.c.size).label("logical"),
            sa.func.sum(share).label("physical"),
        )
        .group_by(links.c.repository_id)
        .subquery()
    )
    manifest_totals = (
        sa.select(manifests.c.repository_id, sa.func.sum(plain_length(manifests.c.payload)).label("size"))
        .group_by(manifests.c.repository_id)
        .subquery()
    )
    query = (
        sa.select(
            repos.c.account_id,
            repos.c.name,
            sa.func.coalesce(blob_totals.c.logical, 0).label("logical"),
            sa.func.coalesce(blob_totals.c.physical, 0).label("physical"),
            sa.func.coalesce(manifest_totals.c.size, 0).label("manifest_bytes"),
        )
        .select_from(
            repos.outerjoin(blob_totals, blob_totals.c.repository_id == repos.c.id).outerjoin(
                manifest_totals, manifest_totals.c.repository_id == repos.c.id
            )
        )
        .order_by(repos.c.account_id, repos.c.name)
    )
    if account_id is not None:
        query = query.where(repos.c.account_id == account_id)
    manifest_bytes = (lambda r: 0) if archive else (lambda r: int(r.manifest_bytes))
    return [
        RepositoryBytes(r.account_id, r.name, int(r.logical) + manifest_bytes(r), int(r.physical) + manifest_bytes(r))
        for r in conn.execute(query)
    ]


def account_physical_bytes(conn: sa.Connection, account_id: str | None = None) -> dict[str, int]:
    """Σ size of the DISTINCT stored copies (blob, key) any repository of the account reads, + the account's
    manifest bytes."""
    kind, key = _storage_key()
    distinct_links = sa.select(
        repos.c.account_id, kind.label("kind"), key.label("key"), repository_blobs.c.digest
    ).join(repos, repos.c.id == repository_blobs.c.repository_id)
    manifest_query = (
        sa.select(repos.c.account_id, sa.func.sum(plain_length(manifests.c.payload)).label("size"))
        .join(repos, repos.c.id == manifests.c.repository_id)
        .group_by(repos.c.account_id)
    )
    if account_id is not None:
        distinct_links = distinct_links.where(repos.c.account_id == account_id)
        manifest_query = manifest_query.where(repos.c.account_id == account_id)
    linked = distinct_links.distinct().subquery()
    blob_query = (
        sa.select(linked.c.account_id, sa.func.sum(blobs.c.size).label("size"))
        .join(blobs, blobs.c.digest == linked.c.digest)
        # standard storage (the archive tier: the repositories' archive shares); a keyed copy is never archived
        .where(blobs.c.tier.is_(None) | linked.c.kind.is_not(None))
        .group_by(linked.c.account_id)
    )
    totals: dict[str, int] = {}
    for query in (blob_query, manifest_query):
        for row in conn.execute(query):
            totals[row.account_id] = totals.get(row.account_id, 0) + int(row.size or 0)
    return totals


def stored_bytes(db: Database, account_id: str | None = None) -> StoredBytes:
    with snapshot(db) as conn:
        result = StoredBytes(repository_bytes(conn, account_id))
        result.account_physical = account_physical_bytes(conn, account_id)
        total = sa.func.coalesce(sa.func.sum(blobs.c.size), 0)
        copies = sa.select(total).join(blob_copies, blob_copies.c.digest == blobs.c.digest)
        result.registry_blob_bytes = int(conn.execute(sa.select(total).where(has_service_copy())).scalar_one()) + int(
            conn.execute(copies).scalar_one()
        )
        result.registry_manifest_bytes = int(
            conn.execute(sa.select(sa.func.coalesce(sa.func.sum(plain_length(manifests.c.payload)), 0))).scalar_one()
        )
    for repo in result.repositories:
        result.account_logical[repo.account_id] = result.account_logical.get(repo.account_id, 0) + repo.logical_bytes
        result.account_physical.setdefault(repo.account_id, 0)
    return result


def take_sample(db: Database, now: float, interval: int) -> int:
    """Record every non-empty repository's bytes for the slot containing ``now``; returns the rows written (0 when
    another node or process sampled the slot already)."""
    slot = int(now // interval) * interval
    with db.read() as conn:
        if conn.execute(
            sa.select(usage_samples.c.slot_start).where(usage_samples.c.slot_start == slot).limit(1)
        ).first():
            return 0
    with snapshot(db) as conn:
        rows = [
            {
                "account_id": r.account_id,
                "repository_name": r.repository,
                "slot_start": slot,
                "slot_seconds": interval,
                "logical_bytes": r.logical_bytes,
                "physical_bytes": r.physical_bytes,
                "archive_logical_bytes": r.archive_logical_bytes,
                "archive_physical_bytes": r.archive_physical_bytes,
                "sampled_at": now,
            }
            for r in repository_bytes(conn)
            if r.logical_bytes or r.physical_bytes or r.archive_logical_bytes
        ]
    if rows:
        with db.write() as conn:
            conn.execute(db.insert_ignore(usage_samples), rows)
    return len(rows)


def accrued_byte_seconds(
    conn: sa.Connection, start: int, end: int, account_id: str | None = None
) -> dict[tuple[str, str], tuple[int, int]]:
    """(account, repository) → (logical, physical) byte-seconds of the slots starting in [start, end)."""
    s = usage_samples.c
    query = (
        sa.select(
            s.account_id,
            s.repository_name,
            s.slot_seconds,
            sa.func.sum(s.logical_bytes).label("logical"),
            sa.func.sum(s.physical_bytes).label("physical"),
        )
        .where(s.slot_start >= start, s.slot_start < end)
        .group_by(s.account_id, s.repository_name, s.slot_seconds)
    )
    if account_id is not None:
        query = query.where(s.account_id == account_id)
    totals: dict[tuple[str, str], tuple[int, int]] = {}
    for row in conn.execute(query):
        key = (row.account_id, row.repository_name)
        logical, physical = totals.get(key, (0, 0))
        totals[key] = (logical + int(row.logical) * row.slot_seconds, physical + int(row.physical) * row.slot_seconds)
    return totals


def accrued_archive(
    conn: sa.Connection, start: int, end: int, account_id: str | None = None
) -> dict[tuple[str, str], tuple[int, int]]:
    """(account, repository) → (physical byte-seconds in the archive tier over the slots starting in [start, end),
    byte-seconds charged for ECR's 90-day minimum archive duration by images that left the archive sooner in it)."""
    s = usage_samples.c
    query = (
        sa.select(s.account_id, s.repository_name, s.slot_seconds, sa.func.sum(s.archive_physical_bytes).label("b"))
        .where(s.slot_start >= start, s.slot_start < end, s.archive_physical_bytes > 0)
        .group_by(s.account_id, s.repository_name, s.slot_seconds)
    )
    c = archive_charges.c
    charges = (
        sa.select(c.account_id, c.repository_name, sa.func.sum(c.byte_seconds).label("b"))
        .where(c.charged_at >= start, c.charged_at < end)
        .group_by(c.account_id, c.repository_name)
    )
    if account_id is not None:
        query = query.where(s.account_id == account_id)
        charges = charges.where(c.account_id == account_id)
    totals: dict[tuple[str, str], tuple[int, int]] = {}
    for row in conn.execute(query):
        key = (row.account_id, row.repository_name)
        stored, minimum = totals.get(key, (0, 0))
        totals[key] = (stored + int(row.b) * row.slot_seconds, minimum)
    for charge in conn.execute(charges):
        key = (charge.account_id, charge.repository_name)
        stored, minimum = totals.get(key, (0, 0))
        totals[key] = (stored, minimum + int(charge.b))
    return totals
