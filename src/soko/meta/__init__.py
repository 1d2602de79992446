"""Metadata: the single source of truth (SQLAlchemy Core on SQLite or PostgreSQL, Alembic migrations)."""

from soko.meta.db import Database

__all__ = ["Database"]
