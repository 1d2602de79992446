"""Blobs as a repository sees them: the global content-addressed store filtered by the repository's links."""

from __future__ import annotations

import hashlib
import threading
import uuid
from dataclasses import dataclass
from typing import BinaryIO

import sqlalchemy as sa

from soko.crypto.segments import KeyUnavailable, SealBroken
from soko.digest import Digest
from soko.errors import BlobArchived, BlobUnknown, ContentUnreadable, ManifestReferenced
from soko.gc import tombstones
from soko.kernel.context import DomainContext
from soko.meta.schema import blob_copies, blob_keys, blobs, manifest_blobs, manifests, repository_blobs
from soko.meta.schema import repositories as repos
from soko.registry.encryption import Keyspace, KeyUnusable, keyspace_of
from soko.registry.models import BlobContent, BlobInfo, RepoRef
from soko.registry.repositories import Repositories
from soko.registry.settings_store import account_setting
from soko.registry.uploads import store_copy, stored
from soko.storage import PathNotFound, StorageDriver
from soko.storage.paths import blob_path, keyed_path, upload_path
from soko.storage.plain_cache import Fill, PlainCache


def unreadable(digest: str, exc: SealBroken) -> ContentUnreadable:
    if isinstance(exc, KeyUnavailable):
        return ContentUnreadable(f"blob {digest} cannot be decrypted: {exc.why} (its key is gone: crypto-shredded)")
    return ContentUnreadable(
        f"blob {digest} failed its integrity check in storage ({exc.why}): it was tampered with or damaged and is not "
        "served; an operator should run soko fsck, then push the image again"
    )


_COPY_READ = 4 << 20


@dataclass
class _Copy:
    """A blob sealed anew under another key at a temporary path, waiting to be put in place."""

    digest: str
    size: int
    keyspace: Keyspace | None
    storage: StorageDriver
    temp: str
    seal_id: str
    wrapped_key: bytes | None
    account_id: str  # the destination's account (whose key wraps ``wrapped_key`` when there is no keyspace)


def _delete_quietly(storage: StorageDriver, path: str) -> None:
    try:
        storage.delete(path)
    except PathNotFound:
        pass


def blob_unknown(ref: RepoRef, digest: str) -> BlobUnknown:
    return BlobUnknown(f"blob {digest} is not in repository '{ref.name}'")


def _archived_for(row: sa.Row) -> bool:
    """Whether the repository of ``row`` (a ``_linked_row``) reads the blob from the archive tier: a repository under
    a customer key (KMS, KMS_DSSE) reads its own copy, which is never archived, even when the service-key copy is
    (an image pushed there after the blob was archived by the images of AES256 repositories)."""
    return row.tier is not None and keyspace_of(row.encryption_type, row.kms_key, row.account_id) is None


def _lookup(cache: PlainCache, blob: BlobContent) -> str | None:
    """The blob's entry in the plaintext cache (its keyspace's), when it holds the whole blob."""
    return cache.lookup(blob.keyspace.name if blob.keyspace else None, blob.digest, blob.size)


class _HotBlobs:
    """(account, repository, digest) → the blob as ``Blobs.open`` read it, for blobs of the service key whose
    plaintext was found in the plaintext cache: valid while the metadata generation is unchanged. Every write that
    unlinks, deletes or archives a blob, deletes a repository or shreds an account's key bumps the generation
    (``invalidates``), so a hit is what the database would answer. Bounded by entry count (FIFO, hot entries come
    back at once)."""

    def __init__(self, max_entries: int = 16384) -> None:
        self._items: dict[tuple[str, str, str], BlobContent] = {}
        self._max = max_entries
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, str], generation: int) -> BlobContent | None:
        blob = self._items.get(key)
        return blob if blob is not None and blob.generation == generation else None

    def put(self, key: tuple[str, str, str], blob: BlobContent) -> None:
        with self._lock:
            self._items.pop(key, None)
            while len(self._items) >= self._max:
                del self._items[next(iter(self._items))]
            self._items[key] = blob


class Blobs:
    def __init__(self, ctx: DomainContext, repositories: Repositories) -> None:
        self.ctx = ctx
        self.repositories = repositories
        self._hot = _HotBlobs()

    def _linked(self, conn: sa.Connection, ref: RepoRef, digest: str) -> BlobInfo | None:
        """The blob, when the repository holds it in standard storage (archived content is not mounted or
        replicated: the client uploads it again, which brings it back)."""
        row = self._linked_row(conn, ref, digest)
        return BlobInfo(row.digest, row.size) if row and not _archived_for(row) else None

    # Built once (every pull runs them: building a select per call cost more than the query itself on SQLite).
    _LINKED = (
        sa.select(
            blobs.c.digest,
            blobs.c.size,
            blobs.c.seal_id,
            blobs.c.tier,
            repos.c.encryption_type,
            repos.c.kms_key,
            repos.c.account_id,
        )
        .join(repository_blobs, repository_blobs.c.digest == blobs.c.digest)
        .join(repos, repos.c.id == repository_blobs.c.repository_id)
        .where(
            repos.c.account_id == sa.bindparam("account"),
            repos.c.name == sa.bindparam("repo"),
            blobs.c.digest == sa.bindparam("digest"),
        )
    )
    # ... and, for ``open``, the account's wrap of the service-key object's key in the same query
    _LINKED_WITH_WRAP = _LINKED.add_columns(blob_keys.c.wrapped_key).outerjoin(
        blob_keys, sa.and_(blob_keys.c.digest == blobs.c.digest, blob_keys.c.account_id == repos.c.account_id)
    )
    _COPY = sa.select(blob_copies.c.seal_id, blob_copies.c.wrapped_key).where(
        blob_copies.c.digest == sa.bindparam("digest"), blob_copies.c.keyspace == sa.bindparam("space")
    )

    def _linked_row(self, conn: sa.Connection, ref: RepoRef, digest: str, query: sa.Select = _LINKED) -> sa.Row | None:
        return conn.execute(query, {"account": ref.account_id, "repo": ref.name, "digest": digest}).first()

    def stat(self, ref: RepoRef, digest: str) -> BlobInfo:
        row = self._stat_row(ref, digest)
        return BlobInfo(row.digest, row.size)

    def _stat_row(self, ref: RepoRef, digest: str) -> sa.Row:
        with self.ctx.db.read() as conn:
            return self._readable_row(conn, ref, digest)

    def _readable_row(self, conn: sa.Connection, ref: RepoRef, digest: str, query: sa.Select = _LINKED) -> sa.Row:
        Digest.parse(digest)
        row = self._linked_row(conn, ref, digest, query)
        if row is None:
            self.repositories.id_for(conn, ref)  # NAME_UNKNOWN beats BLOB_UNKNOWN
            raise blob_unknown(ref, digest)
        if _archived_for(row):
            raise BlobArchived(
                f"blob {digest} of repository '{ref.name}' is in the archive storage class with the archived images "
                "that use it: restore them (update-image-storage-class --target-storage-class STANDARD) or upload "
                "it again"
            )
        return row

    def open(self, ref: RepoRef, digest: str) -> BlobContent:
        generation = self.ctx.generation.current()  # read before querying; see soko.meta.changes
        with self.ctx.db.read() as conn:  # (one read per pull: the row and its account's wrap, or its copy)
            row = self._readable_row(conn, ref, digest, self._LINKED_WITH_WRAP)
            space = keyspace_of(row.encryption_type, row.kms_key, row.account_id)
            if space is not None:  # the copy under the repository's customer key
                copy = conn.execute(self._COPY, {"digest": row.digest, "space": space.name}).first()
            else:  # the account's wrap of the object's key (none: an earlier version's)
                wrapped = row.wrapped_key
        if space is not None:
            if copy is None:
                raise BlobUnknown(f"blob {digest} is not stored under the KMS key of repository '{ref.name}'")
            path = keyed_path(space.name, row.digest)
            return BlobContent(row.digest, row.size, path, None, copy.seal_id, space, copy.wrapped_key)
        path = blob_path(row.digest)
        storage = self.ctx.storage
        redirect = storage.redirect_url(path) if storage.capabilities.redirect else None
        return BlobContent(
            row.digest, row.size, path, redirect, row.seal_id, None, wrapped, row.account_id, generation, ref.name
        )

    def hot(self, ref: RepoRef, digest: str) -> tuple[BlobContent, str] | None:
        """(the blob, its file in the plaintext cache) when this process served it from there and nothing was
        written since, else None (then ``open`` and ``cached`` on a thread): what an event loop may call — no
        database, no KMS, a ``stat`` of a file in memory (tmpfs). Blobs of customer keys are never hot: every pull
        of one checks its key with KMS."""
        cache = self.ctx.plain_cache
        if cache is None:
            return None
        blob = self._hot.get((ref.account_id, ref.name, digest), self.ctx.generation.current())
        if blob is None:
            return None
        path = _lookup(cache, blob)
        return (blob, path) if path is not None else None

    def local_path(self, blob: BlobContent) -> str | None:
        """The local file holding the blob (the filesystem driver), for the server to send by itself."""
        return None if blob.keyspace is not None else self.ctx.storage.local_path(blob.storage_path)

    def _storage_of(self, blob: BlobContent) -> StorageDriver:
        if blob.wrapped_key is None:
            return self.ctx.storage
        if blob.keyspace is None:  # the service-key object, through the account's own key
            assert blob.account_id is not None
            return self.repositories.account_keys.open_object(blob.account_id, blob.wrapped_key)
        try:
            return self.repositories.encryption.open_object(blob.keyspace, blob.wrapped_key)  # KMS Decrypt, audited
        except KeyUnusable:
            if self.ctx.plain_cache is not None:  # no plaintext of an unusable key stays in memory here
                self.ctx.plain_cache.drop_space(blob.keyspace.name)
            raise

    def _cache_for(self, blob: BlobContent) -> PlainCache | None:
        """The plaintext cache, when it may hold this blob: the service key's content, or a customer key's when
        ``plaintext_cache_kms`` allows it."""
        cache = self.ctx.plain_cache
        if cache is None or (blob.keyspace is not None and not self.ctx.settings.plaintext_cache_kms):
            return None
        return cache

    def cache_entry(self, blob: BlobContent) -> str | None:
        """The decrypted blob's file in the plaintext cache, or None, with no key checked: only to redirect the
        client to where the blob is sent from, which checks the key itself (``cached``) before any byte goes."""
        cache = self._cache_for(blob)
        return None if cache is None else _lookup(cache, blob)

    def cached(self, blob: BlobContent) -> tuple[str | None, StorageDriver | None]:
        """(the decrypted blob's file in the plaintext cache, or None; the storage view the check opened). A blob of
        a KMS repository is served only after its key is checked (a KMS Decrypt, audited, as every pull's)."""
        cache = self._cache_for(blob)
        if cache is None:
            return None, None
        try:
            storage = self._storage_of(blob)  # (an account whose key was shredded is refused here, cached or not)
        except SealBroken as exc:
            raise unreadable(blob.digest, exc) from None
        path = _lookup(cache, blob)
        if path is not None and blob.keyspace is None and blob.generation is not None and blob.repository:
            assert blob.account_id is not None
            self._hot.put((blob.account_id, blob.repository, blob.digest), blob)
        return path, storage

    def fill(self, blob: BlobContent) -> Fill | None:
        """A fill of the plaintext cache with this blob (the caller writes the whole content to it, then commits),
        or None (no cache, another process fills it, no room)."""
        cache = self._cache_for(blob)
        if cache is None or blob.size == 0:
            return None
        return cache.fill(blob.keyspace.name if blob.keyspace else None, blob.digest, blob.size)

    def reader(self, blob: BlobContent, offset: int = 0, storage: StorageDriver | None = None) -> BinaryIO:
        """The blob's content from ``offset`` on (close it when done). A blob of a KMS repository needs its key:
        KeyUnusable when KMS refuses (disabled, pending deletion, deleted); ``storage``: the view ``cached``
        opened already."""
        try:
            storage = storage or self._storage_of(blob)
            return storage.sealed_reader(blob.storage_path, offset, blob.seal_id)
        except PathNotFound:
            # the metadata said yes a moment ago: the collector won a race with a just-deleted image
            raise BlobUnknown(f"blob {blob.digest} is no longer stored") from None
        except SealBroken as exc:
            raise unreadable(blob.digest, exc) from None

    def mount(self, ref: RepoRef, digest: str, source: RepoRef) -> BlobInfo | None:
        """Link a blob another repository holds into ``ref``; None when the source does not hold it or the account
        turned BLOB_MOUNTING off (the client then uploads the blob). Between repositories of different keys (AES256,
        KMS or KMS_DSSE, another KMS key) the content is copied under the destination's key first, unless that key
        holds it already: re-encrypted, never shared across keys."""
        Digest.parse(digest)
        with self.ctx.db.read() as conn:
            if account_setting(conn, ref.account_id, "BLOB_MOUNTING") == "DISABLED":
                return None
            found = self._linked_row(conn, source, digest)
            if found is None:
                return None
            # (a missing repository: the key its CREATE_ON_PUSH creation template would give it)
            dest_space = self.repositories.planned_keyspace(conn, ref, "CREATE_ON_PUSH")
        if dest_space is None and self.repositories.account_keys.enabled:
            self.repositories.account_keys.ensure(ref.account_id)  # (its key wraps the object's, below)
        copies = self._prepare_copies(dest_space, source, [found], ref.account_id)
        try:
            with self.ctx.transaction() as tx:
                conn = tx.conn
                if account_setting(conn, ref.account_id, "BLOB_MOUNTING") == "DISABLED":
                    return None
                info = self._linked(conn, source, digest)
                if info is None:
                    return None
                if not self.ctx.db.is_sqlite:
                    # Hold the blob against a concurrent garbage collector until the new link commits; if the
                    # collector removed it meanwhile there is nothing to mount and the client uploads instead.
                    held = conn.execute(
                        sa.select(blobs.c.digest).where(blobs.c.digest == digest).with_for_update(read=True)
                    ).first()
                    if held is None:
                        return None
                repo_id = self.repositories.id_for_push(tx, ref)
                if self.repositories.keyspace(conn, repo_id) != dest_space:  # created meanwhile, otherwise
                    return None
                self._commit_copies(conn, copies, tx.now)
                keys = self.repositories.account_keys
                if dest_space is None and not keys.grant(conn, digest, ref.account_id, tx.now):
                    return None  # no live account key opens the stored object: the client uploads it instead
                conn.execute(
                    self.ctx.db.insert_ignore(repository_blobs).values(
                        repository_id=repo_id, digest=digest, created_at=tx.now
                    )
                )
                tx.review_links(repo_id, [digest], "mount")
            return info
        except tombstones.TombstoneBusy:  # the collector is deleting this digest right now: the client uploads
            return None
        finally:
            self._drop_prepared(copies)

    def _prepare_copies(
        self, dest: Keyspace | None, source: RepoRef, rows: list[sa.Row], dest_account: str
    ) -> list[_Copy]:
        """Copies of the source repository's blobs (rows of ``_linked_row``) under the destination's key, for those
        that key does not hold: each read (decrypted), verified against its digest and sealed anew under the
        destination's key at a temporary path, before any transaction (``_commit_copies`` puts them in place)."""
        prepared: list[_Copy] = []
        try:
            for row in rows:
                space = keyspace_of(row.encryption_type, row.kms_key, row.account_id)
                if (space.name if space else None) == (dest.name if dest else None) or self._held(dest, row):
                    continue
                prepared.append(self._copy(dest, source, row, dest_account))
        except BaseException:
            self._drop_prepared(prepared)
            raise
        return prepared

    def _held(self, dest: Keyspace | None, row: sa.Row) -> bool:
        if dest is None:
            return stored(self.ctx.storage, blob_path(row.digest), row.size)
        with self.ctx.db.read() as conn:
            copy = conn.execute(
                sa.select(blob_copies.c.digest).where(
                    blob_copies.c.digest == row.digest, blob_copies.c.keyspace == dest.name
                )
            ).first()
        return copy is not None and stored(self.ctx.storage, keyed_path(dest.name, row.digest), row.size)

    def _copy(self, dest: Keyspace | None, source: RepoRef, row: sa.Row, dest_account: str) -> _Copy:
        wrapped: bytes | None = None
        storage = self.ctx.storage
        if dest is not None:
            wrapped, storage = self.repositories.encryption.new_object(dest)
        elif self.repositories.account_keys.enabled:  # the service-key object, its key wrapped by the account's
            wrapped, storage = self.repositories.account_keys.new_object(dest_account)
        temp = upload_path(f"copy-{uuid.uuid4()}")  # no session row: the storage sweep removes it if we die
        hasher = hashlib.new(Digest.parse(row.digest).algorithm)
        writer = storage.writer(temp)
        try:
            with self.reader(self.open(source, row.digest)) as f:
                while piece := f.read(_COPY_READ):
                    hasher.update(piece)
                    writer.write(piece)
            if f"{hasher.name}:{hasher.hexdigest()}" != row.digest or writer.size != row.size:
                raise unreadable(row.digest, SealBroken(row.digest, "its content does not match its digest"))
            writer.commit()
        except BaseException:
            writer.cancel()
            _delete_quietly(self.ctx.storage, temp.rsplit("/", 1)[0])
            raise
        seal_id = storage.seal_id(temp)
        assert seal_id is not None
        return _Copy(row.digest, row.size, dest, storage, temp, seal_id, wrapped, dest_account)

    def _commit_copies(self, conn: sa.Connection, copies: list[_Copy], now: float) -> None:
        for copy in copies:
            target = keyed_path(copy.keyspace.name, copy.digest) if copy.keyspace else blob_path(copy.digest)
            tombstones.clear_for_new_blob(conn, copy.digest, lock=not self.ctx.db.is_sqlite, path=target)
            if copy.keyspace is None:
                keys = self.repositories.account_keys
                if not stored(self.ctx.storage, blob_path(copy.digest), copy.size):
                    conn.execute(sa.update(blobs).where(blobs.c.digest == copy.digest).values(seal_id=copy.seal_id))
                    if keys.enabled:  # wrapped for the holders of the digest and the destination's account
                        object_key = None
                        if copy.wrapped_key is not None:
                            object_key = keys.unwrap(conn, copy.account_id, copy.wrapped_key)
                        keys.install(conn, copy.digest, object_key, now, copy.account_id)
                    copy.storage.move(copy.temp, blob_path(copy.digest))
            else:
                assert copy.wrapped_key is not None
                store_copy(
                    conn,
                    copy.storage,
                    copy.keyspace,
                    copy.digest,
                    copy.size,
                    copy.temp,
                    copy.seal_id,
                    copy.wrapped_key,
                    now,
                )

    def _drop_prepared(self, copies: list[_Copy]) -> None:
        for copy in copies:  # moved into place, or not needed after all: the temporary directory goes
            _delete_quietly(self.ctx.storage, copy.temp.rsplit("/", 1)[0])

    def replicate(self, ref: RepoRef, source: RepoRef, digests: list[str]) -> int:
        """Link into ``ref`` (created as replication creates it) the blobs ``source`` holds, in one transaction:
        the same-deployment copy of replication (the content is stored once per deployment). Blobs ``ref`` already
        holds are skipped; one ``source`` no longer holds raises BlobUnknown (nothing is linked). Returns how many
        links were added."""
        for digest in digests:
            Digest.parse(digest)
        wanted = sorted(set(digests))
        with self.ctx.db.read() as conn:
            dest_space = self.repositories.planned_keyspace(conn, ref, "REPLICATION")
            rows = [row for d in wanted if (row := self._linked_row(conn, source, d)) is not None]
        if dest_space is None and self.repositories.account_keys.enabled:
            self.repositories.account_keys.ensure(ref.account_id)  # (its key wraps the objects', below)
        copies = self._prepare_copies(dest_space, source, rows, ref.account_id)  # across keys: re-encrypted first
        try:
            return self._replicate(ref, source, wanted, dest_space, copies)
        finally:
            self._drop_prepared(copies)

    def _replicate(
        self, ref: RepoRef, source: RepoRef, wanted: list[str], dest_space: Keyspace | None, copies: list[_Copy]
    ) -> int:
        with self.ctx.transaction() as tx:
            conn = tx.conn
            repo_id = self.repositories.id_for_replication(tx, ref)
            if self.repositories.keyspace(conn, repo_id) != dest_space:
                raise BlobUnknown(f"repository '{ref.name}' was created meanwhile with another key: replicate again")
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
            self._commit_copies(conn, [c for c in copies if c.digest in missing], tx.now)
            if missing:
                conn.execute(
                    sa.insert(repository_blobs),
                    [{"repository_id": repo_id, "digest": d, "created_at": tx.now} for d in missing],
                )
                for digest in missing if dest_space is None else []:
                    if not self.repositories.account_keys.grant(conn, digest, ref.account_id, tx.now):
                        raise BlobUnknown(f"blob {digest} is stored under no live account key: push it again")
                tx.review_links(repo_id, missing, "replication")
        return len(missing)

    def unlink(self, ref: RepoRef, digest: str) -> None:
        """Remove a blob from a repository (the content goes when GC finds nothing else uses it)."""
        Digest.parse(digest)
        with self.ctx.write(invalidates=True) as conn:  # (unlinked: no longer hot)
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
