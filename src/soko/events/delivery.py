"""Delivering the outbox to webhook targets: one leased job per target (``soko.jobs``), at least once, in order.

Each target has a cursor, ``position``: the outbox id up to which it is done. The outbox commits in id order (an
advisory lock in ``UnitOfWork.before_commit`` on PostgreSQL; SQLite has one writer), so reading ``id > position``
in id order misses nothing and keeps the order of the changes — per repository, and across them. A run of the job

1. sends the dead letters ``soko events redeliver`` queued that are due (each with its own attempts and backoff);
2. unless the head event is backing off, reads the events after ``position``, skips those of other accounts and
   those the target's pattern does not select, and POSTs the rest one at a time. A 2xx moves ``position`` past the
   event (written once per ``WRITE_EVERY`` deliveries, at a failure and at the end of the batch); a failure
   records the attempt and a backoff (``event_retry_base`` doubling to ``event_retry_max``) and stops — later
   events wait, which is what keeps the order; after ``max_attempts`` the event becomes a dead letter and
   ``position`` moves past it;
3. keeps polling for new events for a few seconds (``linger``) while its lease is held, so delivery lag stays well
   under the runner's tick, then ends; the job is due again a second later.

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

import sqlalchemy as sa

from soko.events import patterns, webhook
from soko.events.targets import KIND, Targets
from soko.jobs.runner import JobKind, stopping
from soko.kernel.context import DomainContext
from soko.meta.schema import event_dead_letters, event_outbox, event_targets

log = logging.getLogger("soko.events")
BATCH = 200
RETRY_BATCH = 20
WRITE_EVERY = 50  # deliveries recorded in one write (a crash resends at most these; receivers dedupe)


class Delivery:
    def __init__(
        self, ctx: DomainContext, targets: Targets | None = None, *, linger: float = 20.0, poll: float = 0.1
    ) -> None:
        self.ctx = ctx
        self.targets = targets or Targets(ctx)
        self.linger = linger
        self.poll = poll

    def job(self, concurrency: int = 4) -> JobKind:
        """The job kind: each target's job is due every second, and runs ``linger`` seconds at most."""
        interval = 1.0 if self.ctx.settings.events_enabled else 0.0
        return JobKind(KIND, self.run, interval, concurrency=concurrency, lease=max(60.0, 4 * self.linger), keys=())

    def backoff(self, attempts: int) -> float:
        settings = self.ctx.settings
        return float(min(settings.event_retry_max, settings.event_retry_base * 2 ** max(attempts - 1, 0)))

    def run(self, key: str) -> str | None:
        """One run of target ``key``'s job: deliver what is due, then linger for new events."""
        target_id = int(key)
        deadline = time.monotonic() + self.linger
        sent = 0
        while True:
            moved = self.drain(target_id)
            if moved is None:
                break
            sent += moved
            if stopping() or time.monotonic() >= deadline:
                break
            if not moved:
                time.sleep(self.poll)
        return f"delivered {sent} event(s) to target {target_id}" if sent else None

    # ---- one pass ----------------------------------------------------------------------------------------------
    def drain(self, target_id: int) -> int | None:
        """Deliver what is due now for the target; returns how many were delivered, None if it is gone or off."""
        with self.ctx.db.read() as conn:
            target = conn.execute(sa.select(event_targets).where(event_targets.c.id == target_id)).first()
        if target is None or not target.enabled:
            return None
        secret = self.targets.secret(target)
        count = self._retries(target, secret)
        if target.next_attempt_at is not None and target.next_attempt_at > self.ctx.clock():
            return count
        pattern = json.loads(target.pattern) if target.pattern else None
        with self.ctx.db.read() as conn:
            rows = conn.execute(
                sa.select(
                    event_outbox.c.id,
                    event_outbox.c.event_id,
                    event_outbox.c.account_id,
                    event_outbox.c.created_at,
                    event_outbox.c.body,
                )
                .where(event_outbox.c.id > target.position)
                .order_by(event_outbox.c.id)
                .limit(BATCH)
            ).all()
        seen = target.position  # what the row says; every move is conditional on it
        passed = seen  # delivered or skipped up to here, not yet written
        attempts = target.attempts
        done: list[tuple[float, float]] = []  # (delivered at, lag) of the deliveries since the last write

        def progress() -> dict:
            if not done:
                return {}
            at, lag = done[-1]
            return {"delivered": event_targets.c.delivered + len(done), "last_delivered_at": at, "last_lag": lag}

        for row in rows:
            if row.account_id != target.account_id or (
                pattern is not None and not patterns.matches(pattern, json.loads(row.body))
            ):
                passed = row.id
                continue
            if stopping():
                break
            outcome = webhook.send(
                target.url, row.body.encode(), row.event_id, secret, attempts + 1, target.timeout, self.targets.allow
            )
            now = self.ctx.clock()
            if outcome.ok:
                passed, attempts = row.id, 0
                done.append((now, max(now - row.created_at, 0.0)))
                count += 1
                if len(done) >= WRITE_EVERY:
                    if not self._move(target_id, seen, progress() | {"position": passed}):
                        return count
                    seen = passed
                    done.clear()
                continue
            # A failure: what passed before it, and the attempt, in one write; then stop (later events wait).
            attempts += 1
            failed = progress() | {"failures": event_targets.c.failures + 1, "last_error": outcome.error}
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
                self._move(
                    target_id, seen, failed | {"position": passed, "attempts": attempts, "next_attempt_at": now + delay}
                )
                return count
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
                    .where(event_targets.c.id == target_id, event_targets.c.position == seen)
                    .values(position=row.id, attempts=0, next_attempt_at=None, **failed)
                ).rowcount
                if not moved:
                    return count
                conn.execute(
                    self.ctx.db.insert_ignore(event_dead_letters).values(
                        target_id=target_id,
                        outbox_id=row.id,
                        event_id=row.event_id,
                        body=row.body,
                        status="dead",
                        attempts=attempts,
                        last_error=outcome.error,
                        dead_at=now,
                    )
                )
            seen = passed = row.id
            attempts = 0
            done.clear()
        if passed != seen:
            self._move(target_id, seen, progress() | {"position": passed, "attempts": 0, "next_attempt_at": None})
        return count

    def _move(self, target_id: int, seen: int, values: dict) -> bool:
        with self.ctx.write() as conn:
            moved = conn.execute(
                sa.update(event_targets)
                .where(event_targets.c.id == target_id, event_targets.c.position == seen)
                .values(**values)
            ).rowcount
        if not moved:
            log.warning("event target %s moved on elsewhere (another runner took it over); this run stops", target_id)
        return bool(moved)

    def _retries(self, target, secret: str) -> int:
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
            outcome = webhook.send(
                target.url,
                letter.body.encode(),
                letter.event_id,
                secret,
                letter.attempts + 1,
                target.timeout,
                self.targets.allow,
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
