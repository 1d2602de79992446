"""Repositories: lookup, creation (explicit, or on first push), listing."""

from __future__ import annotations

import json

import sqlalchemy as sa

from soko.errors import RepositoryAlreadyExists, RepositoryNotFound
from soko.meta.schema import repositories as t
from soko.names import validate_repository_name
from soko.registry.context import DomainContext
from soko.registry.models import RepoRef, Repository


def _row_to_repository(row: sa.Row) -> Repository:
    return Repository(
        id=row.id,
        account_id=row.account_id,
        name=row.name,
        created_at=row.created_at,
        tag_mutability=row.tag_mutability,
        tag_mutability_filters=json.loads(row.tag_mutability_filters) if row.tag_mutability_filters else [],
        scan_on_push=bool(row.scan_on_push),
        encryption_type=row.encryption_type,
        kms_key=row.kms_key,
    )


def not_found(ref: RepoRef) -> RepositoryNotFound:
    return RepositoryNotFound(
        f"The repository with name '{ref.name}' does not exist in the registry with id '{ref.account_id}'"
    )


class Repositories:
    def __init__(self, ctx: DomainContext) -> None:
        self.ctx = ctx

    def find(self, conn: sa.Connection, ref: RepoRef) -> Repository | None:
        row = conn.execute(sa.select(t).where(t.c.account_id == ref.account_id, t.c.name == ref.name)).first()
        return _row_to_repository(row) if row else None

    def get(self, ref: RepoRef, conn: sa.Connection | None = None) -> Repository:
        if conn is not None:
            repo = self.find(conn, ref)
        else:
            with self.ctx.db.read() as c:
                repo = self.find(c, ref)
        if repo is None:
            raise not_found(ref)
        return repo

    def id_for(self, conn: sa.Connection, ref: RepoRef) -> int:
        repo_id = conn.execute(sa.select(t.c.id).where(t.c.account_id == ref.account_id, t.c.name == ref.name)).scalar()
        if repo_id is None:
            raise not_found(ref)
        return repo_id

    def create(
        self,
        ref: RepoRef,
        *,
        tag_mutability: str = "MUTABLE",
        tag_mutability_filters: list | None = None,
        scan_on_push: bool = False,
        encryption_type: str = "AES256",
        kms_key: str | None = None,
    ) -> Repository:
        validate_repository_name(ref.name)
        with self.ctx.db.write() as conn:
            if self.find(conn, ref) is not None:
                raise RepositoryAlreadyExists(
                    f"The repository with name '{ref.name}' already exists in the registry with id '{ref.account_id}'"
                )
            self._insert(conn, ref, tag_mutability, tag_mutability_filters, scan_on_push, encryption_type, kms_key)
            return self.find(conn, ref)  # type: ignore[return-value]

    def _insert(
        self,
        conn,
        ref,
        tag_mutability="MUTABLE",
        filters=None,
        scan_on_push=False,
        encryption_type="AES256",
        kms_key=None,
    ) -> None:
        conn.execute(
            self.ctx.db.insert_ignore(t).values(
                account_id=ref.account_id,
                name=ref.name,
                created_at=self.ctx.clock(),
                tag_mutability=tag_mutability,
                tag_mutability_filters=json.dumps(filters) if filters else None,
                scan_on_push=scan_on_push,
                encryption_type=encryption_type,
                kms_key=kms_key,
            )
        )

    def id_for_push(self, conn: sa.Connection, ref: RepoRef) -> int:
        """The repository a push goes to, created on first push when the registry is configured so."""
        repo_id = conn.execute(sa.select(t.c.id).where(t.c.account_id == ref.account_id, t.c.name == ref.name)).scalar()
        if repo_id is not None:
            return repo_id
        if not self.ctx.settings.create_repository_on_push:
            raise not_found(ref)
        validate_repository_name(ref.name)
        self._insert(conn, ref)
        return self.id_for(conn, ref)

    def list_names(self, account_id: str, *, last: str | None = None, limit: int | None = None) -> list[str]:
        query = sa.select(t.c.name).where(t.c.account_id == account_id).order_by(t.c.name)
        if last:
            query = query.where(t.c.name > last)
        if limit is not None:
            query = query.limit(limit)
        with self.ctx.db.read() as conn:
            return list(conn.execute(query).scalars())
