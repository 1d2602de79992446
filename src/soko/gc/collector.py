"""The garbage collector.

What is garbage, and why deleting it is safe while pushes and pulls go on:

1. **Links** (a repository's right to read a blob) that no manifest of the repository references. Every event that
   can leave a link unreferenced — a finished upload, a mount, a manifest deletion (by digest, by an image's last
   tag, by lifecycle expiry) — enqueues a review row (a blob unlink deletes the link itself; a repository deletion
   deletes its links and queues a review of each, which keeps their blobs, see 2). Once the grace period has passed
   since the event, the collector locks the link row (``FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE``
   serialises all writers), re-checks in that transaction that no manifest references it, and deletes it. A manifest
   push locks the links it relies on (``FOR SHARE``) in its own transaction, so the two can never both succeed. The
   grace period covers a client that checked a blob exists and pushes the manifest a little later. It runs from the
   link's *last* event: uploading or mounting a blob a repository still links (a client retrying a push) keeps the
   link row as it is but queues a new review, so a link with a review not yet due — or created within the grace
   period — is kept whatever older reviews say; the youngest review decides. Links older than the grace period with
   no pending review (e.g. left by a crash) are found by a sweep, under the same rules.
2. **Blobs** no repository links, stored before the cutoff and with no review of their digest queued after it. The
   collector locks the blob row and re-checks that nothing links or references it; then it deletes the row and
   inserts a *tombstone* for its stored object in the same transaction, and commits. Storage is touched only
   after the commit, by the tombstone executor (``gc/tombstones.py``), never under a row lock: an upload
   completing the same digest meanwhile drops the tombstone (or waits for the one being carried out), so the
   executor never deletes content a live row references. A crash leaves tombstones, which the next run carries out.
3. **Uploads** untouched for ``upload_expiry``, and **stray files** in storage with no row (left by crashes): data
   of upload sessions with no row, and blob files with no row — these get tombstones too — older than the grace
   period (the rare storage sweep).

Manifests themselves are never garbage: untagged images stay until deleted or expired by a lifecycle policy.

**Phases**, each a leased job (``jobs/kinds.py``) and all run in order by ``soko gc`` (``run``): ``review``
(the link-review queue and the link sweep), ``delete_blobs`` (bury unused blobs, then execute due tombstones) and
the rare ``sweep_storage``. Each checks ``stopping`` between batches, so a shutdown does not wait for a long run.

**Batches.** Links and blobs are handled ``BATCH`` (500) at a time, one transaction per batch and a fixed number of
statements per batch whatever its size (a statement, or a commit, per row made a 1,000,000-row collection take
many minutes). A link batch:

a. *(reviews only)* takes the next due reviews, oldest first — ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
   collectors on several nodes share the queue instead of reviewing the same links;
b. locks, on PostgreSQL, the blob rows of the batch's links (one ``SELECT … ORDER BY digest FOR NO KEY UPDATE``),
   then the links that still exist (one ``SELECT … ORDER BY repository, digest FOR UPDATE`` — the order manifest
   pushes take their ``FOR SHARE`` locks in, so the two cannot deadlock each other). An upload or mount linking a
   digest takes its blob row (``FOR UPDATE``, ``FOR SHARE``) before it links it and queues its review, so it either
   commits before the check below, which then sees its review, or waits for the batch and then links the blob
   afresh: it never counts on a link the batch deletes. Blob rows come first here as they do there, so the two
   cannot deadlock; inserting a link or a manifest's reference takes only ``FOR KEY SHARE`` on the blob row, which
   this lock lets through;
c. asks which of the locked links no manifest references, were created by the cutoff and have no review queued
   after it (one query). This is a *separate statement after* the locks on purpose: on PostgreSQL a statement sees
   the data as of its start, so a check made by the locking statement itself could miss a manifest whose push (or
   a review whose upload) committed while that statement waited for a lock;
d. deletes those links (one statement), and *(reviews only)* drops the reviews of the batch's links queued before
   the cutoff (one statement; on PostgreSQL skipping reviews another collector holds — it answers them itself).
   Younger reviews stay queued and decide once they come due.

A blob batch locks the candidate blob rows (``ORDER BY digest FOR UPDATE``), asks which of them nothing links or
references (one query, again after the locks), deletes their rows and inserts their tombstones (one statement each)
and commits; the tombstones are executed after the last batch. A batch that loses a PostgreSQL deadlock anyway (e.g.
against an upload completing a digest of the batch) is rolled back and left for the next run. A dry run takes the
same locks and runs the same checks, then rolls its batches back.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import sqlalchemy as sa

from soko.gc import tombstones
from soko.kernel.context import DomainContext
from soko.kernel.keyspaces import keyspace_of
from soko.meta.schema import (
    blob_copies,
    blob_keys,
    blobs,
    gc_link_reviews,
    gc_tombstones,
    manifest_blobs,
    manifests,
    repositories,
    repository_blobs,
    uploads,
)
from soko.storage import PathNotFound, StorageDriver, paths
from soko.storage.paths import blob_path

log = logging.getLogger("soko.gc")
_WRAP_BATCH = 1000
BATCH = 500

Link = tuple[int, str]  # (repository id, digest)

# A manifest of the link's repository references the link's blob (correlated with repository_blobs).
_LINK_REFERENCED = sa.exists().where(
    manifest_blobs.c.digest == repository_blobs.c.digest,
    manifests.c.id == manifest_blobs.c.manifest_id,
    manifests.c.repository_id == repository_blobs.c.repository_id,
)


def _link_is_young(cutoff: float) -> sa.ColumnElement[bool]:
    """The link (correlated with repository_blobs) was created, or its blob uploaded, mounted or unreferenced again,
    after ``cutoff``: a review of it is queued after the cutoff (it decides once due), or the link is that new."""
    return sa.or_(
        repository_blobs.c.created_at > cutoff,
        sa.exists().where(
            gc_link_reviews.c.repository_id == repository_blobs.c.repository_id,
            gc_link_reviews.c.digest == repository_blobs.c.digest,
            gc_link_reviews.c.queued_at > cutoff,
        ),
    )


# Something still needs the blob: a repository links it or a manifest references it (correlated with blobs).
_BLOB_USED = sa.or_(
    sa.exists().where(repository_blobs.c.digest == blobs.c.digest),
    sa.exists().where(manifest_blobs.c.digest == blobs.c.digest),
)


def _blob_is_young(cutoff: float) -> sa.ColumnElement[bool]:
    """The blob (correlated with blobs) was stored after ``cutoff``, or a review of a link to it is queued after it:
    a deleted repository's links go at once, but their reviews keep the blob for the grace period."""
    return sa.or_(
        blobs.c.created_at > cutoff,
        sa.exists().where(gc_link_reviews.c.digest == blobs.c.digest, gc_link_reviews.c.queued_at > cutoff),
    )


def _is_link(links: Iterable[Link], table: sa.Table = repository_blobs) -> sa.ColumnElement[bool]:
    """``table``'s (repository_id, digest) is one of ``links``."""
    pairs = [(repository_id, digest) for repository_id, digest in links]  # (rows, too)
    return sa.and_(
        # Redundant, but SQLite scans the whole table for a row-value IN list alone; with these it searches the
        # (repository_id, digest) index.
        table.c.repository_id.in_(sorted({r for r, _ in pairs})),
        table.c.digest.in_(sorted({d for _, d in pairs})),
        sa.tuple_(table.c.repository_id, table.c.digest).in_(pairs),
    )


@dataclass
class GcReport:
    dry_run: bool
    links_deleted: int = 0
    blobs_deleted: int = 0
    bytes_reclaimed: int = 0
    uploads_expired: int = 0
    stray_files_deleted: int = 0
    trash_restored: int = 0  # legacy: trash left by a collector of an older version that died mid-batch
    tombstones_executed: int = 0  # stored objects deleted after their rows' deletion committed
    tombstones_voided: int = 0  # deletions dropped because the digest was pushed again meanwhile
    copies_deleted: int = 0  # customer-key copies no repository of their key links any more
    wraps_deleted: int = 0  # accounts' wraps of blobs' keys (blob_keys) no AES256 repository of theirs links any more
    deleted_digests: list[str] = field(default_factory=list)
    seconds: float = 0.0
    phase: str = "starting"
    # (repository id, digest) links found unreferenced in this run: a dry run counts blobs they would free.
    doomed_links: set[Link] = field(default_factory=set, repr=False)

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        return (
            f"gc: {verb} {self.links_deleted} unreferenced link(s), {self.blobs_deleted} blob(s) "
            f"({self.bytes_reclaimed} bytes), {self.uploads_expired} expired upload(s), "
            f"{self.stray_files_deleted} stray file(s); {self.tombstones_executed} storage deletion(s) carried out, "
            f"{self.tombstones_voided} voided by a re-push; in {self.seconds:.2f}s"
        )

    def add_links(self, links: Iterable[Link]) -> None:
        """Count links found unreferenced; each once (a dry run may find a link again in a later batch)."""
        new = set(links) - self.doomed_links
        self.links_deleted += len(new)
        self.doomed_links |= new


def _is_deadlock(exc: sa.exc.OperationalError) -> bool:
    return getattr(exc.orig, "sqlstate", None) == "40P01"


class _RollBack(Exception):
    """Leaves a probing transaction without committing it."""


class ExpiresUploads(Protocol):
    """What the collector needs of the domain's uploads (``soko.registry.uploads.Uploads``, which composes it)."""

    def expire(self, older_than: float | None = None) -> int: ...


class GarbageCollector:
    def __init__(self, ctx: DomainContext, uploads: ExpiresUploads) -> None:
        self.ctx = ctx
        self.uploads = uploads

    def run(
        self,
        *,
        grace_period: float | None = None,
        dry_run: bool = False,
        sweep_storage: bool = True,
        report: GcReport | None = None,
        stopping: Callable[[], bool] = lambda: False,
    ) -> GcReport:
        """Every phase in order (``soko gc``). ``report``: one to fill in as the run goes (a progress display reads
        it from another thread); ``stopping``: asked between batches, ends the run early when it says so."""
        started = time.monotonic()
        report = report or GcReport(dry_run=dry_run)
        report.dry_run = dry_run
        self.review(grace_period=grace_period, dry_run=dry_run, report=report, stopping=stopping)
        self.delete_blobs(grace_period=grace_period, dry_run=dry_run, report=report, stopping=stopping)
        if not dry_run and not stopping():
            report.phase = "expiring uploads"
            report.uploads_expired = self.uploads.expire()
        if sweep_storage and not stopping():
            self.sweep_storage(grace_period=grace_period, dry_run=dry_run, report=report, stopping=stopping)
        report.phase = "done"
        report.seconds = time.monotonic() - started
        return report

    def _cutoff(self, grace_period: float | None) -> float:
        grace = self.ctx.settings.gc_grace_period if grace_period is None else grace_period
        return self.ctx.clock() - grace

    def review(
        self,
        *,
        grace_period: float | None = None,
        dry_run: bool = False,
        report: GcReport | None = None,
        stopping: Callable[[], bool] = lambda: False,
    ) -> GcReport:
        """Phase 1 (job ``gc_review``): answer due link reviews, then sweep old unreferenced links."""
        report = report or GcReport(dry_run=dry_run)
        cutoff = self._cutoff(grace_period)
        report.phase = "reviewing links"
        self._review_links(cutoff, dry_run, report, stopping)
        if not stopping():
            self._sweep_links(cutoff, dry_run, report, stopping)
        return report

    def delete_blobs(
        self,
        *,
        grace_period: float | None = None,
        dry_run: bool = False,
        report: GcReport | None = None,
        stopping: Callable[[], bool] = lambda: False,
    ) -> GcReport:
        """Phase 2 (job ``gc_blobs``): delete unused blobs' rows with tombstones, then carry the tombstones out."""
        report = report or GcReport(dry_run=dry_run)
        if not dry_run:
            report.phase = "restoring trash"
            report.trash_restored = self._restore_trash()
        report.phase = "deleting blobs"
        self._delete_blobs(self._cutoff(grace_period), dry_run, report, stopping)
        if not dry_run:
            self._execute_tombstones(report, stopping)
        return report

    def sweep_storage(
        self,
        *,
        grace_period: float | None = None,
        dry_run: bool = False,
        report: GcReport | None = None,
        stopping: Callable[[], bool] = lambda: False,
    ) -> GcReport:
        """Phase 3 (job ``gc_sweep``, rare): stored objects no row knows (left by crashes), older than the grace
        period: upload data with no session, blob files with no blob row (tombstoned, then executed)."""
        report = report or GcReport(dry_run=dry_run)
        report.phase = "sweeping storage"
        self._sweep_storage(self._cutoff(grace_period), dry_run, report, stopping)
        if not dry_run:
            self._execute_tombstones(report, stopping)
        return report

    def _execute_tombstones(self, report: GcReport, stopping: Callable[[], bool]) -> None:
        report.phase = "deleting from storage"
        done = tombstones.execute(self.ctx, stopping=stopping)
        report.tombstones_executed += done.deleted
        report.tombstones_voided += done.voided

    @contextlib.contextmanager
    def _batch(self, dry_run: bool) -> Iterator[sa.Connection]:
        """One batch's write transaction: committed, or rolled back for a dry run or when the body raises _RollBack
        (which this swallows)."""
        try:
            with self.ctx.transaction(invalidates=not dry_run) as tx:
                yield tx.conn
                if dry_run:
                    raise _RollBack
        except _RollBack:
            pass

    def _for_update(self, query: sa.Select, *, skip_locked: bool = False) -> sa.Select:
        """Row locks on PostgreSQL; on SQLite the batch's ``BEGIN IMMEDIATE`` already excludes every other writer."""
        return query if self.ctx.db.is_sqlite else query.with_for_update(skip_locked=skip_locked)

    # ---- links ----------------------------------------------------------------------------------------------------
    def _review_links(self, cutoff: float, dry_run: bool, report: GcReport, stopping: Callable[[], bool]) -> None:
        last_id = 0
        while not stopping():
            due: Sequence[sa.Row] = []
            try:
                with self._batch(dry_run) as conn:
                    due = conn.execute(
                        self._for_update(
                            sa.select(gc_link_reviews.c.id, gc_link_reviews.c.repository_id, gc_link_reviews.c.digest)
                            .where(gc_link_reviews.c.queued_at <= cutoff, gc_link_reviews.c.id > last_id)
                            .order_by(gc_link_reviews.c.id)
                            .limit(BATCH),
                            skip_locked=True,
                        )
                    ).all()
                    if not due:
                        raise _RollBack  # the queue is done: nothing to commit, no cached answer to invalidate
                    doomed = self._review_batch(conn, due, cutoff, dry_run)
            except sa.exc.OperationalError as exc:
                if not _is_deadlock(exc):
                    raise
                log.info("a link-review batch lost a deadlock; its reviews stay queued for the next run")
                doomed = []
            if not due:
                return
            last_id = due[-1].id
            report.add_links(doomed)

    def _review_batch(self, conn: sa.Connection, due: Sequence[sa.Row], cutoff: float, dry_run: bool) -> list[Link]:
        links = {(r.repository_id, r.digest) for r in due}
        doomed = self._doom_links(conn, links, cutoff, dry_run)
        if not dry_run:
            # Every review of these links queued before the cutoff is answered by this batch, except those another
            # collector holds (it answers them itself; waiting for them could deadlock with it).
            answered = sa.select(gc_link_reviews.c.id).where(
                _is_link(links, gc_link_reviews), gc_link_reviews.c.queued_at <= cutoff
            )
            conn.execute(
                sa.delete(gc_link_reviews).where(gc_link_reviews.c.id.in_(self._for_update(answered, skip_locked=True)))
            )
        return doomed

    def _sweep_links(self, cutoff: float, dry_run: bool, report: GcReport, stopping: Callable[[], bool]) -> None:
        """Old unreferenced links with no pending review (crash leftovers, links from before the queue existed)."""
        pending = sa.exists().where(
            gc_link_reviews.c.repository_id == repository_blobs.c.repository_id,
            gc_link_reviews.c.digest == repository_blobs.c.digest,
        )
        with self.ctx.db.read() as conn:
            rows = conn.execute(
                sa.select(repository_blobs.c.repository_id, repository_blobs.c.digest).where(
                    repository_blobs.c.created_at <= cutoff, ~_LINK_REFERENCED, ~pending
                )
            )
            candidates = sorted(link for link in map(tuple, rows) if link not in report.doomed_links)
        for start in range(0, len(candidates), BATCH):
            if stopping():
                return
            doomed: list[Link] = []
            try:
                with self._batch(dry_run) as conn:
                    doomed = self._doom_links(conn, candidates[start : start + BATCH], cutoff, dry_run)
            except sa.exc.OperationalError as exc:
                if not _is_deadlock(exc):
                    raise
                log.info("a link-sweep batch lost a deadlock; its links are swept by the next run")
                doomed = []
            report.add_links(doomed)

    def _doom_links(self, conn: sa.Connection, links: Iterable[Link], cutoff: float, dry_run: bool) -> list[Link]:
        """Lock ``links``, then delete (or, for a dry run, only find) those no manifest of their repository
        references and nothing made young again since ``cutoff``; steps b to d of the module docstring."""
        links = list(links)
        if not links:
            return []
        if not self.ctx.db.is_sqlite:
            # Wait for uploads and mounts of these digests in flight (they hold the blob row until they commit their
            # review); those that come later wait for this batch and link afresh. FOR NO KEY UPDATE leaves the
            # FOR KEY SHARE that inserting a link or a manifest's reference takes.
            conn.execute(
                sa.select(blobs.c.digest)
                .where(blobs.c.digest.in_(sorted({d for _, d in links})))
                .order_by(blobs.c.digest)
                .with_for_update(key_share=True)
            )
        locked = conn.execute(
            self._for_update(
                sa.select(repository_blobs.c.repository_id, repository_blobs.c.digest)
                .where(_is_link(links))
                .order_by(repository_blobs.c.repository_id, repository_blobs.c.digest)
            )
        ).all()
        if not locked:
            return []
        # A new statement, so it sees every manifest (and review) committed while the locks above were awaited.
        doomed: list[Link] = [
            tuple(row)
            for row in conn.execute(
                sa.select(repository_blobs.c.repository_id, repository_blobs.c.digest).where(
                    _is_link(locked), ~_LINK_REFERENCED, ~_link_is_young(cutoff)
                )
            )
        ]
        if doomed and not dry_run:
            conn.execute(sa.delete(repository_blobs).where(_is_link(doomed)))
        return doomed

    # ---- blobs ------------------------------------------------------------------------------------------------------
    def _delete_blobs(self, cutoff: float, dry_run: bool, report: GcReport, stopping: Callable[[], bool]) -> None:
        self._delete_copies(cutoff, dry_run, report)
        self._delete_wraps(cutoff, dry_run, report, stopping)
        linked = sa.exists().where(repository_blobs.c.digest == blobs.c.digest)
        with self.ctx.db.read() as conn:
            candidates = [
                tuple(row)
                for row in conn.execute(sa.select(blobs.c.digest, blobs.c.size).where(~_blob_is_young(cutoff), ~linked))
            ]
            if dry_run and report.doomed_links:
                # Blobs whose every link this run found unreferenced would be freed too.
                by_digest: dict[str, list] = {}
                doomed_digests = sorted({d for _, d in report.doomed_links})
                for start in range(0, len(doomed_digests), BATCH):
                    for row in conn.execute(
                        sa.select(
                            repository_blobs.c.repository_id,
                            repository_blobs.c.digest,
                            blobs.c.size,
                            blobs.c.created_at,
                        )
                        .join(blobs, blobs.c.digest == repository_blobs.c.digest)
                        .where(repository_blobs.c.digest.in_(doomed_digests[start : start + BATCH]))
                    ):
                        by_digest.setdefault(row.digest, []).append(row)
                for digest, links in by_digest.items():
                    if links[0].created_at <= cutoff and all(
                        (r.repository_id, digest) in report.doomed_links for r in links
                    ):
                        candidates.append((digest, links[0].size))
        if dry_run:
            for digest, size in candidates:
                report.blobs_deleted += 1
                report.bytes_reclaimed += size
                report.deleted_digests.append(digest)
            return
        sizes = dict(candidates)
        digests = sorted(sizes)
        for start in range(0, len(digests), BATCH):
            if stopping():
                return
            try:
                deleted = self._delete_blob_batch(digests[start : start + BATCH], cutoff)
            except sa.exc.OperationalError as exc:
                if not _is_deadlock(exc):
                    raise
                log.info("a blob batch lost a deadlock; its blobs are collected by the next run")
                continue
            for digest in deleted:
                report.blobs_deleted += 1
                report.bytes_reclaimed += sizes[digest]
                report.deleted_digests.append(digest)

    def _delete_blob_batch(self, digests: list[str], cutoff: float) -> Sequence[str]:
        """Delete the rows of blobs nothing uses and bury their stored objects, in one transaction; storage is not
        touched here (``_execute_tombstones`` does it after the commit)."""
        with self.ctx.transaction(invalidates=True) as tx:
            conn = tx.conn
            locked = (
                conn.execute(
                    self._for_update(
                        sa.select(blobs.c.digest).where(blobs.c.digest.in_(digests)).order_by(blobs.c.digest)
                    )
                )
                .scalars()
                .all()
            )
            if not locked:
                return []
            # A new statement, so it sees every link and manifest committed while the locks were awaited.
            rows = conn.execute(
                sa.select(blobs.c.digest, blobs.c.archive_path).where(
                    blobs.c.digest.in_(locked), ~_BLOB_USED, ~_blob_is_young(cutoff)
                )
            ).all()
            unused = [r.digest for r in rows]
            if unused:
                copies = conn.execute(
                    sa.select(blob_copies.c.digest, blob_copies.c.keyspace).where(blob_copies.c.digest.in_(unused))
                ).all()
                conn.execute(sa.delete(blob_copies).where(blob_copies.c.digest.in_(unused)))
                conn.execute(sa.delete(blob_keys).where(blob_keys.c.digest.in_(unused)))  # the accounts' wraps
                conn.execute(sa.delete(blobs).where(blobs.c.digest.in_(unused)))
                # the blob's current copy (standard storage, or the archive copy its row named) and its key copies
                entries = [(r.digest, r.archive_path or blob_path(r.digest)) for r in rows]
                entries += [(d, paths.keyed_path(k, d)) for d, k in copies]
                tombstones.bury(conn, entries, self.ctx.clock(), "blob-delete")
        return unused

    def _delete_copies(self, cutoff: float, dry_run: bool, report: GcReport) -> None:
        """A blob's copy under a customer key (KMS, KMS_DSSE) that no repository of that key links any more goes,
        while the blob lives on for repositories of other keys: the row is deleted under the blob row's lock (held
        by an upload or mount that links it meanwhile) and its object buried, as a blob's are."""
        with self.ctx.db.read() as conn:
            keyed = conn.execute(
                sa.select(repositories.c.id, repositories.c.encryption_type, repositories.c.kms_key).where(
                    repositories.c.encryption_type != "AES256"
                )
            ).all()
            spaces = conn.execute(sa.select(blob_copies.c.keyspace).distinct()).scalars().all()
        holders: dict[str, list[int]] = {}
        for row in keyed:
            space = keyspace_of(row.encryption_type, row.kms_key, "")
            if space is not None:
                holders.setdefault(space.name, []).append(row.id)
        for space_name in spaces:
            ids = holders.get(space_name, [])

            def unlinked(ids: list[int] = ids) -> sa.ColumnElement[bool]:
                return ~sa.exists().where(
                    repository_blobs.c.digest == blob_copies.c.digest, repository_blobs.c.repository_id.in_(ids)
                )

            try:
                report.copies_deleted += self._delete_keyspace_copies(space_name, unlinked, cutoff, dry_run)
            except sa.exc.OperationalError as exc:
                if not _is_deadlock(exc):
                    raise
                log.info("a copy batch of keyspace %s lost a deadlock; the next run collects its copies", space_name)

    def _delete_keyspace_copies(
        self, space_name: str, unlinked: Callable[[], sa.ColumnElement[bool]], cutoff: float, dry_run: bool
    ) -> int:
        """One keyspace's unlinked copies (one batch transaction); returns how many went."""
        gone: list[str] = []
        with self._batch(dry_run) as conn:
            doomed = (
                conn.execute(
                    sa.select(blob_copies.c.digest).where(
                        blob_copies.c.keyspace == space_name, blob_copies.c.created_at <= cutoff, unlinked()
                    )
                )
                .scalars()
                .all()
            )
            if doomed:
                conn.execute(
                    self._for_update(
                        sa.select(blobs.c.digest).where(blobs.c.digest.in_(doomed)).order_by(blobs.c.digest)
                    )
                ).all()
                gone = list(  # again after the locks: a link committed while they were awaited keeps its copy
                    conn.execute(
                        sa.select(blob_copies.c.digest).where(
                            blob_copies.c.keyspace == space_name, blob_copies.c.digest.in_(doomed), unlinked()
                        )
                    ).scalars()
                )
            if gone:
                conn.execute(
                    sa.delete(blob_copies).where(blob_copies.c.keyspace == space_name, blob_copies.c.digest.in_(gone))
                )
                entries = [(d, paths.keyed_path(space_name, d)) for d in gone]
                tombstones.bury(conn, entries, self.ctx.clock(), "copy-delete")
        return len(gone)

    def _delete_wraps(self, cutoff: float, dry_run: bool, report: GcReport, stopping: Callable[[], bool]) -> None:
        """An account's wrap of a service-key object's key (``blob_keys``, soko.registry.account_keys) goes once no
        AES256 repository of that account links the digest: the account's key then opens only what it holds, so
        shredding another account's key leaves nothing of that one's readable through a stale wrap. Deleted under
        the blob row's lock, which a mount or upload completion that links (and wraps) the digest holds too."""

        def unheld() -> sa.ColumnElement[bool]:
            return ~sa.exists().where(
                repository_blobs.c.digest == blob_keys.c.digest,
                repository_blobs.c.repository_id == repositories.c.id,
                repositories.c.account_id == blob_keys.c.account_id,
                repositories.c.encryption_type == "AES256",
            )

        while not stopping():
            gone: list[tuple[str, str]] = []
            with self._batch(dry_run) as conn:
                doomed = conn.execute(
                    sa.select(blob_keys.c.digest, blob_keys.c.account_id)
                    .where(blob_keys.c.created_at <= cutoff, unheld())
                    .order_by(blob_keys.c.digest, blob_keys.c.account_id)
                    .limit(_WRAP_BATCH)
                ).all()
                if not doomed:
                    return
                digests = sorted({d for d, _ in doomed})
                conn.execute(
                    self._for_update(
                        sa.select(blobs.c.digest).where(blobs.c.digest.in_(digests)).order_by(blobs.c.digest)
                    )
                ).all()
                again = sa.tuple_(blob_keys.c.digest, blob_keys.c.account_id).in_([tuple(r) for r in doomed])
                gone = [
                    tuple(r)
                    for r in conn.execute(sa.select(blob_keys.c.digest, blob_keys.c.account_id).where(again, unheld()))
                ]
                if gone:
                    conn.execute(
                        sa.delete(blob_keys).where(sa.tuple_(blob_keys.c.digest, blob_keys.c.account_id).in_(gone))
                    )
            report.wraps_deleted += len(gone)
            if dry_run or len(doomed) < _WRAP_BATCH:
                return

    def _restore_trash(self) -> int:
        """Legacy: collectors before tombstones moved content to ``trash/`` under the row lock and could die before
        committing. Content whose row still exists goes back; the rest is deleted. No row lock is held: the content
        is digest-addressed, so a concurrent re-push moves identical bytes to the same place."""
        try:
            entries = self.ctx.storage.list(paths.TRASH)
        except PathNotFound:
            return 0
        restored = 0
        for path in entries:
            digest = paths.trash_digest(path)
            with self.ctx.db.read() as conn:
                exists = conn.execute(sa.select(blobs.c.digest).where(blobs.c.digest == digest)).first() is not None
            try:
                if exists:
                    self.ctx.storage.move(path, blob_path(digest))
                    restored += 1
                else:
                    self.ctx.storage.delete(path)
            except PathNotFound:
                pass
        return restored

    # ---- storage sweep ----------------------------------------------------------------------------------------------
    def _sweep_storage(self, cutoff: float, dry_run: bool, report: GcReport, stopping: Callable[[], bool]) -> None:
        storage = self.ctx.storage
        for upload_id, newest in self._upload_data(storage):
            if stopping():
                return
            with self.ctx.db.read() as conn:
                live = conn.execute(sa.select(uploads.c.id).where(uploads.c.id == upload_id)).first() is not None
            if live or newest > cutoff:
                continue
            report.stray_files_deleted += 1
            if not dry_run:
                try:
                    storage.delete(paths.upload_dir(upload_id))
                except PathNotFound:  # the upload completed or was cancelled since the listing
                    pass
        batch: list[str] = []
        for info in storage.walk(paths.BLOBS):  # lazily, page by page: no list of every blob in memory
            digest = paths.blob_digest(info.path)
            if digest is not None and info.modified <= cutoff:
                batch.append(digest)
            if len(batch) == BATCH:
                if stopping():
                    return
                self._bury_strays(batch, dry_run, report)
                batch = []
        self._bury_strays(batch, dry_run, report)
        self._sweep_copies(cutoff, dry_run, report, stopping)
        self._sweep_archive(cutoff, dry_run, report, stopping)

    def _sweep_copies(self, cutoff: float, dry_run: bool, report: GcReport, stopping: Callable[[], bool]) -> None:
        """Tombstone the customer-key copies (``keyed/``) older than the grace period that have no row and no
        tombstone (the executor checks the row again before it deletes: a copy committed meanwhile stays)."""
        strays: list[tuple[str, str]] = []
        for info in self.ctx.storage.walk(paths.KEYED):
            found = paths.keyed_copy(info.path)
            if found is None or info.modified > cutoff:
                continue
            space, digest = found
            with self.ctx.db.read() as conn:
                known = (
                    conn.execute(
                        sa.select(blob_copies.c.digest).where(
                            blob_copies.c.digest == digest, blob_copies.c.keyspace == space
                        )
                    ).first()
                    or conn.execute(sa.select(gc_tombstones.c.id).where(gc_tombstones.c.path == info.path)).first()
                )
            if known is None:
                strays.append((digest, info.path))
            if stopping():
                return
        report.stray_files_deleted += len(strays)
        if strays and not dry_run:
            with self.ctx.db.write() as conn:
                tombstones.bury(conn, strays, self.ctx.clock(), "storage-sweep")

    def _sweep_archive(self, cutoff: float, dry_run: bool, report: GcReport, stopping: Callable[[], bool]) -> None:
        """Archive copies that are not their blob's current one (a move between tiers that crashed, or a row gone)."""
        batch: list[tuple[str, str]] = []
        for info in self.ctx.archive_storage.walk(paths.ARCHIVE_BLOBS):
            digest = paths.archive_blob_digest(info.path)
            if digest is not None and info.modified <= cutoff:
                batch.append((digest, info.path))
            if len(batch) == BATCH:
                if stopping():
                    return
                self._bury_stale_copies(batch, dry_run, report)
                batch = []
        self._bury_stale_copies(batch, dry_run, report)

    def _bury_stale_copies(self, copies: list[tuple[str, str]], dry_run: bool, report: GcReport) -> None:
        if not copies:
            return
        with self.ctx.db.read() as conn:
            current = set(
                conn.execute(
                    sa.select(blobs.c.archive_path).where(blobs.c.archive_path.in_([p for _, p in copies]))
                ).scalars()
            )
            pending = set(
                conn.execute(
                    sa.select(gc_tombstones.c.path).where(gc_tombstones.c.path.in_([p for _, p in copies]))
                ).scalars()
            )
        stale = [(d, p) for d, p in copies if p not in current and p not in pending]
        report.stray_files_deleted += len(stale)
        if stale and not dry_run:
            # The executor deletes a copy only if it is still not the current one when it claims the tombstone.
            with self.ctx.db.write() as conn:
                tombstones.bury(conn, stale, self.ctx.clock(), "storage-sweep")

    def _bury_strays(self, digests: list[str], dry_run: bool, report: GcReport) -> None:
        """Tombstone the blob files of ``digests`` that have no blob row (and no tombstone yet)."""
        if not digests:
            return
        with self.ctx.db.read() as conn:
            known = set(conn.execute(sa.select(blobs.c.digest).where(blobs.c.digest.in_(digests))).scalars())
            known |= set(
                conn.execute(sa.select(gc_tombstones.c.digest).where(gc_tombstones.c.digest.in_(digests))).scalars()
            )
        with self.ctx.db.read() as conn:
            # a standard copy of a blob whose row says it is in the archive tier: left by a crashed move
            archived = set(
                conn.execute(
                    sa.select(blobs.c.digest).where(blobs.c.digest.in_(digests), blobs.c.tier.is_not(None))
                ).scalars()
            )
            archived -= set(
                conn.execute(
                    sa.select(gc_tombstones.c.digest).where(
                        gc_tombstones.c.digest.in_(archived), gc_tombstones.c.path.like(paths.BLOBS + "/%")
                    )
                ).scalars()
            )
        if archived:
            report.stray_files_deleted += len(archived)
            if not dry_run:
                with self.ctx.db.write() as conn:
                    tombstones.bury(
                        conn, [(d, blob_path(d)) for d in sorted(archived)], self.ctx.clock(), "storage-sweep"
                    )
        strays = sorted(set(digests) - known)
        if not strays:
            return
        with self._batch(dry_run) as conn:
            # Probe by inserting the row: an upload completing this digest right now holds it (uncommitted, its
            # content maybe moved in already), so the insert waits for it and then finds it; a plain SELECT would see
            # no row and bury fresh content. Inserted probe rows are deleted again in this transaction, and a
            # completion that waited for them finds the tombstone and drops it (``tombstones.clear_for_new_blob``).
            found = []
            for digest in strays:
                probe = self.ctx.db.insert_ignore(blobs).values(digest=digest, size=-1, created_at=0.0)
                if conn.execute(probe.returning(blobs.c.digest)).first() is not None:
                    found.append(digest)
            if found:
                conn.execute(sa.delete(blobs).where(blobs.c.digest.in_(found)))
                tombstones.bury(conn, [(d, blob_path(d)) for d in found], self.ctx.clock(), "storage-sweep")
            report.stray_files_deleted += len(found)

    @staticmethod
    def _upload_data(storage: StorageDriver) -> Iterator[tuple[str, float]]:
        """(upload id, newest modification time) of each session's data, from one walk of ``uploads/`` (a session's
        files are contiguous in it)."""
        current, newest = None, 0.0
        for info in storage.walk(paths.UPLOADS):
            upload_id = paths.upload_id_of(info.path)
            if upload_id != current:
                if current is not None:
                    yield current, newest
                current, newest = upload_id, 0.0
            newest = max(newest, info.modified)
        if current is not None:
            yield current, newest
