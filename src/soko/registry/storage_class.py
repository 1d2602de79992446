"""The archive storage class: UpdateImageStorageClass, lifecycle transitions, restores, and the content's two tiers.

**Images** (``manifests.image_status``). Archiving is immediate: ACTIVE → ARCHIVED in one unit of work, with its
``UPDATE_STORAGE_CLASS`` event, and from then on pulls (/v2/ manifest GET and HEAD, BatchGetImage) refuse the image
as ECR does (a 404 that says how to restore). A restore (target STANDARD) is asynchronous, as ECR's: ARCHIVED →
ACTIVATING at once, then the one-shot leased job ``storage_class`` (keyed by the manifest id, queued in the same
transaction, so a committed request always runs, and again if its process dies) brings the content back and ends
ACTIVE, with ``lastActivatedAt`` and the STANDARD event. Pushing an archived image again restores it at once
(``Manifests.put``). An image's referrers follow it both ways, as do the children of an index (a child another
active index still references stays active); a child cannot be archived while an active index references it.

**Content** (``blobs.tier``). A blob goes to the archive tier once every image that references it is ARCHIVED and
every repository that links it holds one of those images (a link without an image is a push in flight): content
shared with an active image stays in standard storage. The archive store is ``archive_storage_url``'s (default: the
same store under ``archive/``), wrapped by ``SealedDriver`` like standard storage, so nothing is plaintext. A move
never happens under a row lock and never loses the live copy:

* to the archive: the content is copied (decrypted, hashed and verified against the digest, sealed again) to a path
  of its own (``archive/blobs/…/<hex>.<token>``); then, holding the blob row ``FOR UPDATE`` (the lock a push's
  ``FOR SHARE``, an upload completion and the collector take too), the transaction checks again that the blob may go,
  records the tier, path and seal, and buries the standard copy as a GC tombstone;
* back (a restore, or an upload of the same content, ``Uploads._commit_blob``): the copy goes to a private upload
  path, then under the row lock the pending tombstones of the digest are dropped, the copy moves to the blob's
  standard path and the archive copy is buried.

The tombstone executor deletes an object only when it is not the blob's current copy (``gc/tombstones.py``), so a
crash anywhere leaves either a complete move or a stray copy that ``soko gc`` sweeps.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Iterable

import sqlalchemy as sa

from soko.access import repository_arn
from soko.crypto.segments import SealBroken
from soko.errors import ContentUnreadable, ImageChanged, ManifestUnknown, StorageClassUpdateNotSupported
from soko.gc import tombstones
from soko.kernel.context import DomainContext
from soko.kernel.events import image_action
from soko.kernel.job_queue import enqueue
from soko.kernel.unit_of_work import UnitOfWork
from soko.meta.schema import (
    archive_charges,
    blobs,
    manifest_blobs,
    manifest_children,
    manifests,
    repository_blobs,
    tags,
)
from soko.meta.schema import repositories as repos
from soko.registry.capabilities import require_service_key_for_archive
from soko.registry.manifests import Manifests
from soko.registry.models import RepoRef
from soko.registry.repositories import Repositories
from soko.storage import PathNotFound, StorageDriver
from soko.storage.paths import archive_blob_path, blob_path, upload_dir, upload_path

log = logging.getLogger("soko.archive")

KIND = "storage_class"  # one-shot leased job, keyed by manifest id
ACTIVE, ARCHIVED, ACTIVATING = "ACTIVE", "ARCHIVED", "ACTIVATING"
ARCHIVE_TIER = "archive"
# ECR bills archived images for at least 90 days; lifecycle rules may not expire them sooner (soko.lifecycle).
MIN_ARCHIVE_SECONDS = 90 * 86400
_COPY_CHUNK = 1 << 20


def _not_found(ref: RepoRef, digest: str | None, tag: str | None) -> ManifestUnknown:
    return ManifestUnknown(
        f"The image with imageId {{imageDigest:'{digest or 'null'}', imageTag:'{tag or 'null'}'}} does not exist "
        f"within the repository with name '{ref.name}' in the registry with id '{ref.account_id}'"
    )


def charge_early_removal(tx: UnitOfWork, repo_id: int, row: sa.Row, reason: str) -> None:
    """An image leaving the archive (deleted, or restored) within 90 days of its archiving is charged the rest of
    them, as ECR bills the archive's minimum storage duration: its size x the seconds left, in ``archive_charges``."""
    if row.image_status != ARCHIVED or row.last_archived_at is None:
        return
    left = MIN_ARCHIVE_SECONDS - (tx.now - row.last_archived_at)
    if left <= 0:
        return
    repo = tx.conn.execute(sa.select(repos.c.account_id, repos.c.name).where(repos.c.id == repo_id)).first()
    if repo is None:
        return
    tx.conn.execute(
        sa.insert(archive_charges).values(
            account_id=repo.account_id,
            repository_name=repo.name,
            image_digest=row.digest,
            byte_seconds=int(row.image_size * left),
            charged_at=tx.now,
            reason=reason,
        )
    )


def archivable(conn: sa.Connection, digest: str) -> bool:
    """Whether a blob may go to the archive tier: some image references it, every image that does is ARCHIVED, and
    every repository linking it holds one of them (a link with no image is a push in flight, or GC's to collect)."""
    users = (
        sa.select(manifests.c.repository_id, manifests.c.image_status)
        .join(manifest_blobs, manifest_blobs.c.manifest_id == manifests.c.id)
        .where(manifest_blobs.c.digest == digest)
    )
    rows = conn.execute(users).all()
    if not rows or any(r.image_status != ARCHIVED for r in rows):
        return False
    holders = {r.repository_id for r in rows}
    links = set(
        conn.execute(sa.select(repository_blobs.c.repository_id).where(repository_blobs.c.digest == digest)).scalars()
    )
    return links <= holders


class StorageClasses:
    def __init__(self, ctx: DomainContext, repositories: Repositories, manifests_: Manifests) -> None:
        self.ctx = ctx
        self.repositories = repositories
        self.manifests = manifests_

    # ---- requests --------------------------------------------------------------------------------------------
    def update(self, ref: RepoRef, image_id: dict, target: str) -> tuple[dict, str]:
        """UpdateImageStorageClass: returns the image's id (digest, and the tag asked for) and its status after."""
        from soko.registry.images import check_image_id  # (images imports manifests, as this module does)

        failure = check_image_id(image_id)
        if failure is not None:
            raise _invalid(failure.reason)
        digest, tag = image_id.get("imageDigest"), image_id.get("imageTag")
        if target not in ("ARCHIVE", "STANDARD"):
            raise _invalid(f"targetStorageClass must be STANDARD or ARCHIVE, not {target!r}")
        with self.ctx.transaction(invalidates=True) as tx:
            repo_id = self._archivable_repository(tx.conn, ref)
            row = self._locked_image(tx.conn, repo_id, digest, tag)
            if row is None:
                raise _not_found(ref, digest, tag)
            shown = {"imageDigest": row.digest, **({"imageTag": tag} if tag else {})}
            if target == "ARCHIVE":
                status = self._archive(tx, ref, repo_id, row)
            else:
                status = self._restore(tx, ref, repo_id, row)
        return shown, status

    def transition(self, ref: RepoRef, digest: str, rule_priority: int, tags_evaluated: list[str]) -> None:
        """A lifecycle rule's transition to the archive: as UpdateImageStorageClass ARCHIVE, with an audit record,
        unless the image changed since the evaluation (re-tagged, or no longer ACTIVE)."""
        with self.ctx.transaction(invalidates=True) as tx:
            repo_id = self._archivable_repository(tx.conn, ref)
            row = self._locked_image(tx.conn, repo_id, digest, None)
            if row is None:
                raise _not_found(ref, digest, None)
            now_tagged = tx.conn.execute(sa.select(tags.c.name).where(tags.c.manifest_id == row.id)).scalars()
            if sorted(now_tagged) != sorted(tags_evaluated) or row.image_status != ACTIVE:
                raise ImageChanged(f"image {digest} in '{ref.name}' changed since the lifecycle evaluation")
            self._archive(tx, ref, repo_id, row)
            tx.audit(
                "lifecycle",
                "soko:lifecycle",
                "ecr:UpdateImageStorageClass",
                f"{repository_arn(self.ctx.settings.region, ref.account_id, ref.name)}@{digest}",
                f"archived by rule {rule_priority} (tags: {','.join(tags_evaluated) or 'untagged'})",
            )

    def _archivable_repository(self, conn: sa.Connection, ref: RepoRef) -> int:
        repo = self.repositories.get(ref, conn)
        require_service_key_for_archive(repo.encryption_type, ref.name)
        return repo.id

    _COLUMNS = (
        manifests.c.id,
        manifests.c.digest,
        manifests.c.media_type,
        manifests.c.artifact_type,
        manifests.c.subject_digest,
        manifests.c.image_size,
        manifests.c.image_status,
        manifests.c.last_archived_at,
    )

    def _locked_image(self, conn: sa.Connection, repo_id: int, digest: str | None, tag: str | None) -> sa.Row | None:
        query = sa.select(*self._COLUMNS).where(manifests.c.repository_id == repo_id)
        if tag:
            query = query.join(tags, tags.c.manifest_id == manifests.c.id).where(
                tags.c.repository_id == repo_id, tags.c.name == tag
            )
        if digest:
            query = query.where(manifests.c.digest == digest)
        if not self.ctx.db.is_sqlite:
            query = query.with_for_update(of=manifests)
        return conn.execute(query).first()

    def _archive(self, tx: UnitOfWork, ref: RepoRef, repo_id: int, row: sa.Row) -> str:
        if row.image_status == ARCHIVED:
            return ARCHIVED
        if row.image_status == ACTIVATING:
            raise StorageClassUpdateNotSupported(
                f"image {row.digest} in repository '{ref.name}' is being restored (ACTIVATING); archive it again "
                "once its status is ACTIVE"
            )
        parent = tx.conn.execute(
            sa.select(manifests.c.digest)
            .join(manifest_children, manifest_children.c.parent_id == manifests.c.id)
            .where(
                manifests.c.repository_id == repo_id,
                manifest_children.c.child_digest == row.digest,
                manifests.c.image_status != ARCHIVED,
            )
            .limit(1)
        ).scalar()
        if parent:
            raise StorageClassUpdateNotSupported(
                f"image {row.digest} in repository '{ref.name}' is referenced by the manifest list {parent}, which is "
                "not archived; archive the manifest list (its images go with it)"
            )
        for image in self._followers(tx.conn, repo_id, row, ARCHIVED):
            tx.conn.execute(
                sa.update(manifests)
                .where(manifests.c.id == image.id)
                .values(image_status=ARCHIVED, last_archived_at=tx.now)
            )
            tx.emit(self._event(ref, image, "ARCHIVE"))
            enqueue(self.ctx.db, tx.conn, KIND, str(image.id), time.time())
        return ARCHIVED

    def _restore(self, tx: UnitOfWork, ref: RepoRef, repo_id: int, row: sa.Row) -> str:
        if row.image_status != ARCHIVED:
            return row.image_status  # ACTIVE, or a restore already under way
        for image in self._followers(tx.conn, repo_id, row, ACTIVATING):
            charge_early_removal(tx, repo_id, image, "restore")
            tx.conn.execute(sa.update(manifests).where(manifests.c.id == image.id).values(image_status=ACTIVATING))
            enqueue(self.ctx.db, tx.conn, KIND, str(image.id), time.time())
        return ACTIVATING

    def _followers(self, conn: sa.Connection, repo_id: int, root: sa.Row, to: str) -> list[sa.Row]:
        """``root`` and the images that go with it: its referrers (and theirs), and an index's children — when
        archiving, only children no other active index references; when restoring, the archived ones."""
        moving: dict[int, sa.Row] = {root.id: root}
        frontier = [root]
        wanted = ACTIVE if to == ARCHIVED else ARCHIVED
        while frontier:
            digests = [r.digest for r in frontier]
            referrers = conn.execute(
                sa.select(*self._COLUMNS).where(
                    manifests.c.repository_id == repo_id, manifests.c.subject_digest.in_(digests)
                )
            ).all()
            children = conn.execute(
                sa.select(*self._COLUMNS)
                .join(manifest_children, manifest_children.c.child_digest == manifests.c.digest)
                .where(
                    manifests.c.repository_id == repo_id,
                    manifest_children.c.parent_id.in_([r.id for r in frontier]),
                )
            ).all()
            frontier = []
            child_ids = {c.id for c in children}
            for image in [*referrers, *children]:
                if image.id in moving or image.image_status != wanted:
                    continue
                if to == ARCHIVED and image.id in child_ids and self._kept_by_other_index(conn, repo_id, image, moving):
                    continue
                moving[image.id] = image
                frontier.append(image)
        return list(moving.values())

    @staticmethod
    def _kept_by_other_index(conn: sa.Connection, repo_id: int, child: sa.Row, moving: dict[int, sa.Row]) -> bool:
        parents = conn.execute(
            sa.select(manifests.c.id, manifests.c.image_status)
            .join(manifest_children, manifest_children.c.parent_id == manifests.c.id)
            .where(manifests.c.repository_id == repo_id, manifest_children.c.child_digest == child.digest)
        ).all()
        return any(p.id not in moving and p.image_status != ARCHIVED for p in parents)

    def _event(self, ref: RepoRef, image: sa.Row, target: str, activated: float | None = None):
        return image_action(
            ref.account_id,
            ref.name,
            "UPDATE_STORAGE_CLASS",
            image.digest,
            media_type=image.media_type,
            artifact_type=image.artifact_type,
            referrer=image.subject_digest is not None,
            target_storage_class=target,
            last_activated_at=activated,
        )

    # ---- the job ----------------------------------------------------------------------------------------------
    def run_job(self, key: str) -> str | None:
        """``storage_class``: move the content of image ``key`` (a manifest id) to the tier its status asks for; a
        restore ends ACTIVE. The job's row is deleted when done (``forget``), so finished moves do not pile up —
        but only while the image's status is still the one this run carried out: a request committed during the run
        (a restore while the archive moved content, an archive right after an activation) re-enqueued this same
        row, and forgetting it then would leave the image ACTIVATING for good (or archived in standard storage)."""
        from soko.kernel.job_queue import forget

        messages = []
        while True:
            done, message = self._move(int(key))
            if message:
                messages.append(message)
            with self.ctx.db.write() as conn:
                query = sa.select(manifests.c.image_status).where(manifests.c.id == int(key))
                if not self.ctx.db.is_sqlite:
                    query = query.with_for_update()  # the lock UpdateImageStorageClass takes to change the status
                status = conn.execute(query).scalar()
                if status is None or status == done:
                    forget(conn, KIND, key)
                    break
        # The copies left behind are tombstones now: delete them at once (not at the next GC run), so archiving
        # frees standard storage when the job ends.
        tombstones.execute(self.ctx)
        return "; ".join(messages) or None

    def _move(self, manifest_id: int) -> tuple[str | None, str | None]:
        """One pass of the job: the image's status it leaves (None: the image is gone) and what it did."""
        with self.ctx.db.read() as conn:
            row = conn.execute(
                sa.select(manifests.c.id, manifests.c.digest, manifests.c.image_status).where(
                    manifests.c.id == manifest_id
                )
            ).first()
            if row is None:
                return None, None
            digests = list(
                conn.execute(
                    sa.select(manifest_blobs.c.digest).where(manifest_blobs.c.manifest_id == manifest_id)
                ).scalars()
            )
        if row.image_status == ARCHIVED:
            moved = sum(self.to_archive(d) for d in digests)
            return ARCHIVED, (f"archived {moved} blob(s) of image {row.digest}" if moved else None)
        if row.image_status == ACTIVATING:
            moved = sum(self.to_standard(d) for d in digests)
            self._activate(manifest_id)
            return ACTIVE, f"restored image {row.digest} ({moved} blob(s) back from the archive)"
        return row.image_status, None

    def _activate(self, manifest_id: int) -> None:
        with self.ctx.transaction(invalidates=True) as tx:
            query = sa.select(*self._COLUMNS, manifests.c.repository_id).where(manifests.c.id == manifest_id)
            if not self.ctx.db.is_sqlite:
                query = query.with_for_update(of=manifests)
            row = tx.conn.execute(query).first()
            if row is None or row.image_status != ACTIVATING:
                return
            waiting = tx.conn.execute(
                sa.select(blobs.c.digest)
                .join(manifest_blobs, manifest_blobs.c.digest == blobs.c.digest)
                .where(manifest_blobs.c.manifest_id == manifest_id, blobs.c.tier == ARCHIVE_TIER)
                .limit(1)
            ).scalar()
            if waiting:  # archived again meanwhile by another image's move: the job runs again (backoff)
                raise RuntimeError(f"blob {waiting} of image {row.digest} is still in the archive tier")
            tx.conn.execute(
                sa.update(manifests)
                .where(manifests.c.id == manifest_id)
                .values(image_status=ACTIVE, last_activated_at=tx.now)
            )
            repo = tx.conn.execute(
                sa.select(repos.c.account_id, repos.c.name).where(repos.c.id == row.repository_id)
            ).first()
            assert repo is not None  # the manifest row is locked, so its repository is there
            tx.emit(self._event(RepoRef(repo.account_id, repo.name), row, "STANDARD", tx.now))

    # ---- moving content --------------------------------------------------------------------------------------
    def to_archive(self, digest: str) -> bool:
        """Move one blob to the archive tier if it may go; True when it moved."""
        with self.ctx.db.read() as conn:
            row = conn.execute(sa.select(blobs.c.tier, blobs.c.seal_id).where(blobs.c.digest == digest)).first()
            if row is None or row.tier == ARCHIVE_TIER or not archivable(conn, digest):
                return False
        archive = self.ctx.archive_storage
        path = archive_blob_path(digest, secrets.token_hex(8))
        source, dest = self._views(self.ctx.storage, archive, digest)
        self._copy(source, blob_path(digest), row.seal_id, dest, path, digest)
        keep = False
        try:
            with self.ctx.transaction(invalidates=True) as tx:  # (pulls that found it hot: soko.registry.blobs)
                locked = self._lock_blob(tx.conn, digest)
                if locked is None or locked.tier == ARCHIVE_TIER or not archivable(tx.conn, digest):
                    return False
                tx.conn.execute(
                    sa.update(blobs)
                    .where(blobs.c.digest == digest)
                    .values(tier=ARCHIVE_TIER, archive_path=path, archived_at=tx.now, seal_id=archive.seal_id(path))
                )
                _bury(tx, [(digest, blob_path(digest))], "archive")
                keep = True
        finally:
            if not keep:
                _delete_quietly(archive, path)
        return True

    def to_standard(self, digest: str) -> bool:
        """Bring one blob back from the archive tier; True when it moved."""
        with self.ctx.db.read() as conn:
            row = conn.execute(
                sa.select(blobs.c.tier, blobs.c.archive_path, blobs.c.seal_id).where(blobs.c.digest == digest)
            ).first()
        if row is None or row.tier != ARCHIVE_TIER:
            return False
        staging = f"restore-{secrets.token_hex(8)}"  # an upload path: a copy left by a crash is swept with them
        source, dest = self._views(self.ctx.archive_storage, self.ctx.storage, digest)
        self._copy(source, row.archive_path, row.seal_id, dest, upload_path(staging), digest)
        try:
            with self.ctx.transaction(invalidates=True) as tx:
                locked = self._lock_blob(tx.conn, digest)
                if locked is None or locked.tier != ARCHIVE_TIER or locked.archive_path != row.archive_path:
                    return False
                tombstones.clear_for_new_blob(tx.conn, digest, lock=not self.ctx.db.is_sqlite)
                tx.conn.execute(
                    sa.update(blobs)
                    .where(blobs.c.digest == digest)
                    .values(
                        tier=None,
                        archive_path=None,
                        archived_at=None,
                        seal_id=self.ctx.storage.seal_id(upload_path(staging)),
                    )
                )
                _bury(tx, [(digest, row.archive_path)], "restore")
                self.ctx.storage.move(upload_path(staging), blob_path(digest))  # last, as an upload completion
        finally:
            _delete_quietly(self.ctx.storage, upload_dir(staging))
        return True

    def _views(self, source: StorageDriver, dest: StorageDriver, digest: str) -> tuple[StorageDriver, StorageDriver]:
        """The stores' sealing views for a blob's move between tiers: its object key stays the same (sealed again
        under it), so every account's wrap of it (``blob_keys``) stays valid; an earlier version's content keeps
        the deployment key."""
        keys = self.repositories.account_keys
        object_key = keys.object_key(None, digest) if keys.enabled else None
        if object_key is None:
            return source, dest
        return keys.view(object_key, source), keys.view(object_key, dest)

    def _lock_blob(self, conn: sa.Connection, digest: str) -> sa.Row | None:
        query = sa.select(blobs.c.tier, blobs.c.archive_path).where(blobs.c.digest == digest)
        if not self.ctx.db.is_sqlite:
            query = query.with_for_update()
        return conn.execute(query).first()

    @staticmethod
    def _copy(
        source: StorageDriver, path: str, seal_id: str | None, dest: StorageDriver, dest_path: str, digest: str
    ) -> None:
        """Copy a blob between stores through their sealing layers, verified against its digest before the copy is
        committed (a damaged source never becomes the only copy)."""
        algorithm, _, expected = digest.partition(":")
        hasher = hashlib.new(algorithm)
        writer = dest.writer(dest_path)
        try:
            try:
                with source.sealed_reader(path, 0, seal_id) as f:
                    while data := f.read(_COPY_CHUNK):
                        hasher.update(data)
                        writer.write(data)
            except SealBroken as exc:
                raise ContentUnreadable(f"blob {digest} cannot be moved between tiers: {exc.why}") from None
            if hasher.hexdigest() != expected:
                raise ContentUnreadable(
                    f"blob {digest} cannot be moved between tiers: its stored content hashes to "
                    f"{algorithm}:{hasher.hexdigest()} (run soko fsck)"
                )
            writer.commit()
        except BaseException:
            writer.cancel()
            raise
        finally:
            writer.close()


def _bury(tx: UnitOfWork, entries: Iterable[tuple[str, str]], reason: str) -> None:
    tombstones.bury(tx.conn, entries, tx.now, reason)


def _delete_quietly(storage: StorageDriver, path: str) -> None:
    try:
        storage.delete(path)
    except PathNotFound:
        pass
    except Exception:  # a stray copy: the storage sweep removes it
        log.warning("could not delete %s; soko gc sweeps it", path, exc_info=True)


def _invalid(message: str) -> Exception:
    from soko.registry.repositories import ParameterInvalid

    return ParameterInvalid(f"Invalid parameter: {message}")
