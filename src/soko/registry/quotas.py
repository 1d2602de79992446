"""Quotas: deployment-wide defaults from the settings, overridable per account.

Overrides live in ``account_settings`` rows named ``quota:<name>`` (the same table as ECR's account settings), so
they are part of the metadata like everything else and apply on every node. Reads are cached per generation.
"""

from __future__ import annotations

import sqlalchemy as sa

from soko.kernel.context import DomainContext
from soko.meta.schema import account_settings

# name → (settings attribute holding the default, what it limits)
QUOTAS: dict[str, tuple[str | None, str]] = {
    "max_repositories": ("max_repositories", "repositories per account"),
    "max_image_size": ("max_image_size", "bytes per image (and per layer while it uploads)"),
    "max_tags_per_image": (None, "tags per image"),
    "max_open_uploads": ("max_open_uploads", "unfinished upload sessions per principal per repository"),
}
DEFAULT_TAGS_PER_IMAGE = 1000  # ECR's quota


class Quotas:
    def __init__(self, ctx: DomainContext) -> None:
        self.ctx = ctx
        self._cache: dict[tuple[str, str], tuple[int, int]] = {}

    def default(self, name: str) -> int:
        attribute = QUOTAS[name][0]
        return int(getattr(self.ctx.settings, attribute)) if attribute else DEFAULT_TAGS_PER_IMAGE

    def get(self, account_id: str, name: str, conn: sa.Connection | None = None) -> int:
        """The quota in force. Pass ``conn`` when inside a transaction: taking a second pooled connection while
        holding one can exhaust the pool under concurrency."""
        if name not in QUOTAS:
            raise KeyError(f"unknown quota {name!r}; quotas: {', '.join(QUOTAS)}")
        generation = self.ctx.generation.current()
        hit = self._cache.get((account_id, name))
        if hit is not None and hit[0] == generation:
            return hit[1]
        query = sa.select(account_settings.c.value).where(
            account_settings.c.account_id == account_id, account_settings.c.name == f"quota:{name}"
        )
        if conn is not None:
            value = conn.execute(query).scalar()
        else:
            with self.ctx.db.read() as own:
                value = own.execute(query).scalar()
        result = int(value) if value is not None else self.default(name)
        self._cache[(account_id, name)] = (generation, result)
        return result

    def set(self, account_id: str, name: str, value: int | None) -> None:
        """Override a quota for one account; ``None`` goes back to the deployment default."""
        if name not in QUOTAS:
            raise KeyError(f"unknown quota {name!r}; quotas: {', '.join(QUOTAS)}")
        if value is not None and value < 0:
            raise ValueError(f"quota {name} must not be negative")
        key = (account_settings.c.account_id == account_id, account_settings.c.name == f"quota:{name}")
        with self.ctx.write(invalidates=True) as conn:
            conn.execute(sa.delete(account_settings).where(*key))
            if value is not None:
                conn.execute(
                    sa.insert(account_settings).values(account_id=account_id, name=f"quota:{name}", value=str(value))
                )

    def all(self, account_id: str) -> dict[str, int]:
        return {name: self.get(account_id, name) for name in QUOTAS}
