"""Blobs as a repository sees them: the global content-addressed store filtered by the repository's links."""

from __future__ import annotations

from typing import BinaryIO

import sqlalchemy as sa

from soko.crypto.segments import KeyUnavailable, SealBroken
from soko.digest import Digest
from soko.errors import BlobUnknown, ContentUnreadable, ManifestReferenced
from soko.kernel.context import DomainContext
from soko.meta.schema import blobs, manifest_blobs, manifests, repository_blobs
from soko.meta.schema import repositories as repos
from soko.registry.models import BlobContent, BlobInfo, RepoRef
from soko.registry.repositories import Repositories
from soko.registry.settings_store import account_setting
from soko.storage import PathNotFound
from soko.storage.paths import blob_path


def unreadable(digest: str, exc: SealBroken) -> ContentUnreadable:
    if isinstance(exc, KeyUnavailable):
        return ContentUnreadable(f"blob {digest} cannot be decrypted: {exc.why} (its key is gone: crypto-shredded)")
    return ContentUnreadable(
        f"blob {digest} failed its integrity check in storage ({exc.why}): it was tampered with or damaged and is not "
        "served; an operator should run soko fsck, then push the image again"
    )


def blob_unknown(ref: RepoRef, digest: str) -> BlobUnknown:
    return BlobUnknown(f"blob {digest} is not in repository '{ref.name}'")


class Blobs:
    def __init__(self, ctx: DomainContext, repositories: Repositories) -> None:
        self.ctx = ctx
        self.repositories = repositories

    def _linked(self, conn: sa.Connection, ref: RepoRef, digest: str) -> BlobInfo | None:
        row = self._linked_row(conn, ref, digest)
        return BlobInfo(row.digest, row.size) if row else None

    def _linked_row(self, conn: sa.Connection, ref: RepoRef, digest: str) -> sa.Row | None:
        return conn.execute(
            sa.select(blobs.c.digest, blobs.c.size, blobs.c.seal_id)
            .join(repository_blobs, repository_blobs.c.digest == blobs.c.digest)
            .join(repos, repos.c.id == repository_blobs.c.repository_id)
            .where(repos.c.account_id == ref.account_id, repos.c.name == ref.name, blobs.c.digest == digest)
        ).first()

    def stat(self, ref: RepoRef, digest: str) -> BlobInfo:
        row = self._stat_row(ref, digest)
        return BlobInfo(row.digest, row.size)

    def _stat_row(self, ref: RepoRef, digest: str) -> sa.Row:
        Digest.parse(digest)
        with self.ctx.db.read() as conn:
            row = self._linked_row(conn, ref, digest)
            if row is None:
                self.repositories.id_for(conn, ref)  # NAME_UNKNOWN beats BLOB_UNKNOWN
                raise blob_unknown(ref, digest)
        return row

    def open(self, ref: RepoRef, digest: str) -> BlobContent:
        row = self._stat_row(ref, digest)
        path = blob_path(row.digest)
        storage = self.ctx.storage
        redirect = storage.redirect_url(path) if storage.capabilities.redirect else None
        return BlobContent(row.digest, row.size, path, redirect, row.seal_id)

    def local_path(self, blob: BlobContent) -> str | None:
        """The local file holding the blob (the filesystem driver), for the server to send by itself."""
        return self.ctx.storage.local_path(blob.storage_path)

    def reader(self, blob: BlobContent, offset: int = 0) -> BinaryIO:
        """The blob's content from ``offset`` on (close it when done)."""
        try:
            return self.ctx.storage.sealed_reader(blob.storage_path, offset, blob.seal_id)
        except PathNotFound:
            # the metadata said yes a moment ago: the collector won a race with a just-deleted image
            raise BlobUnknown(f"blob {blob.digest} is no longer stored") from None
        except SealBroken as exc:
            raise unreadable(blob.digest, exc) from None

    def mount(self, ref: RepoRef, digest: str, source: RepoRef) -> BlobInfo | None:
        """Link a blob another repository holds into ``ref``; None when the source does not hold it or the account
        turned BLOB_MOUNTING off (the client then uploads the blob)."""
        Digest.parse(digest)
        with self.ctx.transaction() as tx:
            conn = tx.conn
            if account_setting(conn, ref.account_id, "BLOB_MOUNTING") == "DISABLED":
                return None
            info = self._linked(conn, source, digest)
            if info is None:
                return None
            if not self.ctx.db.is_sqlite:
                # Hold the blob against a concurrent garbage collector until the new link commits; if the collector
                # removed it meanwhile there is nothing to mount and the client uploads instead.
                held = conn.execute(
                    sa.select(blobs.c.digest).where(blobs.c.digest == digest).with_for_update(read=True)
                ).first()
                if held is None:
                    return None
            repo_id = self.repositories.id_for_push(tx, ref)
            conn.execute(
                self.ctx.db.insert_ignore(repository_blobs).values(
                    repository_id=repo_id, digest=digest, created_at=tx.now
                )
            )
            tx.review_links(repo_id, [digest], "mount")
        return info

    def replicate(self, ref: RepoRef, source: RepoRef, digests: list[str]) -> int:
        """Link into ``ref`` (created as replication creates it) the blobs ``source`` holds, in one transaction:
        the same-deployment copy of replication (the content is stored once per deployment). Blobs ``ref`` already
        holds are skipped; one ``source`` no longer holds raises BlobUnknown (nothing is linked). Returns how many
        links were added."""
        for digest in digests:
            Digest.parse(digest)
        wanted = sorted(set(digests))
        with self.ctx.transaction() as tx:
            conn = tx.conn
            repo_id = self.repositories.id_for_replication(tx, ref)
            have = (
                set(
                    conn.execute(
                        sa.select(repository_blobs.c.digest).where(
                            repository_blobs.c.repository_id == repo_id, repository_blobs.c.digest.in_(wanted)
                        )
                    ).scalars()
                )
                if wanted
                else set()
            )
            missing = [d for d in wanted if d not in have]
            for digest in missing:
                if self._linked(conn, source, digest) is None:
                    raise blob_unknown(source, digest)
                if not self.ctx.db.is_sqlite:
                    # as mount: hold the blob against a concurrent collector until the new link commits
                    held = conn.execute(
                        sa.select(blobs.c.digest).where(blobs.c.digest == digest).with_for_update(read=True)
                    ).first()
                    if held is None:
                        raise blob_unknown(source, digest)
            if missing:
                conn.execute(
                    sa.insert(repository_blobs),
                    [{"repository_id": repo_id, "digest": d, "created_at": tx.now} for d in missing],
                )
                tx.review_links(repo_id, missing, "replication")
        return len(missing)

    def unlink(self, ref: RepoRef, digest: str) -> None:
        """Remove a blob from a repository (the content goes when GC finds nothing else uses it)."""
        Digest.parse(digest)
        with self.ctx.write() as conn:
            repo_id = self.repositories.id_for(conn, ref)
            in_use = conn.execute(
                sa.select(manifests.c.digest)
                .join(manifest_blobs, manifest_blobs.c.manifest_id == manifests.c.id)
                .where(manifests.c.repository_id == repo_id, manifest_blobs.c.digest == digest)
                .limit(1)
            ).scalar()
            if in_use:
                raise ManifestReferenced(
                    f"blob {digest} is used by manifest {in_use} in repository '{ref.name}'; delete the manifest first"
                )
            deleted = conn.execute(
                sa.delete(repository_blobs).where(
                    repository_blobs.c.repository_id == repo_id, repository_blobs.c.digest == digest
                )
            ).rowcount
            if not deleted:
                raise blob_unknown(ref, digest)
