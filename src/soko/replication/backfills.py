"""ECR's replication backfills: StartReplicationBackfill, StopReplicationBackfill, DescribeReplicationBackfillResults
and ListReplicationBackfills (``soko replication backfill`` is the same work without the record).

A backfill replicates a registry's existing images that its replication configuration names to one of its
destinations. Starting one writes its row (PREPARING) and queues the one-shot leased job ``replication_backfill``
in the same transaction; the job lists the images (``Replicator.backfill``, to that destination only), records each
as an item and requests its replication (the ``replication`` jobs copy them, as for a push), then the backfill is
IN_PROGRESS, and COMPLETE once every item's replication has ended (COMPLETE or FAILED: its per-image result). A
crash re-runs the job, which is idempotent. Stopping one stops the listing; replications already requested go on to
their end (as ECR's). One backfill at a time per destination region; ended ones are kept 90 days.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import sqlalchemy as sa

from soko.errors import SokoError
from soko.kernel import job_queue
from soko.meta.schema import replication_backfill_items as items
from soko.meta.schema import replication_backfills as t
from soko.meta.schema import replication_status as st
from soko.registry.models import RepoRef
from soko.replication.rules import Destination
from soko.replication.service import Replicator

KIND = "replication_backfill"
PREPARING, IN_PROGRESS, COMPLETE, STOPPED = "PREPARING", "IN_PROGRESS", "COMPLETE", "STOPPED"
RUNNING = (PREPARING, IN_PROGRESS)
RETENTION = 90 * 86400.0


class BackfillNotFound(SokoError):
    pass


class BackfillInProgress(SokoError):
    pass


class BackfillInvalidStatus(SokoError):
    pass


class DestinationNotConfigured(SokoError):
    pass


@dataclass(frozen=True)
class Backfill:
    id: str
    account_id: str
    destination: Destination
    status: str
    failure_code: str | None
    started_at: float
    ended_at: float | None
    total: int
    completed: int
    failed: int
    failure_codes: list[str]


def _in_progress(dest: Destination, running_id: str | None) -> BackfillInProgress:
    which = f" ({running_id})" if running_id else ""
    return BackfillInProgress(f"A replication backfill to region {dest.region} is already in progress{which}")


class Backfills:
    def __init__(self, replicator: Replicator) -> None:
        self.replicator = replicator
        self.ctx = replicator.ctx

    def start(self, account_id: str, dest: Destination) -> Backfill:
        configured = {
            (d["region"], d["registryId"]) for rule in self.replicator.rules(account_id) for d in rule["destinations"]
        }
        if (dest.region, dest.registry_id) not in configured:
            raise DestinationNotConfigured(
                f"The destination {dest.region}/{dest.registry_id} is not in the replication configuration of the "
                f"registry with id '{account_id}'"
            )
        backfill_id = str(uuid.uuid4())
        now = self.ctx.clock()
        try:
            with self.ctx.write() as conn:
                self._refuse_running(conn, account_id, dest)
                conn.execute(
                    sa.insert(t).values(
                        id=backfill_id,
                        account_id=account_id,
                        dest_region=dest.region,
                        dest_registry=dest.registry_id,
                        status=PREPARING,
                        started_at=now,
                    )
                )
                job_queue.enqueue(self.ctx.db, conn, KIND, backfill_id, now)
        except sa.exc.IntegrityError:  # a concurrent start for the region committed first (unique index, 0032)
            with self.ctx.db.read() as conn:
                running = self._running(conn, account_id, dest)
            raise _in_progress(dest, running.id if running is not None else None) from None
        return self.get(account_id, backfill_id)

    @staticmethod
    def _running(conn: sa.Connection, account_id: str, dest: Destination) -> sa.Row | None:
        return conn.execute(
            sa.select(t).where(t.c.account_id == account_id, t.c.dest_region == dest.region, t.c.status.in_(RUNNING))
        ).first()

    def _refuse_running(self, conn: sa.Connection, account_id: str, dest: Destination) -> None:
        """Raise BackfillInProgress while a backfill to the region runs (one whose replications have all ended is
        made COMPLETE first: nobody need have asked DescribeReplicationBackfillResults)."""
        running = self._running(conn, account_id, dest)
        if running is None:
            return
        if running.status == IN_PROGRESS:
            total, completed, failed, _ = self._counts(conn, running)
            if completed + failed == total:
                ended = {"status": COMPLETE, "ended_at": self.ctx.clock()}
                conn.execute(sa.update(t).where(t.c.id == running.id).values(**ended))
                return
        raise _in_progress(dest, running.id)

    def stop(self, account_id: str, backfill_id: str) -> Backfill:
        with self.ctx.write() as conn:
            row = self._row(conn, account_id, backfill_id)
            if row.status not in RUNNING:
                raise BackfillInvalidStatus(
                    f"The replication backfill {backfill_id} is {row.status}: only one in progress can be stopped"
                )
            conn.execute(sa.update(t).where(t.c.id == backfill_id).values(status=STOPPED, ended_at=self.ctx.clock()))
        return self.get(account_id, backfill_id)

    def get(self, account_id: str, backfill_id: str) -> Backfill:
        with self.ctx.db.read() as conn:
            row = self._row(conn, account_id, backfill_id)
            counts = self._counts(conn, row)
        total, completed, failed, codes = counts
        if row.status == IN_PROGRESS and completed + failed == total:  # every replication it asked for ended
            with self.ctx.write() as conn:
                conn.execute(
                    sa.update(t)
                    .where(t.c.id == backfill_id, t.c.status == IN_PROGRESS)
                    .values(status=COMPLETE, ended_at=self.ctx.clock())
                )
                row = self._row(conn, account_id, backfill_id)
        return Backfill(
            row.id,
            row.account_id,
            Destination(row.dest_region, row.dest_registry),
            row.status,
            row.failure_code,
            row.started_at,
            row.ended_at,
            total,
            completed,
            failed,
            codes,
        )

    def results(
        self, account_id: str, backfill_id: str, status: str | None, offset: int, limit: int
    ) -> tuple[Backfill, list[tuple[str, str, str, str | None]], bool]:
        """The backfill, and a page of its per-image results (repository, digest, COMPLETE|FAILED, failure code):
        none until it has ended, as ECR's; whether more follow."""
        backfill = self.get(account_id, backfill_id)
        if backfill.status in RUNNING:
            return backfill, [], False
        with self.ctx.db.read() as conn:
            query = self._joined(backfill_id, backfill.account_id, backfill.destination).where(
                st.c.status.in_([status] if status else ["COMPLETE", "FAILED"])
            )
            rows = conn.execute(
                query.order_by(items.c.repository, items.c.digest).offset(offset).limit(limit + 1)
            ).all()
        out = [(r.repository, r.digest, r.status, r.failure_code if r.status == "FAILED" else None) for r in rows]
        return backfill, out[:limit], len(out) > limit

    def page(self, account_id: str, offset: int, limit: int) -> tuple[list[Backfill], bool]:
        """The account's backfills, newest first; those ended over 90 days ago are gone."""
        with self.ctx.write() as conn:
            conn.execute(sa.delete(t).where(t.c.ended_at < self.ctx.clock() - RETENTION))
            ids = (
                conn.execute(
                    sa.select(t.c.id)
                    .where(t.c.account_id == account_id)
                    .order_by(t.c.started_at.desc(), t.c.id)
                    .offset(offset)
                    .limit(limit + 1)
                )
                .scalars()
                .all()
            )
        return [self.get(account_id, i) for i in ids[:limit]], len(ids) > limit

    # ---- the job ----------------------------------------------------------------------------------------------
    def run(self, key: str) -> str | None:
        """Job ``replication_backfill`` (key: the backfill's id): list and request, then IN_PROGRESS."""
        with self.ctx.db.read() as conn:
            row = conn.execute(sa.select(t).where(t.c.id == key)).first()
        if row is None or row.status != PREPARING:
            self._forget(key)
            return None
        dest = Destination(row.dest_region, row.dest_registry)

        def note(conn: sa.Connection, ref: RepoRef, digests: list[str]) -> None:
            for digest in digests:
                conn.execute(
                    self.ctx.db.insert_ignore(items).values(backfill_id=key, repository=ref.name, digest=digest)
                )

        def halted() -> bool:
            with self.ctx.db.read() as conn:
                return conn.execute(sa.select(t.c.status).where(t.c.id == key)).scalar() != PREPARING

        images, requested = self.replicator.backfill(row.account_id, only=dest, note=note, halt=halted)
        with self.ctx.write() as conn:
            conn.execute(sa.update(t).where(t.c.id == key, t.c.status == PREPARING).values(status=IN_PROGRESS))
            job_queue.forget(conn, KIND, key)
        return f"replication backfill {key}: {images} image(s) looked at, {requested} replication(s) requested"

    # ---- helpers ----------------------------------------------------------------------------------------------
    def _forget(self, key: str) -> None:
        with self.ctx.write() as conn:
            job_queue.forget(conn, KIND, key)

    @staticmethod
    def _row(conn: sa.Connection, account_id: str, backfill_id: str) -> sa.Row:
        row = conn.execute(sa.select(t).where(t.c.id == backfill_id, t.c.account_id == account_id)).first()
        if row is None:
            raise BackfillNotFound(
                f"The replication backfill with id '{backfill_id[:64]}' does not exist in the registry with id "
                f"'{account_id}'"
            )
        return row

    @staticmethod
    def _joined(backfill_id: str, account_id: str, dest: Destination) -> sa.Select:
        return (
            sa.select(items.c.repository, items.c.digest, st.c.status, st.c.failure_code)
            .select_from(items)
            .join(
                st,
                sa.and_(
                    st.c.account_id == account_id,
                    st.c.repository == items.c.repository,
                    st.c.digest == items.c.digest,
                    st.c.dest_region == dest.region,
                    st.c.dest_registry == dest.registry_id,
                ),
                isouter=True,
            )
            .where(items.c.backfill_id == backfill_id)
        )

    def _counts(self, conn: sa.Connection, row: sa.Row) -> tuple[int, int, int, list[str]]:
        """(items, COMPLETE, FAILED, failure codes), counted by the database: a backfill may hold every image of
        the registry, and Describe/List are polled."""
        joined = self._joined(row.id, row.account_id, Destination(row.dest_region, row.dest_registry)).subquery()
        by_status = {
            status: count
            for status, count in conn.execute(
                sa.select(joined.c.status, sa.func.count()).group_by(joined.c.status)
            ).all()
        }
        reasons = conn.execute(sa.select(joined.c.failure_code).where(joined.c.status == "FAILED").distinct()).scalars()
        codes = sorted({reason.partition(":")[0] for reason in reasons if reason})
        return sum(by_status.values()), by_status.get("COMPLETE", 0), by_status.get("FAILED", 0), codes
