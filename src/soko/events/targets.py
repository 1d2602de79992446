"""Event targets (webhooks) and their dead letters: configuration and status, for ``soko events`` and the console.

A target belongs to one account and receives that account's events (those its optional EventBridge pattern
selects), from the moment it is created. Its secret is stored encrypted with the master key (the HMAC key must be
recoverable to sign) and is shown once, when generated; it never appears in listings or logs.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa

from soko.errors import SokoError
from soko.events import patterns, webhook
from soko.iam.secrets import MasterKey
from soko.kernel.context import DomainContext
from soko.kernel.job_queue import enqueue
from soko.meta.schema import event_dead_letters, event_outbox, event_targets, jobs

KIND = "event_delivery"  # the leased job of each target, keyed by its id
NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
ACCOUNT = re.compile(r"[0-9]{12}")
MAX_LIST = 1000  # dead letters in one listing
MAX_ATTEMPTS = 100
MAX_TIMEOUT = 60.0
MAX_SECRET = 512


class TargetNotFound(SokoError):
    pass


class TargetAlreadyExists(SokoError):
    pass


@dataclass
class TargetStatus:
    account_id: str
    name: str
    url: str
    pattern: dict | None
    enabled: bool
    max_attempts: int
    timeout: float
    position: int
    attempts: int  # failed attempts of the event being retried (the head)
    next_attempt_at: float | None
    last_error: str | None
    last_delivered_at: float | None
    last_lag: float | None
    delivered: int
    failures: int
    dead: int  # dead letters waiting
    retrying: int  # dead letters being redelivered
    backlog: int  # outbox events after the position (of every account: an upper bound)
    oldest_pending_at: float | None  # created_at of the first of them


def secret_context(account_id: str, name: str) -> str:
    return f"event-target:{account_id}:{name}"


class Targets:
    def __init__(self, ctx: DomainContext) -> None:
        self.ctx = ctx
        self._master: MasterKey | None = None
        self.allow = webhook.allowed_networks(ctx.settings.event_target_allow_cidrs)

    @property
    def master(self) -> MasterKey:
        if self._master is None:
            self._master = MasterKey.load(self.ctx.settings.master_key, self.ctx.settings.data_dir)
        return self._master

    # ---- configuration ------------------------------------------------------------------------------------------
    def create(
        self,
        account_id: str,
        name: str,
        url: str,
        *,
        secret: str | None = None,
        pattern: str | None = None,
        max_attempts: int = 10,
        timeout: float = 10.0,
    ) -> str:
        """Create a webhook target; returns its secret (generated unless given)."""
        if not isinstance(account_id, str) or not ACCOUNT.fullmatch(account_id):
            raise webhook.InvalidTarget(f"{account_id!r} is not an account id (12 digits)")
        _check_name(name)
        webhook.check_url(url, self.allow)
        parsed = patterns.parse(pattern) if pattern is not None else None
        _check_limits(max_attempts, timeout)
        if secret is None:
            secret = secrets.token_urlsafe(32)
        elif not 16 <= len(secret) <= MAX_SECRET or not secret.isprintable():
            raise webhook.InvalidTarget(f"a webhook secret is 16 to {MAX_SECRET} printable characters")
        with self.ctx.write() as conn:
            if conn.execute(
                sa.select(event_targets.c.id).where(
                    event_targets.c.account_id == account_id, event_targets.c.name == name
                )
            ).first():
                raise TargetAlreadyExists(f"an event target named '{name}' exists in account {account_id}")
            position = conn.execute(sa.select(sa.func.coalesce(sa.func.max(event_outbox.c.id), 0))).scalar()
            target_id = conn.execute(
                sa.insert(event_targets).values(
                    account_id=account_id,
                    name=name,
                    url=url,
                    secret=self.master.encrypt(secret, secret_context(account_id, name)),
                    pattern=json.dumps(parsed, separators=(",", ":")) if parsed is not None else None,
                    enabled=True,
                    max_attempts=max_attempts,
                    timeout=timeout,
                    created_at=self.ctx.clock(),
                    position=position,
                )
            ).inserted_primary_key[0]  # type: ignore[index]
            enqueue(self.ctx.db, conn, KIND, str(target_id), time.time())  # jobs run on wall-clock time
        return secret

    def update(
        self,
        account_id: str,
        name: str,
        *,
        url: str | None = None,
        pattern: str | None = None,
        clear_pattern: bool = False,
        enabled: bool | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        secret: str | None = None,
    ) -> None:
        values: dict = {}
        if url is not None:
            webhook.check_url(url, self.allow)
            values["url"] = url
        if clear_pattern:
            values["pattern"] = None
        elif pattern is not None:
            values["pattern"] = json.dumps(patterns.parse(pattern), separators=(",", ":"))
        if enabled is not None:
            values["enabled"] = enabled
        if max_attempts is not None or timeout is not None:
            _check_limits(max_attempts if max_attempts is not None else 1, timeout if timeout is not None else 1.0)
            if max_attempts is not None:
                values["max_attempts"] = max_attempts
            if timeout is not None:
                values["timeout"] = timeout
        if secret is not None:
            if not 16 <= len(secret) <= MAX_SECRET or not secret.isprintable():
                raise webhook.InvalidTarget(f"a webhook secret is 16 to {MAX_SECRET} printable characters")
            values["secret"] = self.master.encrypt(secret, secret_context(account_id, name))
        with self.ctx.write() as conn:
            target_id = self._id(conn, account_id, name)
            if values:
                conn.execute(sa.update(event_targets).where(event_targets.c.id == target_id).values(**values))
            if enabled:
                enqueue(self.ctx.db, conn, KIND, str(target_id), time.time())

    def delete(self, account_id: str, name: str) -> None:
        with self.ctx.write() as conn:
            target_id = self._id(conn, account_id, name)
            conn.execute(sa.delete(event_dead_letters).where(event_dead_letters.c.target_id == target_id))
            conn.execute(sa.delete(event_targets).where(event_targets.c.id == target_id))
            conn.execute(sa.delete(jobs).where(jobs.c.kind == KIND, jobs.c.key == str(target_id)))

    def _id(self, conn: sa.Connection, account_id: str, name: str) -> int:
        target_id = conn.execute(
            sa.select(event_targets.c.id).where(event_targets.c.account_id == account_id, event_targets.c.name == name)
        ).scalar()
        if target_id is None:
            raise TargetNotFound(f"no event target named '{name}' in account {account_id}")
        return int(target_id)

    def secret(self, row) -> str:
        return self.master.decrypt(row.secret, secret_context(row.account_id, row.name))

    # ---- status -------------------------------------------------------------------------------------------------
    def status(self, account_id: str | None = None) -> list[TargetStatus]:
        with self.ctx.db.read() as conn:
            query = sa.select(event_targets).order_by(event_targets.c.account_id, event_targets.c.name)
            if account_id is not None:
                query = query.where(event_targets.c.account_id == account_id)
            rows = conn.execute(query).all()
            letters = dict(
                (
                    ((t, s), n)
                    for t, s, n in conn.execute(
                        sa.select(
                            event_dead_letters.c.target_id, event_dead_letters.c.status, sa.func.count()
                        ).group_by(event_dead_letters.c.target_id, event_dead_letters.c.status)
                    ).all()
                )
            )
            out = []
            for row in rows:
                backlog, oldest = conn.execute(
                    sa.select(sa.func.count(), sa.func.min(event_outbox.c.created_at)).where(
                        event_outbox.c.id > row.position
                    )
                ).one()
                out.append(
                    TargetStatus(
                        account_id=row.account_id,
                        name=row.name,
                        url=row.url,
                        pattern=json.loads(row.pattern) if row.pattern else None,
                        enabled=bool(row.enabled),
                        max_attempts=row.max_attempts,
                        timeout=row.timeout,
                        position=row.position,
                        attempts=row.attempts,
                        next_attempt_at=row.next_attempt_at,
                        last_error=row.last_error,
                        last_delivered_at=row.last_delivered_at,
                        last_lag=row.last_lag,
                        delivered=row.delivered,
                        failures=row.failures,
                        dead=letters.get((row.id, "dead"), 0),
                        retrying=letters.get((row.id, "retry"), 0),
                        backlog=backlog,
                        oldest_pending_at=oldest,
                    )
                )
            return out

    def dead_letters(self, account_id: str, name: str | None = None, limit: int = 100) -> list[dict]:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST:
            raise webhook.InvalidTarget(f"a dead-letter listing shows 1 to {MAX_LIST}")
        with self.ctx.db.read() as conn:
            query = (
                sa.select(
                    event_targets.c.name.label("target"),
                    event_dead_letters.c.event_id,
                    event_dead_letters.c.status,
                    event_dead_letters.c.attempts,
                    event_dead_letters.c.last_error,
                    event_dead_letters.c.dead_at,
                    event_dead_letters.c.next_attempt_at,
                    event_dead_letters.c.body,
                )
                .join(event_targets, event_targets.c.id == event_dead_letters.c.target_id)
                .where(event_targets.c.account_id == account_id)
                .order_by(event_dead_letters.c.outbox_id)
                .limit(limit)
            )
            if name is not None:
                query = query.where(event_targets.c.name == name)
            return [dict(r._mapping) for r in conn.execute(query)]

    def redeliver(self, account_id: str, name: str, event_ids: list[str] | None = None) -> int:
        """Send dead letters again (all of the target's, or these events: dead letters or events still in the
        outbox), with a fresh count of attempts; returns how many are queued. A delivery run on this host is woken
        at once (elsewhere its 1 s poll finds them)."""
        try:
            return self._redeliver(account_id, name, event_ids)
        finally:
            self.ctx.generation.bump_events()

    def _redeliver(self, account_id: str, name: str, event_ids: list[str] | None) -> int:
        with self.ctx.write() as conn:
            target_id = self._id(conn, account_id, name)
            fresh = {"status": "retry", "attempts": 0, "next_attempt_at": None}
            if event_ids is None:
                return int(
                    conn.execute(
                        sa.update(event_dead_letters)
                        .where(event_dead_letters.c.target_id == target_id, event_dead_letters.c.status == "dead")
                        .values(**fresh)
                    ).rowcount
                )
            queued = 0
            for event_id in event_ids:
                if conn.execute(
                    sa.update(event_dead_letters)
                    .where(event_dead_letters.c.target_id == target_id, event_dead_letters.c.event_id == event_id)
                    .values(**fresh)
                ).rowcount:
                    queued += 1
                    continue
                row = conn.execute(
                    sa.select(event_outbox.c.id, event_outbox.c.body).where(
                        event_outbox.c.event_id == event_id, event_outbox.c.account_id == account_id
                    )
                ).first()
                if row is None:
                    raise SokoError(f"no event {event_id!r} in account {account_id} (dead letter or outbox)")
                conn.execute(
                    sa.insert(event_dead_letters).values(
                        target_id=target_id,
                        outbox_id=row.id,
                        event_id=event_id,
                        body=row.body,
                        dead_at=self.ctx.clock(),
                        **fresh,
                    )
                )
                queued += 1
            return queued


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise webhook.InvalidTarget("a target name is 1 to 64 letters, digits, '_', '.' or '-'")


def _check_limits(max_attempts: int, timeout: float) -> None:
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or not 1 <= max_attempts <= MAX_ATTEMPTS:
        raise webhook.InvalidTarget(f"max attempts must be 1 to {MAX_ATTEMPTS}")
    if not isinstance(timeout, int | float) or not 0.1 <= timeout <= MAX_TIMEOUT:
        raise webhook.InvalidTarget(f"a delivery timeout is 0.1 to {MAX_TIMEOUT:.0f} seconds")
