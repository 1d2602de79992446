"""Concurrent CreateSecret calls of one name: exactly one creates the secret, the other gets ResourceExistsException
(as Secrets Manager answers), on both databases. The first caller is held inside its transaction right before its
INSERT while the other looks for the name: the interleaving that let both in on PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa

from soko.iam.service import Identity
from soko.secrets.store import Secret, SecretExists, SecretStore, SecretValue
from tests.races import interleaved

ACCOUNT = "000000000000"


def test_concurrent_creates_of_one_name_make_one_secret(registry) -> None:
    store = SecretStore(registry.ctx, Identity(registry.ctx).master)
    outcomes: dict[str, Secret | Exception] = {}

    def create(who: str) -> None:
        try:
            outcomes[who] = store.create(ACCOUNT, "ecr-pullthroughcache/raced", SecretValue(who, None), None, None)
        except Exception as exc:  # the loser's answer
            outcomes[who] = exc

    # the first found no such secret and is about to insert it when the second looks
    interleaved(registry.ctx.db.engine, "INSERT INTO secrets", lambda: create("first"), lambda: create("second"))
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

    interleaved(registry.ctx.db.engine, "INSERT INTO secrets", create, create)
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


def test_the_migration_finds_a_free_name_that_fits(database_url) -> None:
    """A duplicate renamed to its ARN's last part must still fit the column (512) and not take the name of another
    secret: else the unique index cannot be made and the server does not start."""
    from alembic import command

    from soko.meta.db import Database, alembic_config

    db = Database(database_url)
    long = "l" * 510  # Secrets Manager allows 512
    prefix = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:"
    rows = [
        (f"{prefix}{long}-AAAAAA", long, 1.0),
        (f"{prefix}{long}-BBBBBB", long, 2.0),
        (f"{prefix}x-CCCCCC", "x", 1.0),
        (f"{prefix}x-DDDDDD", "x", 2.0),
        (f"{prefix}x-CCCCCC-EEEEEE", "x-CCCCCC", 3.0),  # a secret named as the rename would
    ]
    try:
        with db.engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0030")
        with db.engine.begin() as conn:
            for arn, name, created in rows:
                conn.execute(
                    sa.text(
                        "INSERT INTO secrets (arn, account_id, name, version_id, value, created_at, updated_at) "
                        "VALUES (:arn, :account, :name, 'v', :value, :created, :created)"
                    ),
                    {"arn": arn, "account": ACCOUNT, "name": name, "value": b"sealed", "created": created},
                )
        db.migrate()
        with db.engine.connect() as conn:
            names = dict(conn.execute(sa.text("SELECT arn, name FROM secrets")).all())
        assert len(names) == len(rows) and len(set(names.values())) == len(rows)
        assert all(len(name) <= 512 for name in names.values())
        assert names[f"{prefix}{long}-BBBBBB"] == long and names[f"{prefix}x-DDDDDD"] == "x"
        assert names[f"{prefix}x-CCCCCC-EEEEEE"] == "x-CCCCCC"  # an existing name stays
        assert names[f"{prefix}{long}-AAAAAA"].endswith("-AAAAAA")
    finally:
        db.dispose()
