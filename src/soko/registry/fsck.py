"""Consistency check of metadata against storage: re-hash every blob, check every manifest's references.

Storage objects awaiting deletion (GC tombstones, ``soko.gc.tombstones``) are not problems: their rows are gone and
the next gc run deletes them; they are counted in ``Progress.tombstones``. A blob row whose content is missing is
one, whatever tombstones say (the executor never deletes the object of a digest that has a row)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import BinaryIO

import sqlalchemy as sa

from soko.crypto.rows import RowBroken
from soko.crypto.segments import KeyUnavailable, SealBroken
from soko.errors import ContentUnreadable
from soko.kernel.context import DomainContext
from soko.kernel.keyspaces import Keyspace, keyspace_of
from soko.kernel.service_copies import has_service_copy, service_key_held
from soko.meta.schema import blob_copies, blobs, manifest_blobs, manifest_children, manifests, repository_blobs, tags
from soko.meta.schema import repositories as repos
from soko.registry.account_keys import AccountKeys
from soko.registry.encryption import Encryption, KeyUnusable
from soko.storage import PathNotFound, StorageDriver, paths
from soko.storage.paths import blob_path, trash_path

# What to do about a blob whose stored content is bad (upload completion always writes the verified content).
_BLOB_REMEDY = (
    "upload the original content again (a completed blob upload of this digest puts back content that is missing "
    "or of the wrong size; delete corrupt content from storage first), or delete the images that use it"
)


@dataclass(frozen=True)
class Problem:
    kind: str
    subject: str
    message: str
    affected: tuple[str, ...] = ()  # images (repository:tag, or repository@digest when untagged) that use it

    def __str__(self) -> str:
        text = f"{self.kind}: {self.subject}: {self.message}"
        if self.affected:
            shown = ", ".join(self.affected[:20]) + (
                f" and {len(self.affected) - 20} more" if len(self.affected) > 20 else ""
            )
            text += f"\n  used by: {shown}"
        return text


@dataclass
class Progress:
    """How far a check has come; read by a progress display on another thread."""

    blobs_total: int = 0
    bytes_total: int = 0
    blobs_checked: int = 0
    bytes_checked: int = 0
    phase: str = "blobs"
    tombstones: int = 0  # stored objects whose deletion is committed but not carried out yet
    keys_unusable: int = 0  # customer-key copies not re-hashed: their KMS key is disabled or pending deletion


def check(
    ctx: DomainContext,
    *,
    rehash: bool = True,
    progress: Progress | None = None,
    encryption: Encryption | None = None,
) -> Iterator[Problem]:
    """``encryption``: with a KeyService attached, the copies under customer keys are decrypted and re-hashed too
    (otherwise only their presence and size are checked)."""
    from soko.gc import tombstones  # (soko.gc needs soko.registry loaded first)

    progress = progress or Progress()
    progress.tombstones = sum(tombstones.pending(ctx).values())
    yield from _check_blobs(ctx, rehash, progress)
    yield from _check_copies(ctx, rehash, progress, encryption)
    progress.phase = "manifests"
    yield from _check_manifests(ctx, encryption or Encryption(ctx), progress)


def _bad_blob(ctx: DomainContext, kind: str, subject: str, message: str, used: str | None) -> Problem:
    """``used``: the digest whose images read this content (None: no image reads it)."""
    return Problem(kind, subject, f"{message}; {_BLOB_REMEDY}", tuple(images_using(ctx, used)) if used else ())


def images_using(ctx: DomainContext, digest: str) -> list[str]:
    """Every image a blob is part of: the manifests that reference it, the indexes over those, with their tags."""
    with ctx.db.read() as conn:
        direct = conn.execute(
            sa.select(manifests.c.id, manifests.c.repository_id, manifests.c.digest)
            .join(manifest_blobs, manifest_blobs.c.manifest_id == manifests.c.id)
            .where(manifest_blobs.c.digest == digest)
        ).all()
        found = {row.id: row for row in direct}
        frontier = list(direct)
        while frontier:  # indexes (of indexes) over the manifests found so far
            parents = conn.execute(
                sa.select(manifests.c.id, manifests.c.repository_id, manifests.c.digest)
                .join(manifest_children, manifest_children.c.parent_id == manifests.c.id)
                .where(
                    sa.tuple_(manifests.c.repository_id, manifest_children.c.child_digest).in_(
                        [(row.repository_id, row.digest) for row in frontier]
                    )
                )
            ).all()
            frontier = [row for row in parents if row.id not in found]
            found.update((row.id, row) for row in frontier)
        if not found:
            return []
        names = dict(
            conn.execute(
                sa.select(repos.c.id, repos.c.name).where(repos.c.id.in_({row.repository_id for row in found.values()}))
            ).all()
        )
        tagged: dict[int, list[str]] = {}
        for manifest_id, tag in conn.execute(
            sa.select(tags.c.manifest_id, tags.c.name).where(tags.c.manifest_id.in_(list(found))).order_by(tags.c.name)
        ):
            tagged.setdefault(manifest_id, []).append(tag)
    images = []
    for row in found.values():
        name = names.get(row.repository_id, "?")
        images += [f"{name}:{tag}" for tag in tagged.get(row.id, [])] or [f"{name}@{row.digest}"]
    return sorted(images)


def _check_blobs(ctx: DomainContext, rehash: bool, progress: Progress) -> Iterator[Problem]:
    with ctx.db.read() as conn:
        # A blob held only under customer keys (KMS repositories) has no service-key copy: its copies are checked
        # by _check_copies. Every other row needs its content at blobs/ (or in the archive tier, where it says),
        # also one whose AES256 repositories are gone (held: False) while KMS repositories keep the blob.
        rows = conn.execute(
            sa.select(
                blobs.c.digest, blobs.c.size, blobs.c.seal_id, blobs.c.archive_path, service_key_held().label("held")
            )
            .where(has_service_copy())
            .order_by(blobs.c.digest)
        ).all()
    progress.blobs_total = len(rows)
    progress.bytes_total = sum(r.size for r in rows)
    # Each tier is one walk of its store merged with the rows in path order: a listing page per thousand blobs on an
    # object store, instead of a HEAD per blob. Content in the archive tier is checked where its row says it is.
    entries = [_Entry(r.archive_path or blob_path(r.digest), r.digest, r.size, r.seal_id, bool(r.held)) for r in rows]
    standard = [e for e, r in zip(entries, rows, strict=True) if r.archive_path is None]
    archived = [e for e, r in zip(entries, rows, strict=True) if r.archive_path is not None]
    yield from _check_tier(ctx, ctx.storage, paths.BLOBS, standard, rehash, progress, "")
    if archived:
        yield from _check_tier(
            ctx, ctx.archive_storage, paths.ARCHIVE_BLOBS, archived, rehash, progress, " (archive storage class)"
        )


@dataclass(frozen=True, order=True)
class _Entry:
    """A service-key object to check. ``held``: an AES256 repository links the blob, or it is the blob's only copy;
    otherwise nothing reads it (KMS repositories read their own copies), so it is named apart, blames no image, and
    no account key left to open it is no problem (the collector drops the wraps of accounts that let it go)."""

    path: str
    digest: str
    size: int
    seal_id: str | None
    held: bool

    @property
    def subject(self) -> str:
        return self.digest if self.held else f"{self.digest} (under the service key)"


def _check_tier(
    ctx: DomainContext,
    store: StorageDriver,
    root: str,
    entries: list[_Entry],
    rehash: bool,
    progress: Progress,
    where: str,
) -> Iterator[Problem]:
    stored = store.walk(root)
    current = next(stored, None)
    keys = AccountKeys(ctx)
    for entry in sorted(entries):
        path, digest, size, subject = entry.path, entry.digest, entry.size, entry.subject
        used = digest if entry.held else None
        progress.blobs_checked += 1
        if not rehash:
            progress.bytes_checked += size
        while current is not None and current.path < path:
            current = next(stored, None)
        info = current if current is not None and current.path == path else None
        if info is None:
            if not where and _in_trash(ctx, digest):
                # Legacy: a collector of an older version died between moving the content aside and committing.
                yield Problem(
                    "in-trash",
                    subject,
                    "in trash (the next gc restores or removes them): a gc was interrupted; `soko gc` restores it now",
                )
            else:
                yield _bad_blob(ctx, "missing-blob", subject, f"in the database but not in storage{where}", used)
            continue
        if info.size != size:
            yield _bad_blob(
                ctx, "size-mismatch", subject, f"database says {size} bytes, storage{where} holds {info.size}", used
            )
            continue
        if rehash:
            yield from _verify(
                ctx,
                subject,
                digest,
                progress,
                partial(_open_blob, keys, store, digest, path, entry.seal_id),
                used,
            )


def _open_blob(keys: AccountKeys, store: StorageDriver, digest: str, path: str, seal_id: str | None) -> BinaryIO:
    """A service-key object, through any account's wrap of its key (none left: the deployment key, which fails as
    crypto-shredded for an object whose accounts' keys are all gone)."""
    object_key = keys.object_key(None, digest) if keys.enabled else None
    view = store if object_key is None else keys.view(object_key, store)
    return view.sealed_reader(path, 0, seal_id)


def _verify(
    ctx: DomainContext,
    subject: str,
    digest: str,
    progress: Progress,
    open_reader: Callable[[], BinaryIO],
    used: str | None,
) -> Iterator[Problem]:
    """Re-hash one stored object; a key that is gone is crypto-shredding (not corruption) — no problem at all for an
    object no image reads (``used`` None) — and a KMS key disabled or pending deletion only leaves it unchecked."""
    algorithm, _, expected = digest.partition(":")
    hasher = hashlib.new(algorithm)
    try:
        with open_reader() as f:
            while data := f.read(4 << 20):
                hasher.update(data)
                progress.bytes_checked += len(data)
    except KeyUnusable as exc:
        if exc.kms_error != "NotFoundException":
            progress.keys_unusable += 1
            return
        yield _shredded(ctx, subject, digest, exc.message)
        return
    except KeyUnavailable as exc:
        if used is not None:
            yield _shredded(ctx, subject, digest, exc.why)
        return
    except SealBroken as exc:
        yield _bad_blob(ctx, "tampered-blob", subject, f"encrypted content fails authentication: {exc.why}", used)
        return
    if hasher.hexdigest() != expected:
        yield _bad_blob(ctx, "corrupt-blob", subject, f"content hashes to {algorithm}:{hasher.hexdigest()}", used)


def _shredded(ctx: DomainContext, subject: str, digest: str, why: str) -> Problem:
    return Problem(
        "crypto-shredded",
        subject,
        f"{why}: the content is unreadable by design, not corrupt; delete the images that use it",
        tuple(images_using(ctx, digest)),
    )


def _check_copies(
    ctx: DomainContext, rehash: bool, progress: Progress, encryption: Encryption | None
) -> Iterator[Problem]:
    with ctx.db.read() as conn:
        rows = conn.execute(
            sa.select(
                blob_copies.c.digest, blob_copies.c.keyspace, blob_copies.c.seal_id, blob_copies.c.wrapped_key
            ).order_by(blob_copies.c.keyspace, blob_copies.c.digest)
        ).all()
        keyed = conn.execute(
            sa.select(repos.c.encryption_type, repos.c.kms_key, repos.c.account_id).where(
                repos.c.encryption_type != "AES256"
            )
        ).all()
    spaces = {s.name: s for r in keyed if (s := keyspace_of(r.encryption_type, r.kms_key, r.account_id))}
    progress.blobs_total += len(rows)
    for row in rows:
        progress.blobs_checked += 1
        path = paths.keyed_path(row.keyspace, row.digest)
        subject = f"{row.digest} (under {row.keyspace})"
        try:
            ctx.storage.stat(path)
        except PathNotFound:
            yield _bad_blob(ctx, "missing-blob", subject, "in the database but not in storage", row.digest)
            continue
        space = spaces.get(row.keyspace)
        if not rehash or encryption is None or space is None:
            continue  # (a keyspace no repository uses any more: the next gc removes the copy)
        yield from _verify(
            ctx,
            subject,
            row.digest,
            progress,
            partial(_open_copy, encryption, space, row.wrapped_key, path, row.seal_id),
            row.digest,
        )


def _open_copy(encryption: Encryption, space: Keyspace, wrapped: bytes, path: str, seal_id: str) -> BinaryIO:
    return encryption.open_object(space, wrapped).sealed_reader(path, 0, seal_id)


def _in_trash(ctx: DomainContext, digest: str) -> bool:
    try:
        ctx.storage.stat(trash_path(digest))
    except PathNotFound:
        return False
    return True


def _check_manifests(ctx: DomainContext, encryption: Encryption, progress: Progress) -> Iterator[Problem]:
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
            yield Problem(
                "unlinked-reference",
                f"{name}@{manifest}",
                f"references blob {blob} not linked to '{name}'; push that blob to '{name}' again (upload or mount)",
            )
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
            yield Problem(
                "missing-child",
                f"{name}@{manifest}",
                f"index references missing manifest {child_digest}; push that manifest to '{name}' again",
            )
        for row in conn.execute(
            sa.select(
                repos.c.name,
                repos.c.account_id,
                repos.c.encryption_type,
                repos.c.kms_key,
                manifests.c.digest,
                manifests.c.payload,
            ).join(repos, repos.c.id == manifests.c.repository_id)
        ):
            algorithm, _, expected = row.digest.partition(":")
            space = keyspace_of(row.encryption_type, row.kms_key, row.account_id)
            try:
                payload = encryption.open_row(row.payload, row.digest, space)
            except KeyUnusable as exc:  # a KMS repository's manifest: as its blobs (crypto-shredded, or unchecked)
                if exc.kms_error != "NotFoundException":
                    progress.keys_unusable += 1
                    continue
                yield Problem(
                    "crypto-shredded",
                    f"{row.name}@{row.digest}",
                    f"{exc.message}: the manifest is unreadable by design, not corrupt; delete the image",
                )
                continue
            except (RowBroken, ContentUnreadable) as exc:
                yield Problem(
                    "tampered-manifest",
                    f"{row.name}@{row.digest}",
                    f"encrypted payload fails authentication ({exc}); delete it and push the image again",
                )
                continue
            if hashlib.new(algorithm, payload).hexdigest() != expected:
                yield Problem(
                    "corrupt-manifest",
                    f"{row.name}@{row.digest}",
                    "payload does not hash to its digest; delete it and push the image again",
                )
