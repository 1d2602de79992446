"""Storage deletions as committed tombstones, carried out after the transaction.

The collector never deletes, renames or copies a stored object while it holds row locks (on an object store a
"move to trash" is a server-side copy, and every push of a locked digest would wait for it). Instead:

1. **Bury** (in the collector's transaction): the blob row is deleted and a tombstone row (digest, storage path,
   ``not_before``) inserted; both commit together or not at all.
2. **Execute** (after the commit, no row lock held during storage calls): a transaction takes due tombstones
   (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), drops those whose digest has a blob row again (a re-push: the stored
   object is live content now) and *claims* the rest (``claimed_until`` = wall clock + ``CLAIM``, ``claimed_by``)
   and commits. Then the objects are deleted, one by one, only while the claim has time left; then the tombstone
   rows are deleted (only ours). A crash in between leaves claimed tombstones, which the next run takes again
   once the claim has lapsed (deleting an absent object is fine).
3. **Re-push** of a tombstoned digest (upload completion, ``clear_for_new_blob``): in the transaction that inserts
   and locks the new blob row, before the content moves into place, it locks the digest's tombstones. Unclaimed
   ones are deleted (the executor will find them gone or the new row); a claimed one means an executor may be
   deleting the object right now, so the completion rolls back and tries again after the claim is released —
   moving content in first could see it deleted a moment later.

Why this cannot lose content a live row references: the executor claims only under the tombstone's row lock and
only when no blob row exists; a completion checks the tombstones under the same lock *after* inserting its row.
Whichever locks the tombstone second sees what the first did — a claim (the completion waits), or the tombstone
gone / a blob row (the executor leaves the object). The one assumption is the executor's: it stops deleting before
its claim lapses (checked before every delete, with a margin far beyond one storage call). A claim of a process of
this node that died (``process_identity``) is void at once, so a kill -9 mid-batch delays nobody.

The archive tier (``registry/storage_class.py``) buries the copy a move between tiers leaves behind while the blob
row stays: "the digest has a row" above means, precisely, "the tombstone's path is the row's current copy" (its
standard path, or the archive path it names); the executor deletes the others, from the store that holds them
(``DomainContext.store_for``). A blob brought back to standard storage drops the standard path's tombstones under
the same lock, as a completion does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from soko import process_identity
from soko.kernel.leases import lease_is_free
from soko.meta.schema import blob_copies, blobs, gc_tombstones
from soko.storage import PathNotFound
from soko.storage.paths import blob_digest, blob_path, keyed_copy

log = logging.getLogger("soko.gc")
BATCH = 500
CLAIM = 60.0  # seconds an executor holds tombstones it is deleting
MARGIN = 15.0  # stop deleting this long before the claim lapses
RETRY_AFTER = 60.0  # a tombstone whose delete failed is tried again this much later


class TombstoneBusy(Exception):
    """An executor is deleting the stored object of the digest being completed: retry once it is done."""


@dataclass
class Executed:
    deleted: int = 0  # stored objects deleted (or found absent)
    voided: int = 0  # tombstones dropped because the digest is live again
    failed: int = 0  # deletes that failed (retried later)


def bury(conn: sa.Connection, entries: Iterable[tuple[str, str]], now: float, reason: str) -> None:
    """Queue the deletion of stored objects, ``(digest, path)`` each, in the caller's transaction."""
    rows = [{"digest": d, "path": p, "not_before": now, "created_at": now, "reason": reason} for d, p in entries]
    if rows:
        conn.execute(sa.insert(gc_tombstones), rows)


def clear_for_new_blob(conn: sa.Connection, digest: str, *, lock: bool, path: str | None = None) -> None:
    """Called by a blob commit holding the digest's (new or existing) blob row, before its content moves into place:
    drops the digest's pending tombstones of its standard copy (of ``path`` instead, when given: a copy under one
    key leaves the deletion of another key's copy alone, and of an archive copy); raises ``TombstoneBusy`` while an
    executor holds one."""
    query = sa.select(gc_tombstones.c.id, gc_tombstones.c.claimed_until, gc_tombstones.c.claimed_by).where(
        gc_tombstones.c.digest == digest, gc_tombstones.c.path == (blob_path(digest) if path is None else path)
    )
    rows = conn.execute(query.with_for_update() if lock else query).all()
    if not rows:
        return
    now = time.time()
    if any(_claim_holds(r.claimed_until, r.claimed_by, now) for r in rows):
        raise TombstoneBusy(digest)
    conn.execute(sa.delete(gc_tombstones).where(gc_tombstones.c.id.in_([r.id for r in rows])))


def _claim_holds(claimed_until: float | None, claimed_by: str | None, now: float) -> bool:
    """An executor may be deleting the object: its claim has not lapsed and it is not a process of this node that
    died (kill -9 mid-batch: its claims are void at once, as upload claims are)."""
    return claimed_until is not None and claimed_until >= now and not process_identity.holder_is_dead(claimed_by)


def _drop_plaintext(ctx, path: str) -> None:
    """This node's decrypted copy of a deleted blob leaves memory with it (other nodes' age out of their budget;
    none is served meanwhile: pulls check the blob's row first)."""
    cache = ctx.plain_cache
    if cache is None:
        return
    digest = blob_digest(path)
    if digest is not None:
        cache.drop(None, digest)
    elif (copy := keyed_copy(path)) is not None:
        cache.drop(*copy)


def execute(ctx, *, stopping: Callable[[], bool] = lambda: False, owner: str | None = None) -> Executed:
    """Carry out every due tombstone, a batch at a time (``stopping`` is asked between batches)."""
    owner = owner or process_identity.new_token()
    result = Executed()
    while not stopping():
        claimed, claimed_until = _claim(ctx, owner, result)
        if claimed is None:
            return result
        done, failed = [], []
        for tomb_id, path in claimed:
            if time.time() > claimed_until - MARGIN:
                break  # the rest are released untried (``_release``), due again at once
            try:
                ctx.store_for(path).delete(path)
            except PathNotFound:
                pass
            except Exception:
                log.exception("could not delete %s from storage; it is retried later", path)
                failed.append(tomb_id)
                continue
            _drop_plaintext(ctx, path)
            done.append(tomb_id)
        _release(ctx, owner, done, failed, [t for t, _ in claimed if t not in done and t not in failed])
        result.deleted += len(done)
        result.failed += len(failed)
        if failed and not done:
            return result  # storage is failing: leave the rest for a later run
    return result


def _claim(ctx, owner: str, result: Executed) -> tuple[list[tuple[int, str]] | None, float]:
    now, wall = ctx.clock(), time.time()
    with ctx.db.write() as conn:
        free = lease_is_free(conn, gc_tombstones.c.claimed_by, gc_tombstones.c.claimed_until, wall)
        query = (
            sa.select(gc_tombstones.c.id, gc_tombstones.c.digest, gc_tombstones.c.path)
            .where(gc_tombstones.c.not_before <= now, free)
            .order_by(gc_tombstones.c.id)
            .limit(BATCH)
        )
        due = conn.execute(query if ctx.db.is_sqlite else query.with_for_update(skip_locked=True)).all()
        if not due:
            return None, 0.0
        # A new statement after the locks: it sees every blob row a re-push committed while they were awaited. A
        # tombstone is void when its object is live: a copy under a customer key (``keyed/``) while its own row is;
        # otherwise when it is the blob's current copy (standard storage, or the archive copy the row names), so
        # the copy a move between tiers left behind (``registry/storage_class.py``) is deleted.
        current = {
            r.digest: r.archive_path if r.tier is not None else blob_path(r.digest)
            for r in conn.execute(
                sa.select(blobs.c.digest, blobs.c.tier, blobs.c.archive_path).where(
                    blobs.c.digest.in_({r.digest for r in due})
                )
            )
        }
        copies = {(r.digest, k[0]) for r in due if (k := keyed_copy(r.path)) is not None}
        live_copies = (
            {
                (r.digest, r.keyspace)
                for r in conn.execute(
                    sa.select(blob_copies.c.digest, blob_copies.c.keyspace).where(
                        blob_copies.c.digest.in_({d for d, _ in copies})
                    )
                )
            }
            if copies
            else set()
        )

        def is_live(r: sa.Row) -> bool:
            copy = keyed_copy(r.path)
            return current.get(r.digest) == r.path if copy is None else (r.digest, copy[0]) in live_copies

        void = [r.id for r in due if is_live(r)]
        if void:
            conn.execute(sa.delete(gc_tombstones).where(gc_tombstones.c.id.in_(void)))
            result.voided += len(void)
        claimed = [(r.id, r.path) for r in due if not is_live(r)]
        claimed_until = wall + CLAIM
        if claimed:
            conn.execute(
                sa.update(gc_tombstones)
                .where(gc_tombstones.c.id.in_([t for t, _ in claimed]))
                .values(claimed_until=claimed_until, claimed_by=owner)
            )
    return claimed, claimed_until


def _release(ctx, owner: str, done: list[int], failed: list[int], untried: list[int]) -> None:
    mine = gc_tombstones.c.claimed_by == owner
    with ctx.db.write() as conn:
        if done:
            conn.execute(sa.delete(gc_tombstones).where(gc_tombstones.c.id.in_(done), mine))
        if untried:
            conn.execute(
                sa.update(gc_tombstones)
                .where(gc_tombstones.c.id.in_(untried), mine)
                .values(claimed_until=None, claimed_by=None)
            )
        # A failed delete keeps its claim until it lapses (the request may still land), and waits a while more.
        if failed:
            conn.execute(
                sa.update(gc_tombstones)
                .where(gc_tombstones.c.id.in_(failed), mine)
                .values(not_before=ctx.clock() + RETRY_AFTER)
            )


def pending(ctx) -> dict[str, int]:
    """Tombstones not carried out yet, by digest (``soko fsck``)."""
    with ctx.db.read() as conn:
        rows = conn.execute(sa.select(gc_tombstones.c.digest, sa.func.count()).group_by(gc_tombstones.c.digest)).all()
    return dict(rows)
