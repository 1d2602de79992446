"""The outbox as a stream of events in commit order: what ``soko events tail`` (or any front end) reads.

Front ends never read the ``event_outbox`` table themselves; they ask here. A position is an outbox id: the events
after it are the ones not yet seen, in the order their changes committed (``UnitOfWork.before_commit``).
``follow`` waits on the events generation (``soko.meta.changes``) between reads, so an idle tail costs no queries.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import sqlalchemy as sa

from soko.errors import SokoError
from soko.events import patterns
from soko.kernel.context import DomainContext
from soko.meta.schema import event_outbox

PAGE = 500
MAX_LAST = 100_000


class InvalidPosition(SokoError):
    """A position or count ``soko events tail`` cannot start from."""


@dataclass(frozen=True)
class StoredEvent:
    position: int  # the outbox id: resume after it
    body: str  # the envelope's JSON, byte for byte what webhooks receive


class EventStream:
    def __init__(self, ctx: DomainContext) -> None:
        self.ctx = ctx

    def start(self, account_id: str | None, *, last: int = 0, after: int | None = None) -> int:
        """Where to start: after ``after`` if given, else before the account's ``last`` newest events (every
        account's when None; 0: the current end)."""
        if after is not None:
            if isinstance(after, bool) or not isinstance(after, int) or after < 0:
                raise InvalidPosition("--after is an outbox id (0 or more)")
            return after
        if isinstance(last, bool) or not isinstance(last, int) or not 0 <= last <= MAX_LAST:
            raise InvalidPosition(f"--last is 0 to {MAX_LAST}")
        with self.ctx.db.read() as conn:
            if last == 0:
                return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(event_outbox.c.id), 0))).scalar_one())
            query = sa.select(event_outbox.c.id)
            if account_id is not None:
                query = query.where(event_outbox.c.account_id == account_id)
            first = conn.execute(query.order_by(event_outbox.c.id.desc()).limit(1).offset(last - 1)).scalar()
            return int(first) - 1 if first is not None else 0  # fewer than ``last``: all of them

    def read(self, account_id: str | None, after: int, limit: int = PAGE) -> list[StoredEvent]:
        """Up to ``limit`` events after ``after`` in commit order: one account's, or every account's (None)."""
        query = sa.select(event_outbox.c.id, event_outbox.c.body).where(event_outbox.c.id > after)
        if account_id is not None:
            query = query.where(event_outbox.c.account_id == account_id)
        with self.ctx.db.read() as conn:
            rows = conn.execute(query.order_by(event_outbox.c.id).limit(max(1, min(limit, PAGE)))).all()
        return [StoredEvent(row.id, row.body) for row in rows]

    def follow(
        self,
        account_id: str | None,
        after: int,
        *,
        pattern: dict | None = None,
        poll: float = 1.0,
        stop: Callable[[], bool] = lambda: False,
    ) -> Iterator[StoredEvent]:
        """The events after ``after`` (those ``pattern`` selects), then each new one as it commits, until ``stop``.
        Between reads it waits for the events generation to move (on this host at once; a change on another node
        is seen by the next read, at most ``poll`` seconds later)."""
        generation = self.ctx.generation
        while not stop():
            seen = generation.events()
            page = self.read(account_id, after)
            for event in page:
                after = event.position
                if pattern is None or patterns.matches(pattern, json.loads(event.body)):
                    yield event
            if len(page) < PAGE:
                generation.wait_events(seen, poll)
