"""Consistency check of metadata against storage: re-hash every blob, check every manifest's references."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import sqlalchemy as sa

from soko.meta.schema import blobs, manifest_blobs, manifest_children, manifests, repository_blobs
from soko.meta.schema import repositories as repos
from soko.registry.context import DomainContext, blob_path, trash_path
from soko.storage import PathNotFound


@dataclass(frozen=True)
class Problem:
    kind: str
    subject: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.subject}: {self.message}"


def check(ctx: DomainContext, *, rehash: bool = True) -> Iterator[Problem]:
    yield from _check_blobs(ctx, rehash)
    yield from _check_manifests(ctx)


def _check_blobs(ctx: DomainContext, rehash: bool) -> Iterator[Problem]:
    with ctx.db.read() as conn:
        rows = conn.execute(sa.select(blobs.c.digest, blobs.c.size).order_by(blobs.c.digest)).all()
    for digest, size in rows:
        path = blob_path(digest)
        try:
            info = ctx.storage.stat(path)
        except PathNotFound:
            if _in_trash(ctx, digest):
                # A garbage collector died between moving the content aside and committing the row deletion.
                yield Problem(
                    "in-trash",
                    digest,
                    "in trash (the next gc restores or removes them): a gc was interrupted; `soko gc` restores it now",
                )
            else:
                yield Problem("missing-blob", digest, "in the database but not in storage")
            continue
        if info.size != size:
            yield Problem("size-mismatch", digest, f"database says {size} bytes, storage holds {info.size}")
            continue
        if rehash:
            algorithm, _, expected = digest.partition(":")
            hasher = hashlib.new(algorithm)
            with ctx.storage.reader(path) as f:
                while data := f.read(4 << 20):
                    hasher.update(data)
            if hasher.hexdigest() != expected:
                yield Problem("corrupt-blob", digest, f"content hashes to {algorithm}:{hasher.hexdigest()}")


def _in_trash(ctx: DomainContext, digest: str) -> bool:
    try:
        ctx.storage.stat(trash_path(digest))
    except PathNotFound:
        return False
    return True


def _check_manifests(ctx: DomainContext) -> Iterator[Problem]:
    with ctx.db.read() as conn:
        dangling = conn.execute(
            sa.select(repos.c.name, manifests.c.digest, manifest_blobs.c.digest)
            .select_from(
                manifest_blobs.join(manifests, manifests.c.id == manifest_blobs.c.manifest_id).join(
                    repos, repos.c.id == manifests.c.repository_id
                )
            )
            .outerjoin(
                repository_blobs,
                sa.and_(
                    repository_blobs.c.repository_id == manifests.c.repository_id,
                    repository_blobs.c.digest == manifest_blobs.c.digest,
                ),
            )
            .where(repository_blobs.c.digest.is_(None))
        ).all()
        for name, manifest, blob in dangling:
            yield Problem("unlinked-reference", f"{name}@{manifest}", f"references blob {blob} not linked to '{name}'")
        child = manifests.alias("child")
        missing_children = conn.execute(
            sa.select(repos.c.name, manifests.c.digest, manifest_children.c.child_digest)
            .select_from(
                manifest_children.join(manifests, manifests.c.id == manifest_children.c.parent_id).join(
                    repos, repos.c.id == manifests.c.repository_id
                )
            )
            .outerjoin(
                child,
                sa.and_(
                    child.c.repository_id == manifests.c.repository_id,
                    child.c.digest == manifest_children.c.child_digest,
                ),
            )
            .where(child.c.id.is_(None))
        ).all()
        for name, manifest, child_digest in missing_children:
            yield Problem("missing-child", f"{name}@{manifest}", f"index references missing manifest {child_digest}")
        for row in conn.execute(
            sa.select(repos.c.name, manifests.c.digest, manifests.c.payload).join(
                repos, repos.c.id == manifests.c.repository_id
            )
        ):
            algorithm, _, expected = row.digest.partition(":")
            if hashlib.new(algorithm, row.payload).hexdigest() != expected:
                yield Problem("corrupt-manifest", f"{row.name}@{row.digest}", "payload does not hash to its digest")
