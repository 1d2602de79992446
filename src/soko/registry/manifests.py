"""Manifests and tags: validated push, pull (with pull-time recording), delete, listing, referrers."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import sqlalchemy as sa

from soko.access import repository_arn
from soko.batcher import Batcher
from soko.crypto.rows import RowSealer, plain_length
from soko.digest import Digest, compute, is_digest
from soko.errors import (
    DigestInvalid,
    ImageArchived,
    ImageChanged,
    LimitExceeded,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestReferenced,
    ManifestUnknown,
    ReferencedManifestUnknown,
    TagImmutable,
    TooLarge,
)
from soko.kernel import scan_queue, signing_queue
from soko.kernel.context import DomainContext
from soko.kernel.events import image_action, lifecycle_expiry, replication_action
from soko.kernel.unit_of_work import UnitOfWork
from soko.meta.db import retry_on_deadlock
from soko.meta.schema import blobs, manifest_blobs, manifest_children, manifests, repository_blobs, tags
from soko.meta.schema import repositories as repos
from soko.names import validate_tag
from soko.registry import media_types as mt
from soko.registry.encryption import Keyspace, KeyUnusable, keyspace_of
from soko.registry.immutability import tag_is_immutable
from soko.registry.manifest_format import ParsedManifest, parse_manifest
from soko.registry.models import ManifestRecord, PutManifestResult, RepoRef
from soko.registry.repositories import Repositories


def manifest_unknown(ref: RepoRef, reference: str) -> ManifestUnknown:
    return ManifestUnknown(f"manifest '{reference}' is not in repository '{ref.name}'")


def archived_image(ref: RepoRef, reference: str, status: str, digest: str) -> ImageArchived:
    if status == "ACTIVATING":
        return ImageArchived(
            f"image '{reference}' in repository '{ref.name}' is being restored from the archive storage class and "
            "cannot be pulled until its status is ACTIVE (aws ecr describe-images --filter imageStatus=ACTIVATING)"
        )
    return ImageArchived(
        f"image '{reference}' in repository '{ref.name}' is archived and cannot be pulled; restore it with "
        f"aws ecr update-image-storage-class --repository-name {ref.name} --image-id imageDigest={digest} "
        "--target-storage-class STANDARD (or push it again), then pull it once its status is ACTIVE"
    )


class _ManifestCache:
    """(account, repository, reference) → manifest, valid while the metadata generation is unchanged.

    Bounded by total payload bytes; a plain dict with FIFO eviction is enough (hot manifests are re-inserted).
    """

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self._items: dict[tuple[str, str, str], tuple[int, ManifestRecord]] = {}
        self._bytes = 0
        self._max_bytes = max_bytes
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, str], generation: int) -> ManifestRecord | None:
        item = self._items.get(key)
        return item[1] if item is not None and item[0] == generation else None

    def put(self, key: tuple[str, str, str], generation: int, record: ManifestRecord) -> None:
        size = len(record.payload)
        if size > self._max_bytes // 16:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= len(old[1].payload)
            while self._items and self._bytes + size > self._max_bytes:
                _, (_, evicted) = self._pop_oldest()
                self._bytes -= len(evicted.payload)
            self._items[key] = (generation, record)
            self._bytes += size

    def _pop_oldest(self) -> tuple[tuple[str, str, str], tuple[int, ManifestRecord]]:
        key = next(iter(self._items))
        return key, self._items.pop(key)


class Manifests:
    def __init__(self, ctx: DomainContext, repositories: Repositories) -> None:
        self.ctx = ctx
        self.repositories = repositories
        # lastRecordedPullTime: batched so a pull costs no write transaction; flushed about every second.
        self._pulls: Batcher[int, float] = Batcher("pulls", self._write_pulls, max)
        self._cache = _ManifestCache()

    # ---- push -------------------------------------------------------------------------------------------------
    def _check_key(self, ref: RepoRef, applied_for: str) -> tuple[Keyspace | None, RowSealer | None]:
        """A push to a repository whose KMS key is unusable fails even when every blob was already there (as in
        ECR); checked before the transaction, since KMS may write (a due rotation or deletion). A missing
        repository: the key its creation template would give it (``applied_for``). Returns the keyspace and the
        sealer its manifest rows are sealed with (its own key: ``Encryption.row_sealer``)."""
        with self.ctx.db.read() as conn:
            space = self.repositories.planned_keyspace(conn, ref, applied_for)
        if space is None:
            return None, None
        return space, self.repositories.encryption.row_sealer(space)

    def put(
        self,
        ref: RepoRef,
        reference: str,
        payload: bytes,
        content_type: str | None,
        *,
        replicated_from: tuple[str, str] | None = None,
        sign: bool = True,
        may_sign: Callable[[str], str | None] | None = None,
    ) -> PutManifestResult:
        """Store a manifest (and move ``reference`` onto it when it is a tag). ``replicated_from`` (source region,
        source account): a replication's copy, which creates a missing repository as replication does and is
        announced as an ``ECR Replication Action`` instead of a push (so it never replicates on: no chaining).
        ``sign``: False for content Soko did not receive as a push (a pull-through cache's copy of an upstream), which
        managed signing must not vouch for. ``may_sign(profile)``: the pusher's permission to sign with a signing
        profile (None: allowed; else the reason), which the front ends check through the authorizer."""
        if len(payload) > self.ctx.settings.max_manifest_size:
            raise TooLarge(
                f"manifest is {len(payload)} bytes; the limit is {self.ctx.settings.max_manifest_size} bytes"
            )
        tag: str | None = None
        if is_digest(reference):
            algorithm = Digest.parse(reference).algorithm
            digest = compute(payload, algorithm)
            if digest != reference:
                raise DigestInvalid(f"manifest digest {digest} does not match the digest {reference} in the request")
        else:
            tag = validate_tag(reference)
            digest = compute(payload)
        parsed = parse_manifest(payload, content_type)
        space, sealer = self._check_key(ref, "CREATE_ON_PUSH" if replicated_from is None else "REPLICATION")

        def store() -> PutManifestResult:
            with self.ctx.transaction(invalidates=True) as tx:
                conn, now = tx.conn, tx.now
                if replicated_from is None:
                    repo_id = self.repositories.id_for_push(tx, ref)
                else:
                    repo_id = self.repositories.id_for_replication(tx, ref)
                if self.repositories.keyspace(conn, repo_id) != space:  # created meanwhile by someone else
                    raise KeyUnusable(
                        f"repository '{ref.name}' was created meanwhile with another encryption; push again",
                        "KMSInvalidStateException",
                    )
                image_size = self._check_references(conn, ref, repo_id, parsed)
                max_image_size = self.repositories.quotas.get(ref.account_id, "max_image_size", conn)
                if image_size > max_image_size:
                    raise TooLarge(
                        f"image {digest} is {image_size} bytes; the image size limit is {max_image_size} bytes"
                    )
                existing = sa.select(manifests.c.id).where(
                    manifests.c.repository_id == repo_id, manifests.c.digest == digest
                )
                if not self.ctx.db.is_sqlite:
                    # Hold the row against a concurrent delete until the tag is set (else the tag's foreign key fails);
                    # a delete that got there first makes this find nothing, and the manifest is inserted again.
                    existing = existing.with_for_update(read=True, key_share=True)
                manifest_id = conn.execute(existing).scalar()
                created = manifest_id is None
                if manifest_id is not None:
                    self._restore_on_push(tx, ref, repo_id, manifest_id, parsed)
                if created:
                    manifest_id = self._insert(conn, repo_id, digest, payload, parsed, image_size, now, sealer)
                if manifest_id is None:  # a concurrent push of the same manifest inserted it first
                    created = False
                    manifest_id = conn.execute(
                        sa.select(manifests.c.id).where(
                            manifests.c.repository_id == repo_id, manifests.c.digest == digest
                        )
                    ).scalar_one()
                tag_moved = tag is not None and self._set_tag(conn, ref, repo_id, tag, manifest_id, digest, now)
                if replicated_from is not None and (created or tag_moved):
                    tx.emit(
                        replication_action(
                            ref.account_id,
                            self.ctx.settings.region,
                            ref.name,
                            digest,
                            source_region=replicated_from[0],
                            source_account=replicated_from[1],
                            tag=tag if tag_moved else None,
                        )
                    )
                elif created or tag_moved:
                    tx.emit(
                        image_action(
                            ref.account_id,
                            ref.name,
                            "PUSH",
                            digest,
                            tag=tag if tag_moved else None,
                            media_type=parsed.media_type,
                            artifact_type=parsed.effective_artifact_type,
                            referrer=parsed.subject is not None,
                        )
                    )
                if created:
                    self._scan_on_push(tx, repo_id, digest, parsed)
                    if replicated_from is None and sign and parsed.subject is None:
                        # managed signing: a new manifest (not a referrer: signatures are not signed again) in a
                        # repository the account's signing rules match gets its signing job, run after the commit
                        signing_queue.request(tx, ref.account_id, ref.name, repo_id, digest, may_sign)
            return PutManifestResult(digest, parsed.subject.digest if parsed.subject else None, created, tag_moved)

        # A deadlock victim (PostgreSQL picks one when, say, an archive move and this push lock the same rows in
        # opposite orders) is rolled back whole, events and all, so it is simply run again.
        return retry_on_deadlock(store)

    def _restore_on_push(
        self, tx: UnitOfWork, ref: RepoRef, repo_id: int, manifest_id: int, parsed: ParsedManifest
    ) -> None:
        """Pushing an archived (or restoring) image again restores it at once, as ECR does: its content is in
        standard storage again (``_check_references`` refused any still archived)."""
        row = tx.conn.execute(
            sa.select(
                manifests.c.digest, manifests.c.image_size, manifests.c.image_status, manifests.c.last_archived_at
            ).where(manifests.c.id == manifest_id)
        ).first()
        if row is None or row.image_status == "ACTIVE":
            return
        from soko.registry.storage_class import charge_early_removal  # (it builds on this module)

        charge_early_removal(tx, repo_id, row, "restore")
        tx.conn.execute(
            sa.update(manifests)
            .where(manifests.c.id == manifest_id)
            .values(image_status="ACTIVE", last_activated_at=tx.now)
        )
        tx.emit(
            image_action(
                ref.account_id,
                ref.name,
                "UPDATE_STORAGE_CLASS",
                row.digest,
                media_type=parsed.media_type,
                artifact_type=parsed.effective_artifact_type,
                referrer=parsed.subject is not None,
                target_storage_class="STANDARD",
                last_activated_at=tx.now,
            )
        )

    @staticmethod
    def _scan_on_push(tx: UnitOfWork, repo_id: int, digest: str, parsed: ParsedManifest) -> None:
        """A new image in a repository that scans on push (a registry scanning rule, or the repository's
        scanOnPush): queue its scan in this transaction (the scan runs later, as a leased job; within 24 hours of
        the image's last basic scan nothing is queued, as ECR counts it)."""
        if parsed.is_index or parsed.config is None or parsed.config.media_type not in scan_queue.IMAGE_CONFIGS:
            return
        scan_queue.on_push(tx, repo_id, digest)

    def _check_references(self, conn: sa.Connection, ref: RepoRef, repo_id: int, parsed: ParsedManifest) -> int:
        """Every referenced blob and child must be in the repository; returns the image size."""
        if parsed.is_index:
            wanted = {c.digest for c in parsed.children}
            children = sa.select(manifests.c.digest, manifests.c.image_size, manifests.c.image_status).where(
                manifests.c.repository_id == repo_id, manifests.c.digest.in_(wanted)
            )
            if not self.ctx.db.is_sqlite:
                # Keep the children until the index commits: a delete locks the manifest before it looks for
                # parents, so it either waits and then sees this index, or deletes first and this finds no child.
                children = children.with_for_update(read=True, key_share=True)
            rows = conn.execute(children).all() if wanted else []
            found = {r.digest: r.image_size for r in rows}
            archived = sorted(r.digest for r in rows if r.image_status != "ACTIVE")
            if archived:
                raise ReferencedManifestUnknown(
                    f"index references archived images in repository '{ref.name}': {', '.join(archived[:10])}; "
                    "restore them first (update-image-storage-class --target-storage-class STANDARD)",
                    digests=archived,
                )
            missing = sorted(wanted - found.keys())
            if missing:
                raise ReferencedManifestUnknown(
                    f"index references manifests not in repository '{ref.name}': {', '.join(missing[:10])}; "
                    "push them first",
                    digests=missing,
                )
            return max(found.values(), default=0)
        descriptors = [d for d in parsed.blob_descriptors if not (d.media_type in mt.NON_DISTRIBUTABLE and d.has_urls)]
        wanted = {d.digest for d in descriptors}
        query = (
            sa.select(blobs.c.digest, blobs.c.size, blobs.c.tier)
            .join(repository_blobs, repository_blobs.c.digest == blobs.c.digest)
            .where(repository_blobs.c.repository_id == repo_id, blobs.c.digest.in_(wanted))
        )
        if not self.ctx.db.is_sqlite and wanted:
            # Keep the blob rows (a move to the archive tier locks them to check that no active image uses them) and
            # then the links this manifest relies on (the garbage collector locks them to delete) until it commits.
            # Every blob row first, then every link, each in digest order: the order the collector takes them in. One
            # statement locking both per joined row (link d1, blob d1, link d2, …) deadlocked a collector holding
            # blob d2 and waiting for link d1.
            conn.execute(
                sa.select(blobs.c.digest).where(blobs.c.digest.in_(wanted)).order_by(blobs.c.digest).with_for_update(
                    read=True
                )
            ).all()
            query = query.order_by(repository_blobs.c.digest).with_for_update(read=True, of=repository_blobs)
        rows = conn.execute(query).all() if wanted else []
        archived = sorted(r.digest for r in rows if r.tier == "archive")
        if archived and conn.execute(sa.select(repos.c.encryption_type).where(repos.c.id == repo_id)).scalar() != (
            "AES256"
        ):
            archived = []  # a KMS repository reads its own copy under its key, never the service-key one archived
        if archived:
            # Content in the archive tier is not served (HEAD answers 404), so clients upload it again, which
            # brings it back; only a client that skipped that gets here.
            raise ManifestBlobUnknown(
                f"manifest references blobs that are in the archive storage class with archived images: "
                f"{', '.join(archived[:10])}; upload them again (or restore those images) first",
                digests=archived,
            )
        sizes = {r.digest: r.size for r in rows}
        missing = sorted(wanted - sizes.keys())
        if missing:
            raise ManifestBlobUnknown(
                f"manifest references blobs not in repository '{ref.name}': {', '.join(missing[:10])}; "
                "upload them first",
                digests=missing,
            )
        for d in descriptors:
            if sizes[d.digest] != d.size:
                raise ManifestInvalid(f"manifest says blob {d.digest} has {d.size} bytes, but it has {sizes[d.digest]}")
        return sum(d.size for d in parsed.blob_descriptors)

    def _insert(
        self,
        conn,
        repo_id: int,
        digest: str,
        payload: bytes,
        parsed: ParsedManifest,
        image_size: int,
        now: float,
        sealer: RowSealer | None,
    ) -> int | None:
        """None when the row already exists (inserted by a concurrent push since we looked)."""
        manifest_id = conn.execute(
            self.ctx.db.insert_ignore(manifests)
            .values(
                repository_id=repo_id,
                digest=digest,
                media_type=parsed.media_type,
                artifact_type=parsed.effective_artifact_type,
                # sealed in its row (soko.crypto.rows): under the keyspace's key in a KMS repository
                payload=self.repositories.encryption.seal_row(payload, digest, sealer),
                image_size=image_size,
                config_digest=parsed.config.digest if parsed.config else None,
                subject_digest=parsed.subject.digest if parsed.subject else None,
                annotations=json.dumps(parsed.annotations) if parsed.annotations else None,
                pushed_at=now,
            )
            .returning(manifests.c.id)
        ).scalar()
        if manifest_id is None:
            return None
        blob_digests = {
            d.digest for d in parsed.blob_descriptors if not (d.media_type in mt.NON_DISTRIBUTABLE and d.has_urls)
        }
        if blob_digests:
            conn.execute(sa.insert(manifest_blobs), [{"manifest_id": manifest_id, "digest": d} for d in blob_digests])
        child_digests = {c.digest for c in parsed.children}
        if child_digests:
            conn.execute(
                sa.insert(manifest_children), [{"parent_id": manifest_id, "child_digest": d} for d in child_digests]
            )
        return manifest_id

    def _set_tag(self, conn, ref: RepoRef, repo_id: int, tag: str, manifest_id: int, digest: str, now: float) -> bool:
        """Point ``tag`` at the manifest; False when it already did."""
        current = conn.execute(
            sa.select(tags.c.manifest_id).where(tags.c.repository_id == repo_id, tags.c.name == tag)
        ).scalar()
        if current == manifest_id:
            return False
        if current is not None:
            repo = self.repositories.get(ref, conn)
            if tag_is_immutable(tag, repo.tag_mutability, repo.tag_mutability_filters):
                raise TagImmutable(
                    f"The image tag '{tag}' already exists in the '{ref.name}' repository and cannot be overwritten "
                    "because the tag is immutable."
                )
        tag_count = conn.execute(
            sa.select(sa.func.count()).select_from(tags).where(tags.c.manifest_id == manifest_id)
        ).scalar_one()
        max_tags = self.repositories.quotas.get(ref.account_id, "max_tags_per_image", conn)
        if tag_count >= max_tags:
            raise LimitExceeded(
                f"image {digest} in repository '{ref.name}' already has {tag_count} tags; "
                f"an image can have at most {max_tags} tags"
            )
        conn.execute(
            self.ctx.db.upsert(tags, ["repository_id", "name"], {"manifest_id": None, "updated_at": None}).values(
                repository_id=repo_id, name=tag, manifest_id=manifest_id, updated_at=now
            )
        )
        return True

    # ---- pull -------------------------------------------------------------------------------------------------
    _BY_TAG = (
        sa.select(
            manifests.c.id,
            manifests.c.digest,
            manifests.c.media_type,
            manifests.c.payload,
            manifests.c.image_status,
            repos.c.encryption_type,
            repos.c.kms_key,
        )
        .select_from(
            tags.join(manifests, manifests.c.id == tags.c.manifest_id).join(repos, repos.c.id == tags.c.repository_id)
        )
        .where(
            repos.c.account_id == sa.bindparam("account"),
            repos.c.name == sa.bindparam("repo"),
            tags.c.name == sa.bindparam("ref"),
        )
    )
    _BY_DIGEST = (
        sa.select(
            manifests.c.id,
            manifests.c.digest,
            manifests.c.media_type,
            manifests.c.payload,
            manifests.c.image_status,
            repos.c.encryption_type,
            repos.c.kms_key,
        )
        .select_from(manifests.join(repos, repos.c.id == manifests.c.repository_id))
        .where(
            repos.c.account_id == sa.bindparam("account"),
            repos.c.name == sa.bindparam("repo"),
            manifests.c.digest == sa.bindparam("ref"),
        )
    )

    def cached(self, ref: RepoRef, reference: str, *, record_pull: bool = False) -> ManifestRecord | None:
        """``get`` answered from this process's cache, or None (then ``get`` reads the database): what an event
        loop may call."""
        self._check_reference(reference)
        record = self._cache.get((ref.account_id, ref.name, reference), self.ctx.generation.current())
        if record is not None and record_pull:
            self._pulls.add(self.pullable(ref, record, reference).id, self.ctx.clock())
        return record

    @staticmethod
    def _check_reference(reference: str) -> bool:
        """Whether ``reference`` is a digest (checked), else a tag (checked)."""
        if is_digest(reference):
            Digest.parse(reference)
            return True
        validate_tag(reference)
        return False

    def get(self, ref: RepoRef, reference: str, *, record_pull: bool = False) -> ManifestRecord:
        by_digest = self._check_reference(reference)
        key = (ref.account_id, ref.name, reference)
        generation = self.ctx.generation.current()  # read before querying; see soko.meta.changes
        record = self._cache.get(key, generation)
        if record is None:
            with self.ctx.db.read() as conn:
                row = conn.execute(
                    self._BY_DIGEST if by_digest else self._BY_TAG,
                    {"account": ref.account_id, "repo": ref.name, "ref": reference},
                ).first()
                if row is None:
                    self.repositories.id_for(conn, ref)
                    raise manifest_unknown(ref, reference)
            # a KMS repository's manifest needs its key usable (KeyUnusable: crypto-shredding covers manifests)
            space = keyspace_of(row.encryption_type, row.kms_key, ref.account_id)
            payload = self.repositories.encryption.open_row(row.payload, row.digest, space)
            record = ManifestRecord(row.id, row.digest, row.media_type, payload, row.image_status)
            self._cache.put(key, generation, record)
        if record_pull:  # a pull: refused for an archived image (and not recorded)
            self._pulls.add(self.pullable(ref, record, reference).id, self.ctx.clock())
        return record

    @staticmethod
    def pullable(ref: RepoRef, record: ManifestRecord, reference: str) -> ManifestRecord:
        """``record``, unless its image is archived (or still being restored): ECR answers pulls of it with a 404."""
        if record.status == "ACTIVE":
            return record
        raise archived_image(ref, reference, record.status, record.digest)

    def flush_pulls(self) -> int:
        return self._pulls.flush()

    def _write_pulls(self, pending: dict[int, float]) -> None:
        with self.ctx.write() as conn:
            conn.execute(
                sa.update(manifests)
                .where(manifests.c.id == sa.bindparam("mid"))
                .values(last_pulled_at=sa.bindparam("ts")),
                [{"mid": k, "ts": v} for k, v in pending.items()],
            )

    # ---- delete -----------------------------------------------------------------------------------------------
    def delete(self, ref: RepoRef, reference: str, *, drop_untagged: bool = False) -> str | None:
        """By digest: the manifest and all its tags. By tag: only the tag (OCI 1.1) — or, with ``drop_untagged``
        (ECR's BatchDeleteImage), also the image when that was its last tag and no index references it.
        Returns the digest the tag pointed at (by tag), else None."""
        with self.ctx.transaction(invalidates=True) as tx:
            repo_id = self.repositories.id_for(tx.conn, ref)
            if not is_digest(reference):
                return self._delete_tag(tx, ref, repo_id, reference, drop_untagged)
            self._delete_digest(tx, ref, repo_id, reference)
        return None

    def expire(self, ref: RepoRef, digest: str, rule_priority: int, tags_evaluated: list[str]) -> None:
        """A lifecycle rule's expiry: the image by digest, with its audit record and events, in one transaction."""
        with self.ctx.transaction(invalidates=True) as tx:
            repo_id = self.repositories.id_for(tx.conn, ref)
            # The rule was evaluated on these tags: an image tagged since (a push of `prod` onto it, say) is not
            # what the rule selected. Lock the row first (PostgreSQL) so no tag moves between the check and delete.
            locked = sa.select(manifests.c.id).where(manifests.c.repository_id == repo_id, manifests.c.digest == digest)
            if not self.ctx.db.is_sqlite:
                locked = locked.with_for_update()
            manifest_id = tx.conn.execute(locked).scalar()
            if manifest_id is not None:
                now_tagged = tx.conn.execute(sa.select(tags.c.name).where(tags.c.manifest_id == manifest_id)).scalars()
                if sorted(now_tagged) != sorted(tags_evaluated):
                    raise ImageChanged(f"image {digest} in '{ref.name}' was re-tagged since the lifecycle evaluation")
            self._delete_digest(tx, ref, repo_id, digest)
            region = self.ctx.settings.region
            tx.audit(
                "lifecycle",
                "soko:lifecycle",
                "ecr:BatchDeleteImage",
                f"{repository_arn(region, ref.account_id, ref.name)}@{digest}",
                f"expired by rule {rule_priority} (tags: {','.join(tags_evaluated) or 'untagged'})",
            )
            tx.emit(lifecycle_expiry(ref.account_id, region, ref.name, digest, tags_evaluated, rule_priority))

    def _delete_tag(self, tx: UnitOfWork, ref: RepoRef, repo_id: int, tag: str, drop_untagged: bool) -> str:
        conn = tx.conn
        validate_tag(tag)
        tagged = (
            sa.select(manifests.c.id, manifests.c.digest, manifests.c.subject_digest)
            .join(tags, tags.c.manifest_id == manifests.c.id)
            .where(tags.c.repository_id == repo_id, tags.c.name == tag)
        )
        if drop_untagged and not self.ctx.db.is_sqlite:
            tagged = tagged.with_for_update(of=manifests)  # before _still_needed: see _check_references
        row = conn.execute(tagged).first()
        if (
            row is None
            or not conn.execute(sa.delete(tags).where(tags.c.repository_id == repo_id, tags.c.name == tag)).rowcount
        ):
            raise manifest_unknown(ref, tag)
        referrer = row.subject_digest is not None
        tx.emit(image_action(ref.account_id, ref.name, "DELETE", row.digest, tag=tag, referrer=referrer))
        if drop_untagged and not self._still_needed(conn, repo_id, row.id, row.digest):
            self._drop(tx, ref, repo_id, row.id)
        return row.digest

    def _delete_digest(self, tx: UnitOfWork, ref: RepoRef, repo_id: int, digest: str) -> None:
        conn = tx.conn
        Digest.parse(digest)
        target = sa.select(manifests.c.id, manifests.c.subject_digest).where(
            manifests.c.repository_id == repo_id, manifests.c.digest == digest
        )
        if not self.ctx.db.is_sqlite:
            target = target.with_for_update()  # before the parent check: see _check_references
        row = conn.execute(target).first()
        if row is None:
            raise manifest_unknown(ref, digest)
        manifest_id = row.id
        parent = conn.execute(
            sa.select(manifests.c.digest)
            .join(manifest_children, manifest_children.c.parent_id == manifests.c.id)
            .where(manifests.c.repository_id == repo_id, manifest_children.c.child_digest == digest)
            .limit(1)
        ).scalar()
        if parent:
            raise ManifestReferenced(
                f"manifest {digest} is referenced by the manifest list {parent} in repository "
                f"'{ref.name}'; delete the list first"
            )
        self._emit_deletes(tx, ref, manifest_id, digest, referrer=row.subject_digest is not None)
        self._drop(tx, ref, repo_id, manifest_id)

    @classmethod
    def _drop(cls, tx: UnitOfWork, ref: RepoRef, repo_id: int, manifest_id: int) -> None:
        """Delete the manifest (tags and references cascade) and its referrers, and queue reviews of the links they
        may have left unreferenced: every path that deletes a manifest goes through here, so the grace period always
        holds and no referrer outlives its subject.

        Referrers (ECR deletes an image's referrers after it — AWS user guide: image-signing, lifecycle policies) go
        in the same transaction, each with its DELETE events (one per tag, or one untagged), their own referrers in
        turn: a work list, not recursion, so a chain of referrers as long as a pusher likes cannot overflow the
        stack. One an index of the repository lists stays: the index needs it."""
        subjects = [cls._drop_one(tx, repo_id, manifest_id)]
        while subjects:
            subject = subjects.pop()
            if subject is None:
                continue
            query = sa.select(manifests.c.id, manifests.c.digest).where(
                manifests.c.repository_id == repo_id, manifests.c.subject_digest == subject
            )
            if not tx.ctx.db.is_sqlite:
                query = query.with_for_update()  # as _delete_digest locks the row it deletes
            for row in tx.conn.execute(query).all():
                if cls._in_an_index(tx.conn, repo_id, row.digest):
                    continue
                cls._emit_deletes(tx, ref, row.id, row.digest, referrer=True)
                subjects.append(cls._drop_one(tx, repo_id, row.id))

    @staticmethod
    def _drop_one(tx: UnitOfWork, repo_id: int, manifest_id: int) -> str | None:
        """Delete one manifest row, with what goes with it (link reviews, early-removal charge, scan and signing
        rows); returns its digest (None: already gone)."""
        blob_digests = tx.conn.execute(
            sa.select(manifest_blobs.c.digest).where(manifest_blobs.c.manifest_id == manifest_id)
        ).scalars()
        tx.review_links(repo_id, blob_digests, "manifest-delete")
        row = tx.conn.execute(
            sa.select(
                manifests.c.digest, manifests.c.image_size, manifests.c.image_status, manifests.c.last_archived_at
            ).where(manifests.c.id == manifest_id)
        ).first()
        if row is None:
            return None
        from soko.registry.storage_class import charge_early_removal  # (it builds on this module)

        charge_early_removal(tx, repo_id, row, "delete")  # archived < 90 days: the rest is billed, as ECR does
        tx.conn.execute(sa.delete(manifests).where(manifests.c.id == manifest_id))
        scan_queue.forget(tx, repo_id, row.digest)  # its scan (and its inventory, if no repository holds it) go too
        signing_queue.forget(tx, repo_id, row.digest)  # and its signing statuses
        return row.digest

    @staticmethod
    def _emit_deletes(tx: UnitOfWork, ref: RepoRef, manifest_id: int, digest: str, *, referrer: bool) -> None:
        """A deleted manifest's DELETE events: one per tag, or one untagged."""
        names = tx.conn.execute(
            sa.select(tags.c.name).where(tags.c.manifest_id == manifest_id).order_by(tags.c.name)
        ).scalars()
        for tag in list(names) or [None]:
            tx.emit(image_action(ref.account_id, ref.name, "DELETE", digest, tag=tag, referrer=referrer))

    @staticmethod
    def _still_needed(conn: sa.Connection, repo_id: int, manifest_id: int, digest: str) -> bool:
        """Another tag, or an index of the repository, still refers to the manifest."""
        if conn.execute(sa.select(tags.c.name).where(tags.c.manifest_id == manifest_id).limit(1)).first():
            return True
        return Manifests._in_an_index(conn, repo_id, digest)

    @staticmethod
    def _in_an_index(conn: sa.Connection, repo_id: int, digest: str) -> bool:
        """An index of the repository lists the manifest."""
        return (
            conn.execute(
                sa.select(manifest_children.c.parent_id)
                .join(manifests, manifests.c.id == manifest_children.c.parent_id)
                .where(manifests.c.repository_id == repo_id, manifest_children.c.child_digest == digest)
                .limit(1)
            ).first()
            is not None
        )

    # ---- listing ----------------------------------------------------------------------------------------------
    def list_tags(self, ref: RepoRef, *, last: str | None = None, limit: int | None = None) -> list[str]:
        with self.ctx.db.read() as conn:
            repo_id = self.repositories.id_for(conn, ref)
            name = self.ctx.db.bytewise(tags.c.name)
            query = sa.select(tags.c.name).where(tags.c.repository_id == repo_id).order_by(name)
            if last:
                query = query.where(name > last)
            if limit is not None:
                query = query.limit(limit)
            return list(conn.execute(query).scalars())

    def referrers(self, ref: RepoRef, subject: str, artifact_type: str | None = None) -> list[dict]:
        """Descriptors of the manifests whose ``subject`` is ``subject`` (an empty list for an unknown subject)."""
        Digest.parse(subject)
        with self.ctx.db.read() as conn:
            repo_id = self.repositories.id_for(conn, ref)
            query = (
                sa.select(
                    manifests.c.digest,
                    manifests.c.media_type,
                    manifests.c.artifact_type,
                    manifests.c.annotations,
                    plain_length(manifests.c.payload).label("size"),
                )
                .where(manifests.c.repository_id == repo_id, manifests.c.subject_digest == subject)
                .order_by(manifests.c.pushed_at, manifests.c.digest)
            )
            if artifact_type is not None:
                query = query.where(manifests.c.artifact_type == artifact_type)
            rows = conn.execute(query).all()
        result = []
        for row in rows:
            descriptor = {"mediaType": row.media_type, "digest": row.digest, "size": row.size}
            if row.artifact_type:
                descriptor["artifactType"] = row.artifact_type
            if row.annotations:
                descriptor["annotations"] = json.loads(row.annotations)
            result.append(descriptor)
        return result
