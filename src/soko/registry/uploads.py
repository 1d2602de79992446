"""Blob uploads: sessions, streamed chunks hashed on the fly, verified completion.

The uploads row is the session's truth (its ``size`` is what the server holds), and the data lives in storage at
``uploads/<id>/data``. A chunk is written from ``size`` on, truncating whatever a failed chunk left behind, and the
row's size moves only when the whole chunk is durable. The running sha256 is kept in this process's memory
(``hashlib`` state cannot be serialised); when a chunk or the completion reaches another process or node, or after
a restart, the content is re-hashed from storage instead, so any node can serve any request.

Only one request at a time writes to a session, on whichever process or node: a chunk (or the completion) first
claims the row (``writer`` = a token of its own, ``writer_seen`` refreshed while it streams), and the size moves
only under that claim. A second concurrent chunk gets 416 with the current range, as the spec asks. Without the
claim two chunks could write different bytes at the same offset and the stored content differ from what the
winner hashed — and a content-addressed, deduplicated store must never hold a blob that does not match its digest.

Completion moves the data to its digest-addressed path inside the write transaction that links the blob, after
dropping the digest's pending GC tombstones (or waiting for the one an executor is carrying out), so a garbage
collector can never delete content a new row points at (``soko.gc.tombstones``). When the blob is already stored
(deduplication: the same layer pushed again, to any repository), nothing moves: the upload's data, verified against
the digest like any other, is dropped.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence

import sqlalchemy as sa

from soko import process_identity
from soko.digest import Digest
from soko.errors import (
    DigestInvalid,
    RangeNotSatisfiable,
    SizeInvalid,
    TooLarge,
    UploadLimitExceeded,
    UploadUnknown,
)
from soko.gc import tombstones
from soko.kernel.context import DomainContext
from soko.meta.db import retry_on_deadlock
from soko.meta.schema import blob_copies, blobs, repository_blobs, uploads
from soko.registry.encryption import Keyspace
from soko.registry.models import BlobInfo, RepoRef, UploadState
from soko.registry.repositories import Repositories
from soko.storage import FileWriter, InvalidOffset, PathNotFound, StorageDriver
from soko.storage.paths import blob_path, keyed_path, upload_dir, upload_path
from soko.storage.plain_cache import Fill, PlainCache

log = logging.getLogger("soko.uploads")
_HASH_READ_SIZE = 4 * 1024 * 1024
CLAIM_REFRESH = 15.0  # seconds between a streaming writer's heartbeats
# A claim without a heartbeat for this long belonged to a writer that died (on another node: claims of this node's
# dead processes are recognised at once, see soko.process_identity).
CLAIM_STALE = 60.0


def stored(storage: StorageDriver, path: str, size: int) -> bool:
    try:
        return storage.stat(path).size == size
    except PathNotFound:  # lost (fsck reports it): this upload's content puts it back
        return False


def store_copy(
    conn: sa.Connection,
    storage: StorageDriver,
    space: Keyspace,
    digest: str,
    size: int,
    source: str,
    seal_id: str,
    wrapped_key: bytes,
    now: float,
) -> None:
    """Make the sealed object at ``source`` (in ``storage``, the keyspace's view) the keyspace's copy of ``digest``,
    in the caller's transaction, holding the blob row's lock — unless the keyspace already holds it (deduplication
    within one key: the caller drops ``source``). The move is the last statement, as for the service key's copy."""
    path = keyed_path(space.name, digest)
    held = conn.execute(
        sa.select(blob_copies.c.seal_id).where(blob_copies.c.digest == digest, blob_copies.c.keyspace == space.name)
    ).first()
    if held is not None and stored(storage, path, size):
        return
    conn.execute(sa.delete(blob_copies).where(blob_copies.c.digest == digest, blob_copies.c.keyspace == space.name))
    conn.execute(
        sa.insert(blob_copies).values(
            digest=digest, keyspace=space.name, seal_id=seal_id, wrapped_key=wrapped_key, created_at=now
        )
    )
    storage.move(source, path)


class _HashCache:
    """upload id → (offset, running sha256) for uploads this process streamed; bounded, thread-safe."""

    def __init__(self, capacity: int = 4096) -> None:
        self._items: OrderedDict[str, tuple[int, hashlib._Hash]] = OrderedDict()
        self._lock = threading.Lock()
        self._capacity = capacity

    def get(self, upload_id: str, offset: int) -> hashlib._Hash | None:
        with self._lock:
            item = self._items.get(upload_id)
        if item is None or item[0] != offset:
            return None
        return item[1].copy()

    def put(self, upload_id: str, offset: int, hasher: hashlib._Hash) -> None:
        with self._lock:
            self._items[upload_id] = (offset, hasher)
            self._items.move_to_end(upload_id)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)

    def drop(self, upload_id: str) -> None:
        with self._lock:
            self._items.pop(upload_id, None)


class _KeyViews:
    """upload id → (the KMS ciphertext of its data key, the storage view sealing with it) for sessions this process
    started: their chunks and completion check the key's state instead of asking KMS to decrypt the data key again
    (a Decrypt is an audited KMS call: three per pushed layer, where ECR's is one GenerateDataKey). Bounded,
    thread-safe; other processes, and this one after a restart, Decrypt."""

    def __init__(self, capacity: int = 1024) -> None:
        self._items: OrderedDict[str, tuple[bytes, StorageDriver]] = OrderedDict()
        self._lock = threading.Lock()
        self._capacity = capacity

    def get(self, upload_id: str, wrapped: bytes) -> StorageDriver | None:
        with self._lock:
            item = self._items.get(upload_id)
        return item[1] if item is not None and item[0] == wrapped else None

    def put(self, upload_id: str, wrapped: bytes, view: StorageDriver) -> None:
        with self._lock:
            self._items[upload_id] = (wrapped, view)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)

    def drop(self, upload_id: str) -> None:
        with self._lock:
            self._items.pop(upload_id, None)


class _ClaimLost(Exception):
    """The session's row no longer carries our claim (cancelled, expired, or taken over)."""


def upload_unknown(upload_id: str) -> UploadUnknown:
    return UploadUnknown(f"upload {upload_id} is unknown, finished, cancelled or expired; start a new upload")


class ChunkWriter:
    """Streams one chunk into an upload. Call ``write`` for each piece, then ``finish`` (or ``abort``)."""

    def __init__(
        self,
        uploads_: Uploads,
        state: UploadState,
        claim: str,
        writer: FileWriter,
        hasher: hashlib._Hash | None,
        limit: int,
        plain: Fill | None = None,
    ) -> None:
        self._uploads = uploads_
        self.state = state
        self._claim = claim
        self._writer = writer
        self._hasher = hasher
        self._limit = limit
        self._done = False
        self._heartbeat = uploads_.ctx.clock()
        self._plain = plain  # the plaintext kept for the cache (soko.storage.plain_cache), beside the running hash

    @property
    def size(self) -> int:
        return self._writer.size

    def write(self, data: bytes | memoryview) -> None:
        self.store((data,))
        self.digest((data,))
        self.keep((data,))

    # ``store`` and ``digest`` of the same pieces may run at the same time on two threads (file writes and hashlib
    # release the GIL, so a push uses both cores); each must see the pieces in order, one call after the other.

    def store(self, pieces: Sequence[bytes | memoryview]) -> None:
        """Write ``pieces`` to the upload's data (in order)."""
        if self._writer.size + sum(len(piece) for piece in pieces) > self._limit:
            raise TooLarge(
                f"upload {self.state.id} to '{self.state.repository.name}' exceeds the size limit of "
                f"{self._limit} bytes; the upload was stopped"
            )
        # Heartbeat *before* writing: a writer only ever writes within CLAIM_REFRESH of a confirmed claim, while
        # another may take the claim over only after CLAIM_STALE of silence, so two writers never overlap.
        now = self._uploads.ctx.clock()
        if now - self._heartbeat >= CLAIM_REFRESH:
            self._uploads._refresh_claim(self.state, self._claim, now)
            self._heartbeat = now
        for piece in pieces:
            self._writer.write(piece)

    def digest(self, pieces: Sequence[bytes | memoryview]) -> None:
        """Feed ``pieces`` to the running hash (when this process holds it)."""
        if self._hasher is not None:
            for piece in pieces:
                self._hasher.update(piece)

    @property
    def keeps(self) -> bool:
        return self._plain is not None

    def keep(self, pieces: Sequence[bytes | memoryview]) -> None:
        """Write ``pieces`` to the plaintext cache's copy of this upload (a third lane: the same pieces, in order, as
        the running hash gets, so a completion that verifies that hash verifies this copy too)."""
        if self._plain is not None and not self._plain.write(pieces):
            self._plain = None  # (the cache is full: the push goes on without it)

    def finish(self) -> UploadState:
        """Make the chunk durable and record the new size (which ends the claim)."""
        try:
            # Commit writes too (an encrypted writer seals its last segment then): confirm the claim first, as before
            # every write, so a writer whose claim was taken over never writes again.
            self._uploads._refresh_claim(self.state, self._claim, self._uploads.ctx.clock())
            self._writer.commit()
            state = self._uploads._record_size(self.state, self._claim, self._writer.size, self._hasher)
        except BaseException:
            self._done = True
            self._uploads._hashes.drop(self.state.id)
            self._drop_plain()
            self._uploads._release(self.state.id, self._claim)
            raise
        self._done = True
        cache = self._uploads.ctx.plain_cache
        if self._plain is not None and cache is not None:
            cache.keep_upload(self.state.id, self._plain)
        return state

    def _drop_plain(self) -> None:
        if self._plain is not None:
            self._plain.abort()
            self._plain = None

    def abort(self) -> None:
        """Forget the chunk: the row keeps the old size, and the next writer truncates what was written."""
        if not self._done:
            self._done = True
            try:
                self._writer.close()
                self._uploads._hashes.drop(self.state.id)
                self._drop_plain()
            finally:
                self._uploads._release(self.state.id, self._claim)


class Uploads:
    def __init__(self, ctx: DomainContext, repositories: Repositories) -> None:
        self.ctx = ctx
        self.repositories = repositories
        self._hashes = _HashCache()
        self._views = _KeyViews()

    def _claim(self, state: UploadState) -> str:
        """Become the session's only writer (see the module docstring); returns the claim's token."""
        token = process_identity.new_token()
        now = self.ctx.clock()
        with self.ctx.db.write() as conn:
            claimed = conn.execute(
                sa.update(uploads)
                .where(
                    uploads.c.id == state.id,
                    sa.or_(uploads.c.writer.is_(None), uploads.c.writer_seen < now - CLAIM_STALE),
                )
                .values(writer=token, writer_seen=now)
            ).rowcount
            if not claimed:
                # Held: by a process of this node that died mid-request (kill -9)? Then the claim is void now.
                holder = conn.execute(sa.select(uploads.c.writer).where(uploads.c.id == state.id)).scalar()
                if process_identity.holder_is_dead(holder):
                    claimed = conn.execute(
                        sa.update(uploads)
                        .where(uploads.c.id == state.id, uploads.c.writer == holder)
                        .values(writer=token, writer_seen=now)
                    ).rowcount
                    if claimed:
                        log.info("upload %s: took over the claim of a process that died (%s)", state.id, holder)
        if not claimed:
            raise RangeNotSatisfiable(
                f"another request is writing to upload {state.id}; query its status and resume",
                current_size=state.size,
            )
        return token

    def _refresh_claim(self, state: UploadState, token: str, now: float) -> None:
        with self.ctx.db.write() as conn:
            held = conn.execute(
                sa.update(uploads)
                .where(uploads.c.id == state.id, uploads.c.writer == token)
                .values(writer_seen=now, updated_at=now)
            ).rowcount
        if not held:
            raise self._lost(state, "while this chunk was written")

    def _lost(self, state: UploadState, when: str) -> UploadUnknown | RangeNotSatisfiable:
        """The error for a writer whose claim is gone: the session ended (404) or another request took it (416)."""
        with self.ctx.db.read() as conn:
            size = conn.execute(sa.select(uploads.c.size).where(uploads.c.id == state.id)).scalar()
        if size is None:
            return upload_unknown(state.id)
        return RangeNotSatisfiable(
            f"upload {state.id} was taken over by another request {when}; query its status and resume",
            current_size=size,
        )

    def _release(self, upload_id: str, token: str) -> None:
        with self.ctx.db.write() as conn:
            conn.execute(
                sa.update(uploads)
                .where(uploads.c.id == upload_id, uploads.c.writer == token)
                .values(writer=None, writer_seen=None)
            )

    def start(self, ref: RepoRef, owner: str | None = None, *, replicated: bool = False) -> UploadState:
        """Open a session for ``owner`` (the principal's ARN), within its quota of open sessions in the repository.
        ``replicated``: for another region's replication (a missing repository is created as replication does)."""
        upload_id = str(uuid.uuid4())
        now = self.ctx.clock()
        # The row first, then the data file: the row is what makes the session real, and the collector's storage
        # sweep deletes upload data that has no row (with --grace-period 0s, at once), so data written before its
        # row could be swept from under the session. When the file cannot be created (storage full), the row goes.
        with self.ctx.transaction() as tx:
            conn = tx.conn
            if replicated:
                repo_id = self.repositories.id_for_replication(tx, ref)
            else:
                repo_id = self.repositories.id_for_push(tx, ref)
            limit = self.repositories.quotas.get(ref.account_id, "max_open_uploads", conn)
            held = conn.execute(
                sa.select(sa.func.count())
                .select_from(uploads)
                .where(uploads.c.repository_id == repo_id, uploads.c.owner == owner if owner else sa.true())
            ).scalar_one()
            if held >= limit:
                raise UploadLimitExceeded(
                    f"{held} upload sessions to '{ref.name}' are open{f' for {owner}' if owner else ''}, the "
                    f"limit is {limit}: finish or cancel some (abandoned ones expire after upload_expiry), then "
                    "retry"
                )
            space = self.repositories.keyspace(conn, repo_id)
            conn.execute(
                sa.insert(uploads).values(
                    id=upload_id,
                    repository_id=repo_id,
                    size=0,
                    created_at=now,
                    updated_at=now,
                    owner=owner,
                    keyspace=space.name if space else None,
                )
            )
        try:
            storage = self.ctx.storage
            wrapped: bytes | None = None
            if space is not None:
                # KMS makes this upload's key (outside the transaction: KMS may write, e.g. a due rotation)
                wrapped, storage = self.repositories.encryption.new_object(space)
            elif self.repositories.account_keys.enabled:  # AES256: an object key wrapped by the account's key
                wrapped, storage = self.repositories.account_keys.new_object(ref.account_id)
            if wrapped is not None:
                with self.ctx.db.write() as conn:
                    conn.execute(sa.update(uploads).where(uploads.c.id == upload_id).values(wrapped_key=wrapped))
                self._views.put(upload_id, wrapped, storage)
            storage.put_content(upload_path(upload_id), b"")
        except BaseException:
            with self.ctx.db.write() as conn:
                conn.execute(sa.delete(uploads).where(uploads.c.id == upload_id))
            self._delete_data(upload_id)
            raise
        self._hashes.put(upload_id, 0, hashlib.sha256())
        return UploadState(upload_id, ref, 0)

    def status(self, ref: RepoRef, upload_id: str) -> UploadState:
        with self.ctx.db.read() as conn:
            return self._state(conn, ref, upload_id)

    def _state(self, conn: sa.Connection, ref: RepoRef, upload_id: str) -> UploadState:
        try:
            uuid.UUID(upload_id)
        except ValueError:
            raise upload_unknown(upload_id[:64]) from None
        repo_id = self.repositories.id_for(conn, ref)
        row = conn.execute(
            sa.select(uploads.c.size, uploads.c.short_part_end, uploads.c.keyspace, uploads.c.wrapped_key).where(
                uploads.c.id == upload_id, uploads.c.repository_id == repo_id
            )
        ).first()
        if row is None:
            raise upload_unknown(upload_id)
        space = self.repositories.keyspace(conn, repo_id) if row.keyspace else None
        return UploadState(upload_id, ref, row.size, row.short_part_end, space, row.wrapped_key)

    def _storage(self, state: UploadState) -> StorageDriver:
        """Where the session's data is sealed: its object key under the account's service key (an upload begun
        before account keys: the deployment's), or the key KMS made for it (Decrypt, audited)."""
        if state.keyspace is None:
            if state.wrapped_key is None:
                return self.ctx.storage
            return self.repositories.account_keys.open_object(state.repository.account_id, state.wrapped_key)
        if state.wrapped_key is None:  # its start died before KMS made the key: nothing was written
            raise upload_unknown(state.id)
        view = self._views.get(state.id, state.wrapped_key)
        if view is not None:  # made by this process's start: the key's state is what a Decrypt would refuse on
            self.repositories.encryption.check_usable(state.keyspace)
            return view
        return self.repositories.encryption.open_object(state.keyspace, state.wrapped_key)

    def note_short_part(self, upload_id: str, end: int) -> None:
        """Record that a part ending at ``end`` was under ECR's part minimum (only the first such part counts)."""
        with self.ctx.db.write() as conn:
            conn.execute(
                sa.update(uploads)
                .where(uploads.c.id == upload_id, uploads.c.short_part_end.is_(None))
                .values(short_part_end=end)
            )

    def check_size(self, ref: RepoRef, held: int, length: int | None, upload_id: str | None = None) -> int:
        """Refuse (TooLarge) a chunk of ``length`` bytes declared up front (Content-Length or Content-Range) that
        would take an upload holding ``held`` bytes past the image size quota, before a byte of it is read.
        Returns the quota in force."""
        limit = self.repositories.quotas.get(ref.account_id, "max_image_size")
        if length is not None and held + length > limit:
            upload = f"upload {upload_id}" if upload_id else "the upload"
            raise TooLarge(
                f"{upload} to '{ref.name}' would hold {held + length} bytes, over the image size quota of {limit} "
                f"bytes ({limit - held} left); push a smaller layer, or raise the quota: soko account quota "
                f"{ref.account_id} max_image_size <size>"
            )
        return limit

    def begin_chunk(
        self, ref: RepoRef, upload_id: str, start: int | None = None, length: int | None = None
    ) -> ChunkWriter:
        """Open a writer for the next chunk. ``start`` (from Content-Range) must equal the size held so far; a
        ``length`` declared up front is checked against the image size quota before anything is claimed."""
        state = self.status(ref, upload_id)
        limit = self.check_size(ref, state.size, length, upload_id)
        claim = self._claim(state)
        try:
            # Read the size again under the claim: a chunk that finished meanwhile has moved it on, and writing
            # from the stale offset would overwrite what that chunk made durable.
            state = self.status(ref, upload_id)
            if start is not None and start != state.size:
                raise RangeNotSatisfiable(
                    f"chunk starts at byte {start} but upload {upload_id} holds {state.size} bytes; "
                    f"resume from byte {state.size}",
                    current_size=state.size,
                )
            writer = self._storage(state).writer(upload_path(upload_id), offset=state.size)
        except (PathNotFound, InvalidOffset):
            self._release(upload_id, claim)
            raise upload_unknown(upload_id) from None
        except BaseException:
            self._release(upload_id, claim)
            raise
        hasher = self._running_hash(upload_id, state.size)
        return ChunkWriter(self, state, claim, writer, hasher, limit, self._plain_copy(state, hasher, length))

    def _plain_copy(self, state: UploadState, hasher: hashlib._Hash | None, length: int | None) -> Fill | None:
        """The plaintext cache's copy of this upload to continue (fill on push: a CI push followed by a deploy's
        pull reads memory), when this process holds the running hash that will verify it."""
        cache = self._push_cache(state)
        if cache is None or hasher is None:
            return None
        return cache.upload(state.id, state.size, None if length is None else state.size + length)

    def _running_hash(self, upload_id: str, size: int) -> hashlib._Hash | None:
        """The sha256 of the first ``size`` bytes, when this process can continue it without reading them back: it
        holds it, or nothing was written yet (a POST then a PUT with the whole body — what docker and containerd
        send — often lands on two different workers)."""
        hasher = self._hashes.get(upload_id, size)
        if hasher is None and size == 0:
            hasher = hashlib.sha256()
        return hasher

    def _record_size(self, state: UploadState, token: str, new_size: int, hasher: hashlib._Hash | None) -> UploadState:
        with self.ctx.db.write() as conn:
            updated = conn.execute(
                sa.update(uploads)
                .where(uploads.c.id == state.id, uploads.c.size == state.size, uploads.c.writer == token)
                .values(size=new_size, updated_at=self.ctx.clock(), writer=None, writer_seen=None)
            ).rowcount
        if not updated:
            # Another request moved the upload on (or cancelled it) meanwhile: our bytes cannot be trusted.
            self._hashes.drop(state.id)
            self._release(state.id, token)
            raise self._lost(state, "while this chunk was written")
        if hasher is not None:
            self._hashes.put(state.id, new_size, hasher)
        return UploadState(state.id, state.repository, new_size)

    def complete(self, ref: RepoRef, upload_id: str, digest: str, expected_size: int | None = None) -> BlobInfo:
        """Verify the content against ``digest`` and make it a blob of the repository."""
        parsed = Digest.parse(digest)
        state = self.status(ref, upload_id)
        claim = self._claim(state)  # a chunk still being written would keep writing into the moved file
        try:
            return self._complete(ref, upload_id, parsed, digest, expected_size, claim)
        except BaseException:
            self._release(upload_id, claim)  # (on success the session's row is gone)
            raise

    def _complete(
        self, ref: RepoRef, upload_id: str, parsed: Digest, digest: str, expected_size: int | None, claim: str
    ) -> BlobInfo:
        state = self.status(ref, upload_id)
        if expected_size is not None and expected_size != state.size:
            raise SizeInvalid(f"upload {upload_id} holds {state.size} bytes, not the {expected_size} declared")
        storage = self._storage(state)
        self._drop_beyond(storage, upload_id, state.size)
        hasher = self._hashes.get(upload_id, state.size) if parsed.algorithm == "sha256" else None
        cache = self.ctx.plain_cache
        plain = cache.take_upload(upload_id) if cache is not None else None
        try:
            if hasher is None:
                if plain is not None:  # (streamed here, but its hash is gone: read back below, copy and all)
                    plain.abort()
                plain = self._fill_for(state, digest)
                hasher = self._rehash(storage, state, parsed.algorithm, claim, plain)
            self._finish(state, upload_id, parsed, digest, hasher, storage, claim)
        except BaseException:
            if plain is not None:
                plain.abort()
            raise
        if plain is not None:  # the verified bytes: this blob's entry in the plaintext cache
            plain.commit(state.keyspace.name if state.keyspace else None, digest, state.size, verified=True)
        return BlobInfo(digest, state.size)

    def _push_cache(self, state: UploadState) -> PlainCache | None:
        """The plaintext cache, when a push fills it with this upload's content (``plaintext_cache_on_push``; a
        customer key's only with ``plaintext_cache_kms``)."""
        cache = self.ctx.plain_cache
        if cache is None or not self.ctx.settings.plaintext_cache_on_push:
            return None
        if state.keyspace is not None and not self.ctx.settings.plaintext_cache_kms:
            return None
        return cache

    def _fill_for(self, state: UploadState, digest: str) -> Fill | None:
        cache = self._push_cache(state)
        if cache is None:
            return None
        fill = cache.fill(state.keyspace.name if state.keyspace else None, digest, state.size)
        if fill is not None:
            fill.hasher = None  # the completion's own hash verifies it
        return fill

    def _finish(
        self,
        state: UploadState,
        upload_id: str,
        parsed: Digest,
        digest: str,
        hasher: hashlib._Hash,
        storage: StorageDriver,
        claim: str,
    ) -> None:
        actual = f"{parsed.algorithm}:{hasher.hexdigest()}"
        if actual != digest:
            raise DigestInvalid(
                f"upload {upload_id} does not match digest {digest}: its {state.size} bytes hash to {actual}. "
                "The content was corrupted or the digest is wrong; upload again"
            )
        now = self.ctx.clock()
        seal_id = storage.seal_id(upload_path(upload_id))  # recorded with the blob (soko.crypto)
        # PostgreSQL may pick this transaction as a deadlock victim (against the collector's batches or another
        # upload of the same content); nothing has moved in storage until its last statement, so retry it.
        pause, heartbeat = 0.02, time.monotonic()
        while True:
            try:
                retry_on_deadlock(lambda: self._commit_blob(storage, state, digest, now, claim, seal_id))
                break
            except _ClaimLost:
                raise self._lost(state, "while it was being completed") from None
            except tombstones.TombstoneBusy:
                # The collector is deleting this digest's old copy (a batch takes seconds; a claim lapses in
                # ``tombstones.CLAIM``): wait, then commit afresh.
                time.sleep(pause)
                pause = min(pause * 2, 1.0)
                if time.monotonic() - heartbeat >= CLAIM_REFRESH:  # keep this session's claim alive meanwhile
                    self._refresh_claim(state, claim, self.ctx.clock())
                    heartbeat = time.monotonic()
        self._hashes.drop(upload_id)
        self._views.drop(upload_id)
        self._delete_data(upload_id)

    def _drop_beyond(self, storage: StorageDriver, upload_id: str, size: int) -> None:
        """A chunk that failed half-way may have left bytes beyond the recorded size: drop them, so the blob is
        exactly the verified bytes (the move takes the whole file). Usually there are none, and a stat says so
        without reopening the file (on S3, without re-storing its last part)."""
        path = upload_path(upload_id)
        try:
            if storage.stat(path).size != size:
                storage.writer(path, offset=size).commit()
        except (PathNotFound, InvalidOffset):
            raise SizeInvalid(f"upload {upload_id} lost data: storage holds less than {size} bytes") from None

    def _commit_blob(
        self, storage: StorageDriver, state: UploadState, digest: str, now: float, claim: str, seal_id: str | None
    ) -> None:
        ref, upload_id, size = state.repository, state.id, state.size
        with self.ctx.transaction() as tx:
            conn = tx.conn
            repo_id = self.repositories.id_for(conn, ref)
            ended = sa.delete(uploads).where(uploads.c.id == upload_id, uploads.c.writer == claim)
            if conn.execute(ended).rowcount == 0:
                raise _ClaimLost()
            # Lock the blob row (create it if new) before touching storage; see the module docstring. On PostgreSQL
            # the collector may delete an existing row between our insert (which found it) and our lock (which
            # then finds nothing): insert again; a few attempts always win, as the collector only deletes rows
            # that existed before it looked.
            existing_size = None
            existing = None
            for _ in range(5):
                new_row = self.ctx.db.insert_ignore(blobs).values(digest=digest, size=size, created_at=now)
                inserted = conn.execute(new_row.returning(blobs.c.digest)).first() is not None
                locked = sa.select(blobs.c.size, blobs.c.tier, blobs.c.archive_path).where(blobs.c.digest == digest)
                if not self.ctx.db.is_sqlite:
                    locked = locked.with_for_update()
                existing = conn.execute(locked).first()
                existing_size = existing.size if existing is not None else None
                if existing_size is not None:
                    break
            if existing_size != size:
                raise SizeInvalid(f"blob {digest} is stored with {existing_size} bytes, this upload has {size}")
            conn.execute(
                self.ctx.db.insert_ignore(repository_blobs).values(repository_id=repo_id, digest=digest, created_at=now)
            )
            # If no manifest references the blob within the grace period, the collector unlinks it.
            tx.review_links(repo_id, [digest], "upload")
            # A deletion of this digest the collector committed but has not carried out must not delete the content
            # moved in below: drop it, or (an executor deleting it right now) roll back and retry once it is done.
            target = keyed_path(state.keyspace.name, digest) if state.keyspace else blob_path(digest)
            tombstones.clear_for_new_blob(conn, digest, lock=not self.ctx.db.is_sqlite, path=target)
            # Last: the content moves into place only when every row is written and locked — unless the blob was
            # already stored (a row that existed before this upload, locked now, is never without its content):
            # then the verified upload data is only dropped, after the commit, with no move or copy at all.
            if state.keyspace is not None:  # the repository's customer key holds its own copy (stored once per key)
                assert seal_id is not None and state.wrapped_key is not None
                store_copy(
                    conn, storage, state.keyspace, digest, size, upload_path(upload_id), seal_id, state.wrapped_key, now
                )
                return
            archived = existing is not None and existing.tier is not None
            keys = self.repositories.account_keys
            if (
                not inserted
                and not archived
                and stored(self.ctx.storage, blob_path(digest), size)
                and keys.grant(conn, digest, ref.account_id, now)  # the account reads the stored object (its wrap)
            ):
                return
            # (stored, but no live account key opens it — its holders were crypto-shredded: this one replaces it)
            if existing is not None and existing.tier is not None:
                # Content in the archive tier, uploaded again (re-push): it is back in standard storage from now
                # on, and the archive copy goes (``registry/storage_class.py``).
                tombstones.bury(conn, [(digest, existing.archive_path)], now, "re-upload")
            conn.execute(
                sa.update(blobs)
                .where(blobs.c.digest == digest)
                .values(seal_id=seal_id, tier=None, archive_path=None, archived_at=None)
            )
            object_key = None
            if state.wrapped_key is not None:
                object_key = keys.unwrap(conn, ref.account_id, state.wrapped_key)
            if keys.enabled:
                keys.install(conn, digest, object_key, now)
            storage.move(upload_path(upload_id), blob_path(digest))

    def _rehash(
        self, storage: StorageDriver, state: UploadState, algorithm: str, claim: str, plain: Fill | None = None
    ) -> hashlib._Hash:
        """Hash the stored data (the running hash is elsewhere), keeping the claim alive while it reads; ``plain``
        gets the same bytes (the plaintext cache's copy)."""
        hasher = hashlib.new(algorithm)
        remaining = state.size
        heartbeat = self.ctx.clock()
        with storage.reader(upload_path(state.id)) as f:
            while remaining > 0:
                data = f.read(min(_HASH_READ_SIZE, remaining))
                if not data:
                    raise SizeInvalid(f"upload {state.id} lost data: storage holds less than {state.size} bytes")
                hasher.update(data)
                if plain is not None:
                    plain.write((data,))
                remaining -= len(data)
                now = self.ctx.clock()
                if now - heartbeat >= CLAIM_REFRESH:
                    self._refresh_claim(state, claim, now)
                    heartbeat = now
        return hasher

    def store_bytes(self, ref: RepoRef, content: bytes) -> BlobInfo:
        """A small blob Soko makes itself (a signature, an SBOM) stored in the repository through an upload session,
        verified like any pushed blob; a failed attempt leaves no session behind."""
        digest = "sha256:" + hashlib.sha256(content).hexdigest()
        state = self.start(ref)
        try:
            writer = self.begin_chunk(ref, state.id, 0, len(content))
            try:
                writer.write(content)
                writer.finish()
            except BaseException:
                writer.abort()
                raise
            return self.complete(ref, state.id, digest, len(content))
        except BaseException:
            with contextlib.suppress(Exception):  # what is left, the upload expiry job removes
                self.cancel(ref, state.id)
            raise

    def cancel(self, ref: RepoRef, upload_id: str) -> None:
        with self.ctx.db.write() as conn:
            self._state(conn, ref, upload_id)
            conn.execute(sa.delete(uploads).where(uploads.c.id == upload_id))
        self._hashes.drop(upload_id)
        self._views.drop(upload_id)
        self._delete_data(upload_id)
        cache = self.ctx.plain_cache
        if cache is not None and (plain := cache.take_upload(upload_id)) is not None:
            plain.abort()  # (its copy leaves memory and gives back its descriptor)

    def _delete_data(self, upload_id: str) -> None:
        try:
            self.ctx.storage.delete(upload_dir(upload_id))
        except PathNotFound:
            pass

    def session_counts(self) -> tuple[int, int]:
        """(open sessions, sessions a request is writing to now)."""
        with self.ctx.db.read() as conn:
            open_, writing = conn.execute(
                sa.select(sa.func.count(), sa.func.count(uploads.c.writer)).select_from(uploads)
            ).one()
        return open_, writing

    def expire(self, older_than: float | None = None) -> int:
        """Reclaim sessions untouched for ``upload_expiry`` seconds (or ``older_than``); returns how many."""
        cutoff = self.ctx.clock() - (self.ctx.settings.upload_expiry if older_than is None else older_than)
        with self.ctx.db.write() as conn:
            expired = list(
                conn.execute(
                    sa.delete(uploads)
                    .where(
                        uploads.c.updated_at < cutoff,
                        # a writer streaming right now keeps the session (it refreshes updated_at as it goes)
                        sa.or_(uploads.c.writer.is_(None), uploads.c.writer_seen < self.ctx.clock() - CLAIM_STALE),
                    )
                    .returning(uploads.c.id)
                ).scalars()
            )
        for upload_id in expired:
            self._hashes.drop(upload_id)
            self._views.drop(upload_id)
            self._delete_data(upload_id)
        # Data of sessions whose row is gone (a crash between the two steps above) is swept by the storage GC.
        return len(expired)
