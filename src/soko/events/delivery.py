"""Delivering the outbox to webhook targets: one leased job per target (``soko.jobs``), at least once, in order.

Each target has a cursor, ``position``: the outbox id up to which it is done. The outbox commits in id order (an
advisory lock in ``UnitOfWork.before_commit`` on PostgreSQL; SQLite has one writer), so reading ``id > position``
in id order misses nothing and keeps the order of the changes — per repository, and across them. A pass (``drain``)

1. reads the target, whether it has due redeliveries, and (unless the head event is backing off) up to ``BATCH``
   events after ``position``, on one connection;
2. sends the dead letters ``soko events redeliver`` queued that are due (each with its own attempts and backoff);
3. skips the events of other accounts and those the target's pattern does not select, and POSTs the rest one at a
   time on one kept-alive connection (``webhook.Session``). A 2xx moves ``position`` past the event (written once
   per ``WRITE_EVERY`` deliveries, at a failure and at the end of the batch); a failure records the attempt and a
   backoff (``event_retry_base`` doubling to ``event_retry_max``) and stops — later events wait, which is what
   keeps the order; after ``max_attempts`` the event becomes a dead letter and ``position`` moves past it.

A run of the job passes once, then waits for the *events generation* (``soko.meta.changes``: it moves after every
commit that wrote outbox rows, on this host through the shared file, from other nodes through ``NOTIFY
soko_events``) and passes again when it moves — the events that came in meanwhile form the next batch. Waiting
costs no query; a pass also runs every ``poll`` seconds without a wake (a backoff that has ended, a redelivery
queued, a notification lost while the listener reconnected). After ``linger`` seconds the run ends and the job is
due again at once (the runner's next tick), so targets beyond a process's ``concurrency`` take turns.

Every move of ``position`` is conditional on the value read (``WHERE position = :seen``): a runner that lost its
lease (a stall) and comes back finds it moved and stops. A process that dies between a POST and the write
of ``position`` leaves it where it was: the next runner sends those events again, with the same ids — receivers
dedupe.
Backoff times are the domain clock's (``ctx.clock``), so tests move time instead of sleeping.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

import sqlalchemy as sa

from soko.events import patterns, webhook
from soko.events.targets import KIND, Targets
from soko.jobs.runner import JobKind, stopping
from soko.kernel.context import DomainContext
from soko.meta.schema import event_dead_letters, event_outbox, event_targets
from soko.meta.schema.base import Timestamp

log = logging.getLogger("soko.events")
BATCH = 200
RETRY_BATCH = 20
WRITE_EVERY = 50  # deliveries recorded in one write at most (a crash resends what is not written; receivers dedupe)
FLUSH_AFTER = 0.5  # seconds a run keeps progress unwritten, gathering the deliveries of several wakes into one write
WAIT, AGAIN, STOP = "wait", "again", "stop"  # what a run does after a pass


@dataclass
class _Cursor:
    """A run's place in the outbox: ``seen`` is the position the target's row holds (every write is conditional on
    it), ``passed`` how far this run has delivered or skipped, ``done`` the deliveries not written yet."""

    seen: int
    passed: int
    done: list[tuple[float, float]] = field(default_factory=list)  # (delivered at, lag)
    since: float = 0.0  # monotonic time of the first progress not written yet

    def unwritten(self) -> bool:
        return self.passed != self.seen

    def due(self) -> bool:
        """Progress has waited ``FLUSH_AFTER`` to be written."""
        return self.unwritten() and time.monotonic() >= self.since + FLUSH_AFTER

    def move(self, outbox_id: int, delivered: tuple[float, float] | None = None) -> None:
        if not self.unwritten():
            self.since = time.monotonic()
        self.passed = outbox_id
        if delivered is not None:
            self.done.append(delivered)

    def progress(self) -> dict:
        if not self.done:
            return {}
        at, lag = self.done[-1]
        return {"delivered": event_targets.c.delivered + len(self.done), "last_delivered_at": at, "last_lag": lag}

    def written(self) -> None:
        self.seen = self.passed
        self.done.clear()


def _pass_statement() -> sa.Select:
    """One statement per pass: the target, whether a redelivery is due, and (unless its head is backing off) the
    events after ``after`` — or after the row's position when that is None. Built once: building it costs more
    CPU than running it."""
    t, o, letters = event_targets, event_outbox, event_dead_letters.c
    now = sa.bindparam("now", type_=Timestamp)
    redelivery_due = (
        sa.exists()
        .where(
            letters.target_id == t.c.id,
            letters.status == "retry",
            sa.or_(letters.next_attempt_at.is_(None), letters.next_attempt_at <= now),
        )
        .label("redelivery_due")
    )
    after = sa.func.coalesce(sa.bindparam("after", type_=sa.BigInteger), t.c.position)
    ready = sa.or_(t.c.next_attempt_at.is_(None), t.c.next_attempt_at <= now)
    return (
        sa.select(
            t,
            redelivery_due,
            o.c.id.label("outbox_id"),
            o.c.event_id,
            o.c.account_id.label("event_account"),
            o.c.created_at.label("event_created_at"),
            o.c.body,
        )
        .select_from(t.outerjoin(o, sa.and_(o.c.id > after, ready)))
        .where(t.c.id == sa.bindparam("target"))
        .order_by(o.c.id)
        .limit(BATCH)
    )


_PASS = _pass_statement()


class Delivery:
    def __init__(
        self, ctx: DomainContext, targets: Targets | None = None, *, linger: float = 60.0, poll: float = 1.0
    ) -> None:
        self.ctx = ctx
        self.targets = targets or Targets(ctx)
        self.linger = linger
        self.poll = poll

    def job(self, concurrency: int = 16) -> JobKind:
        """The job kind: each target's job is due every second, and runs ``linger`` seconds at most. A waiting run
        costs a thread and no queries, so a process serves many targets at once; its lease is renewed by the
        runner's heartbeat while it lingers."""
        interval = 1.0 if self.ctx.settings.events_enabled else 0.0
        return JobKind(KIND, self.run, interval, concurrency=concurrency, lease=60.0, keys=())

    def backoff(self, attempts: int) -> float:
        settings = self.ctx.settings
        return float(min(settings.event_retry_max, settings.event_retry_base * 2 ** max(attempts - 1, 0)))

    def run(self, key: str) -> str | None:
        """One run of target ``key``'s job: deliver what is due, then again whenever events are committed."""
        target_id = int(key)
        generation = self.ctx.generation
        deadline = time.monotonic() + self.linger
        sent = 0
        cursor: _Cursor | None = None
        with webhook.Session(self.targets.allow) as session:
            try:
                while True:
                    seen = generation.events()  # before the pass: a commit during it moves this, and we pass again
                    moved, then, cursor = self._pass(target_id, session, cursor)
                    sent += moved
                    if then == STOP:
                        break
                    end = min(deadline, time.monotonic() + self.poll)
                    if cursor is not None and cursor.unwritten():
                        end = min(end, cursor.since + FLUSH_AFTER)
                    while then == WAIT and not stopping() and (left := end - time.monotonic()) > 0:
                        if generation.wait_events(seen, min(left, 0.25)):  # 0.25: stopping() is asked between
                            break
                    if cursor is not None and cursor.due() and not self._flush(target_id, cursor):
                        cursor = None
                        break
                    if stopping() or time.monotonic() >= deadline:
                        break
            finally:
                if cursor is not None and cursor.unwritten():
                    self._flush(target_id, cursor)
        return f"delivered {sent} event(s) to target {target_id}" if sent else None

    # ---- one pass ----------------------------------------------------------------------------------------------
    def drain(self, target_id: int, session: webhook.Session | None = None) -> int:
        """Deliver what is due now for the target and record it; returns how many were delivered."""
        if session is None:
            with webhook.Session(self.targets.allow) as own:
                return self.drain(target_id, own)
        count, _, cursor = self._pass(target_id, session, None)
        if cursor is not None and cursor.unwritten():
            self._flush(target_id, cursor)
        return count

    def _pass(
        self, target_id: int, session: webhook.Session, cursor: _Cursor | None
    ) -> tuple[int, str, _Cursor | None]:
        """Deliver what is due now; returns how many were delivered, what the run does next — ``WAIT`` for new
        events, pass ``AGAIN`` at once (the batch was full: more are waiting) or ``STOP`` (the target is gone or
        off, or another runner moved it on) — and the cursor, whose progress may not be written yet (``_flush``)."""
        now = self.ctx.clock()
        after = cursor.passed if cursor is not None else None  # None: the row's position (a run's first pass)
        with self.ctx.db.read() as conn:
            result = conn.execute(_PASS, {"target": target_id, "now": now, "after": after}).all()
        if not result:
            return 0, STOP, None
        target = result[0]
        if not target.enabled:
            return 0, STOP, cursor  # switched off: what this run did is still written
        if cursor is None:
            cursor = _Cursor(seen=target.position, passed=target.position)
        elif target.position != cursor.seen:
            self._lost(target_id)
            return 0, STOP, None
        rows = [row for row in result if row.outbox_id is not None]
        full = len(rows) == BATCH
        if not rows and not target.redelivery_due:
            return 0, WAIT, cursor
        secret = self.targets.secret(target)
        count = self._retries(target, secret, session) if target.redelivery_due else 0
        pattern = json.loads(target.pattern) if target.pattern else None
        attempts = target.attempts  # of the head event, written at each failure

        for row in rows:
            if row.event_account != target.account_id or (
                pattern is not None and not patterns.matches(pattern, json.loads(row.body))
            ):
                cursor.move(row.outbox_id)
                continue
            if stopping():
                full = False
                break
            outcome = session.send(target.url, row.body.encode(), row.event_id, secret, attempts + 1, target.timeout)
            now = self.ctx.clock()
            if outcome.ok:
                cursor.move(row.outbox_id, (now, max(now - row.event_created_at, 0.0)))
                count += 1
                # the head had failed before: its attempts are reset at once; otherwise every WRITE_EVERY
                if (attempts or len(cursor.done) >= WRITE_EVERY) and not self._flush(target_id, cursor):
                    return count, STOP, None
                attempts = 0
                continue
            # A failure: what passed before it, and the attempt, in one write; then stop (later events wait).
            attempts += 1
            failed = cursor.progress() | {"failures": event_targets.c.failures + 1, "last_error": outcome.error}
            if attempts < target.max_attempts:
                delay = self.backoff(attempts)
                log.warning(
                    "event %s to target %s failed (attempt %d of %d): %s; retrying in %.0fs",
                    row.event_id,
                    target.name,
                    attempts,
                    target.max_attempts,
                    outcome.error,
                    delay,
                )
                values = failed | {"position": cursor.passed, "attempts": attempts, "next_attempt_at": now + delay}
                if not self._move(target_id, cursor.seen, values):
                    return count, STOP, None
                cursor.written()
                return count, WAIT, cursor
            log.warning(
                "event %s to target %s failed %d times: dead-lettered (%s)",
                row.event_id,
                target.name,
                attempts,
                outcome.error,
            )
            with self.ctx.write() as conn:
                moved = conn.execute(
                    sa.update(event_targets)
                    .where(event_targets.c.id == target_id, event_targets.c.position == cursor.seen)
                    .values(position=row.outbox_id, attempts=0, next_attempt_at=None, **failed)
                ).rowcount
                if not moved:
                    self._lost(target_id)
                    return count, STOP, None
                conn.execute(
                    self.ctx.db.insert_ignore(event_dead_letters).values(
                        target_id=target_id,
                        outbox_id=row.outbox_id,
                        event_id=row.event_id,
                        body=row.body,
                        status="dead",
                        attempts=attempts,
                        last_error=outcome.error,
                        dead_at=now,
                    )
                )
            cursor.move(row.outbox_id)
            cursor.written()
            attempts = 0
        return count, AGAIN if full else WAIT, cursor

    def _flush(self, target_id: int, cursor: _Cursor) -> bool:
        """Write the cursor's progress (conditional on the position it last saw); False if another runner moved
        the target on meanwhile."""
        values = cursor.progress() | {"position": cursor.passed, "attempts": 0, "next_attempt_at": None}
        if not self._move(target_id, cursor.seen, values):
            return False
        cursor.written()
        return True

    def _move(self, target_id: int, seen: int, values: dict) -> bool:
        with self.ctx.write() as conn:
            moved = conn.execute(
                sa.update(event_targets)
                .where(event_targets.c.id == target_id, event_targets.c.position == seen)
                .values(**values)
            ).rowcount
        if not moved:
            self._lost(target_id)
        return bool(moved)

    @staticmethod
    def _lost(target_id: int) -> None:
        log.warning("event target %s moved on elsewhere (another runner took it over); this run stops", target_id)

    def _retries(self, target, secret: str, session: webhook.Session) -> int:
        now = self.ctx.clock()
        with self.ctx.db.read() as conn:
            letters = conn.execute(
                sa.select(event_dead_letters)
                .where(
                    event_dead_letters.c.target_id == target.id,
                    event_dead_letters.c.status == "retry",
                    sa.or_(event_dead_letters.c.next_attempt_at.is_(None), event_dead_letters.c.next_attempt_at <= now),
                )
                .order_by(event_dead_letters.c.outbox_id)
                .limit(RETRY_BATCH)
            ).all()
        count = 0
        for letter in letters:
            if stopping():
                break
            outcome = session.send(
                target.url, letter.body.encode(), letter.event_id, secret, letter.attempts + 1, target.timeout
            )
            now = self.ctx.clock()
            mine = sa.and_(
                event_dead_letters.c.id == letter.id,
                event_dead_letters.c.status == "retry",
                event_dead_letters.c.attempts == letter.attempts,
            )
            with self.ctx.write() as conn:
                if outcome.ok:
                    if conn.execute(sa.delete(event_dead_letters).where(mine)).rowcount:
                        conn.execute(
                            sa.update(event_targets)
                            .where(event_targets.c.id == target.id)
                            .values(delivered=event_targets.c.delivered + 1, last_delivered_at=now)
                        )
                        count += 1
                    continue
                attempts = letter.attempts + 1
                dead = attempts >= target.max_attempts
                conn.execute(
                    sa.update(event_dead_letters)
                    .where(mine)
                    .values(
                        attempts=attempts,
                        status="dead" if dead else "retry",
                        next_attempt_at=None if dead else now + self.backoff(attempts),
                        last_error=outcome.error,
                        dead_at=now if dead else letter.dead_at,
                    )
                )
                conn.execute(
                    sa.update(event_targets)
                    .where(event_targets.c.id == target.id)
                    .values(failures=event_targets.c.failures + 1)
                )
        return count
