from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Row ids: BIGINT on PostgreSQL, INTEGER on SQLite (where only INTEGER PRIMARY KEY auto-increments).
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# Timestamps are epoch seconds (UTC) as doubles: what ECR's API speaks, and identical on both databases.
Timestamp = sa.Float(precision=53)
DIGEST_LENGTH = 150  # "sha512:" + 128 hex digits, with room
