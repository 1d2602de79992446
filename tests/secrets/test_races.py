"""Concurrent CreateSecret calls of one name: exactly one creates the secret, the other gets ResourceExistsException
(as Secrets Manager answers), on both databases. Each caller is held inside its transaction right before its INSERT
until the other has looked for the name too, the interleaving that let both in on PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from soko.iam.service import Identity
from soko.secrets.store import Secret, SecretExists, SecretStore, SecretValue

ACCOUNT = "000000000000"


@contextmanager
def held_before(
    engine: sa.Engine, statement_start: str, thread: threading.Thread
) -> Iterator[tuple[threading.Event, threading.Event]]:
    """Hold ``thread`` before each statement starting with ``statement_start`` until ``release`` is set; yields
    (reached, release)."""
    release, reached = threading.Event(), threading.Event()

    def hold(_conn, _cursor, statement: str, *_args) -> None:
        if threading.current_thread() is thread and statement.lstrip().startswith(statement_start):
            reached.set()
            assert release.wait(30)

    sa.event.listen(engine, "before_cursor_execute", hold)
    try:
        yield reached, release
    finally:
        release.set()
        sa.event.remove(engine, "before_cursor_execute", hold)


def test_concurrent_creates_of_one_name_make_one_secret(registry) -> None:
    store = SecretStore(registry.ctx, Identity(registry.ctx).master)
    outcomes: dict[str, Secret | Exception] = {}

    def create(who: str) -> None:
        try:
            outcomes[who] = store.create(ACCOUNT, "ecr-pullthroughcache/raced", SecretValue(who, None), None, None)
        except Exception as exc:  # the loser's answer
            outcomes[who] = exc

    first = threading.Thread(target=create, args=("first",))
    with held_before(registry.ctx.db.engine, "INSERT INTO secrets", first) as (reached, release):
        first.start()
        assert reached.wait(30)  # it found no such secret and is about to insert it
        second = threading.Thread(target=create, args=("second",))
        second.start()
        second.join(0.5)  # SQLite: it waits for the first's write lock; PostgreSQL: it is through (before the fix)
        release.set()
        first.join(30)
        second.join(30)
    won = [o for o in outcomes.values() if isinstance(o, Secret)]
    lost = [o for o in outcomes.values() if isinstance(o, Exception)]
    assert len(won) == 1 and len(lost) == 1, outcomes
    assert isinstance(lost[0], SecretExists) and "already exists" in lost[0].message
    page, _ = store.page(ACCOUNT, after=None, limit=10, include_deleted=True)
    assert [s.arn for s in page] == [won[0].arn]


def test_the_same_request_raced_twice_answers_the_secret_both_times(registry) -> None:
    """An SDK retry (same ClientRequestToken) racing its original gets the secret, not an error."""
    store = SecretStore(registry.ctx, Identity(registry.ctx).master)
    token = "11111111-2222-3333-4444-555555555555"
    outcomes: list[Secret | Exception] = []

    def create() -> None:
        try:
            outcomes.append(store.create(ACCOUNT, "ecr-pullthroughcache/retried", SecretValue("v", None), None, token))
        except Exception as exc:
            outcomes.append(exc)

    first = threading.Thread(target=create)
    with held_before(registry.ctx.db.engine, "INSERT INTO secrets", first) as (reached, release):
        first.start()
        assert reached.wait(30)
        second = threading.Thread(target=create)
        second.start()
        second.join(0.5)
        release.set()
        first.join(30)
        second.join(30)
    assert all(isinstance(o, Secret) for o in outcomes) and len(outcomes) == 2, outcomes
    assert len({o.arn for o in outcomes if isinstance(o, Secret)}) == 1



def test_the_migration_keeps_secrets_an_earlier_race_duplicated(database_url) -> None:
    """Migration 0031 makes names unique without losing a secret: the newest keeps the name, the other keeps its
    ARN (and so its value and the rules naming it) under its ARN's last part."""
    from alembic import command

    from soko.meta.db import Database, alembic_config

    db = Database(database_url)
    try:
        with db.engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0030")
        prefix = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:"
        with db.engine.begin() as conn:
            for arn, created in ((f"{prefix}dup-AAAAAA", 1.0), (f"{prefix}dup-BBBBBB", 2.0)):
                conn.execute(
                    sa.text(
                        "INSERT INTO secrets (arn, account_id, name, version_id, value, created_at, updated_at) "
                        "VALUES (:arn, :account, 'dup', 'v', :value, :created, :created)"
                    ),
                    {"arn": arn, "account": ACCOUNT, "value": b"sealed", "created": created},
                )
        db.migrate()
        with db.engine.connect() as conn:
            names = dict(conn.execute(sa.text("SELECT arn, name FROM secrets")).all())
        assert names == {f"{prefix}dup-BBBBBB": "dup", f"{prefix}dup-AAAAAA": "dup-AAAAAA"}
    finally:
        db.dispose()
