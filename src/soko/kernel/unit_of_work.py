"""The unit of work: one domain write, and every effect it must have, in one object.

``DomainContext.transaction()`` opens a write transaction and yields a ``UnitOfWork``; the write does its SQL on
``tx.conn`` and declares its effects on ``tx``:

* ``review_links`` / ``review_repository_links`` — garbage-collection link reviews (rows in the same transaction,
  so a link can never be left unreferenced without a review: the grace period holds on every path);
* ``invalidate`` — readers' caches: ``NOTIFY`` inside the transaction (PostgreSQL), generation bump after commit;
* ``audit`` — an audit row, written in the same transaction;
* ``emit`` — an events-outbox row (``soko.kernel.events``), written in the same transaction, in commit order
  (delivered to webhooks by ``soko.events``, read by replication); after the commit the events generation moves
  (``soko.meta.changes``), which wakes delivery.

Rows are written just before commit, so a write that raises (rolls back) leaves no reviews, audit rows or
events; the cache bump happens only after a commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import sqlalchemy as sa

from soko.kernel.events import Event
from soko.kernel.link_reviews import enqueue_link_reviews, enqueue_repository_reviews
from soko.meta.changes import CHANNEL, EVENTS_CHANNEL, PostgresListener
from soko.meta.schema import audit_events, event_outbox

if TYPE_CHECKING:
    from soko.kernel.context import DomainContext

OUTBOX_LOCK = 0x736F6B6F_6F757462  # pg_advisory_xact_lock key of outbox writes ("sokooutb")


class UnitOfWork:
    def __init__(self, ctx: DomainContext, conn: sa.Connection, *, invalidates: bool = False) -> None:
        self.ctx = ctx
        self.conn = conn
        self.now = ctx.clock()
        self.invalidates = invalidates
        self.notified: tuple[PostgresListener, str] | None = None  # this write's NOTIFY, to wait for after commit
        self.events: list[Event] = []
        self._audit: list[dict] = []

    def review_links(self, repository_id: int, digests: Iterable[str], reason: str) -> None:
        enqueue_link_reviews(self.conn, repository_id, digests, self.now, reason)

    def review_repository_links(self, repository_id: int, reason: str) -> None:
        enqueue_repository_reviews(self.conn, repository_id, self.now, reason)

    def invalidate(self) -> None:
        self.invalidates = True

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def audit(self, event: str, principal: str, action: str, resource: str, reason: str) -> None:
        """An allowed action the domain took on its own (e.g. a lifecycle expiry); requests are audited by the
        authorizer's batched log instead."""
        self._audit.append(
            {
                "at": self.now,
                "event": event,
                "principal": principal,
                "action": action,
                "resource": resource,
                "decision": "allow",
                "reason": reason[:1024],
                "count": 1,
            }
        )

    def before_commit(self) -> None:
        if self.events:
            if not self.ctx.db.is_sqlite:
                # Outbox rows commit in id order: delivery reads the outbox with a cursor (soko.events), which a
                # row committing after a higher id was read would slip under. The lock is held from the id's
                # allocation to the commit; it is the write's last step (the commit's NOTIFY serialises as well).
                self.conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": OUTBOX_LOCK})
            region = self.ctx.settings.region
            self.conn.execute(sa.insert(event_outbox), [e.row(self.now, region) for e in self.events])
            if not self.ctx.db.is_sqlite:  # wakes delivery on other nodes (this host's wakes on the generation file)
                self.conn.execute(sa.text(f"NOTIFY {EVENTS_CHANNEL}"))
        if self._audit:
            self.conn.execute(sa.insert(audit_events), self._audit)
        if self.invalidates and not self.ctx.db.is_sqlite:
            listener = self.ctx.generation.listener
            self.notified = (listener, listener.expect()) if listener is not None else None
            self.conn.execute(
                sa.text("SELECT pg_notify(:channel, :payload)"),
                {"channel": CHANNEL, "payload": self.notified[1] if self.notified else ""},
            )
