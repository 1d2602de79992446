"""Per-account service keys: ECR's AES256 (service-managed) encryption, with a key of each account's own.

Each account has a random 256-bit *account key* (table ``account_keys``), stored only wrapped by a key derived from
the master key (``KeyRing.account_wrap_key``; the account and key id are the associated data), created on the
account's first push. A service-key object (a blob at ``blobs/…``, or an upload to an AES256 repository) is sealed
as every object is (``soko.crypto``: a random data key per object, in its header), but its header's data key is
wrapped by a random *object key* (header key id ``account``), and the object key is kept only wrapped by account
keys: the upload's by its account (``uploads.wrapped_key``), then the blob's by each account that holds the digest
(table ``blob_keys``, one row per digest and account). Neither the deployment's service key nor another account's
key opens it, unless that account holds the same digest too.

So content stays stored once per deployment (deduplicated across accounts; the archive tier, the collector and
``soko fsck`` see one object per digest), and each account reads it only through its own wrap. This is as strong as
a copy per account: a digest names its plaintext, so an account whose key opens an object holds that very content
itself. Deleting an account's keys (``soko account-key shred``) makes everything only that account holds unreadable
(crypto-shredding; ``soko fsck`` reports it as such), while the same content held by other accounts stays theirs.
Rotation (``soko account-key rotate``) makes a new key wrap new object keys; earlier keys stay to read.

A digest without ``blob_keys`` rows is content of an earlier version, sealed under the deployment's service key (or
plaintext): it is read as it is, and ``soko encrypt-existing`` seals it anew for the accounts that hold it.

An upload makes its account's first key in a transaction of its own (``ensure``); the current key is always read
from the database, never cached, so a key a rolled-back transaction made (``install`` for an account that has none)
is never used again. Unwrapped keys are cached per process until the cache generation moves (a shred bumps it).
"""

from __future__ import annotations

import os
import secrets
import threading

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from soko.crypto.driver import SealedDriver
from soko.crypto.keys import KeyRing
from soko.crypto.segments import KeyUnavailable
from soko.kernel.context import DomainContext
from soko.meta.schema import account_keys, blob_keys, repository_blobs
from soko.meta.schema import repositories as repos
from soko.storage import StorageDriver
from soko.storage.paths import blob_path

KEK_ID = "account"  # the key id headers of service-key objects name: their object key, wrapped per account
_WRAP = b"SKA1"  # a wrapped object key: magic | account key id (16) | nonce (12) | AES-256-GCM(object key) + tag
_KEY_ID = 16
_NONCE = 12
_SERVICE_TYPES = ("AES256",)  # repositories whose content is the service-key object (KMS_DSSE's inner layer is not)


def _aad(kind: bytes, account_id: str, key_id: str) -> bytes:
    return b"soko/" + kind + b"|" + account_id.encode() + b"|" + key_id.encode()


def key_id_of(wrapped: bytes) -> str | None:
    wrapped = bytes(wrapped)
    if wrapped[: len(_WRAP)] != _WRAP:
        return None
    return wrapped[len(_WRAP) : len(_WRAP) + _KEY_ID].decode("ascii", "replace")


class AccountKeys:
    def __init__(self, ctx: DomainContext) -> None:
        self.ctx = ctx
        self._ciphers: dict[tuple[str, str], AESGCM] = {}
        self._generation = -1
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """No encryption at rest (a plain driver): no keys, no wraps. Asked each time, not once: the context's
        driver can be replaced after the registry is built (a tool, a test on another disk)."""
        return isinstance(self.ctx.storage, SealedDriver)

    def _service(self) -> SealedDriver:
        storage = self.ctx.storage
        assert isinstance(storage, SealedDriver), "account keys need encrypted storage"
        return storage

    def _master(self) -> AESGCM:
        return AESGCM(self._service().ring.account_wrap_key)

    # ---- account keys ----------------------------------------------------------------------------------------
    def ensure(self, account_id: str) -> str:
        """The account's current key id, its first key created (and committed) when it has none."""
        with self.ctx.db.read() as conn:
            key_id = self._current_id(conn, account_id)
        if key_id is not None:
            return key_id
        with self.ctx.db.write() as conn:
            key_id = self._current_id(conn, account_id)
            if key_id is None:
                key_id = self._create(conn, account_id)
        return key_id

    def rotate(self, account_id: str) -> str:
        """A new key for the account: it wraps the object keys of new objects; the earlier ones stay to read."""
        with self.ctx.write(invalidates=True) as conn:
            return self._create(conn, account_id)

    def shred(self, account_id: str) -> int:
        """Delete every key of the account (crypto-shredding): content only it holds can never be read again.
        Returns how many keys went. A later push to the account makes it a new key."""
        with self.ctx.write(invalidates=True) as conn:
            gone = conn.execute(sa.delete(account_keys).where(account_keys.c.account_id == account_id)).rowcount
        with self._lock:
            self._ciphers.clear()
        return gone

    def _create(self, conn: sa.Connection, account_id: str) -> str:
        key_id = secrets.token_hex(_KEY_ID // 2)
        nonce = os.urandom(_NONCE)
        wrapped = nonce + self._master().encrypt(nonce, os.urandom(32), _aad(b"account-key", account_id, key_id))
        conn.execute(
            sa.insert(account_keys).values(
                account_id=account_id, key_id=key_id, wrapped=wrapped, created_at=self.ctx.clock()
            )
        )
        return key_id

    @staticmethod
    def _current_id(conn: sa.Connection, account_id: str) -> str | None:
        return conn.execute(
            sa.select(account_keys.c.key_id)
            .where(account_keys.c.account_id == account_id)
            .order_by(account_keys.c.created_at.desc(), account_keys.c.key_id.desc())
            .limit(1)
        ).scalar()

    def _cipher(self, conn: sa.Connection | None, account_id: str, key_id: str) -> AESGCM:
        generation = self.ctx.generation.current()
        with self._lock:
            if generation != self._generation:
                self._ciphers.clear()
                self._generation = generation
            cached = self._ciphers.get((account_id, key_id))
        if cached is not None:
            return cached
        query = sa.select(account_keys.c.wrapped).where(
            account_keys.c.account_id == account_id, account_keys.c.key_id == key_id
        )
        if conn is None:
            with self.ctx.db.read() as own:
                stored = own.execute(query).scalar()
        else:
            stored = conn.execute(query).scalar()
        if stored is None:
            raise KeyUnavailable(account_id, f"the service key {key_id} of account {account_id} is gone")
        stored = bytes(stored)
        try:
            key = self._master().decrypt(stored[:_NONCE], stored[_NONCE:], _aad(b"account-key", account_id, key_id))
        except InvalidTag:
            raise KeyUnavailable(account_id, f"the service key {key_id} of account {account_id} fails") from None
        cipher = AESGCM(key)
        with self._lock:
            self._ciphers[(account_id, key_id)] = cipher
        return cipher

    # ---- object keys -----------------------------------------------------------------------------------------
    def wrap(self, conn: sa.Connection | None, account_id: str, key_id: str, object_key: bytes) -> bytes:
        cipher = self._cipher(conn, account_id, key_id)
        nonce = os.urandom(_NONCE)
        return (
            _WRAP + key_id.encode() + nonce + cipher.encrypt(nonce, object_key, _aad(b"object-key", account_id, key_id))
        )

    def unwrap(self, conn: sa.Connection | None, account_id: str, wrapped: bytes) -> bytes:
        """The object key ``wrapped`` holds for ``account_id``; KeyUnavailable when the account's key is gone."""
        wrapped = bytes(wrapped)
        key_id = key_id_of(wrapped)
        if key_id is None:
            raise KeyUnavailable(account_id, "the object key is not wrapped by an account key")
        body = wrapped[len(_WRAP) + _KEY_ID :]
        cipher = self._cipher(conn, account_id, key_id)
        try:
            return cipher.decrypt(body[:_NONCE], body[_NONCE:], _aad(b"object-key", account_id, key_id))
        except InvalidTag:
            raise KeyUnavailable(account_id, f"its key does not unwrap with account {account_id}'s key") from None

    def view(self, object_key: bytes, store: StorageDriver | None = None) -> SealedDriver:
        """The storage view that seals (and reads) objects under ``object_key``, over ``store``'s sealed layer (the
        standard store by default, or the archive store)."""
        base = store if store is not None else self._service()
        assert isinstance(base, SealedDriver)
        return SealedDriver(base.inner, KeyRing({KEK_ID: object_key}, KEK_ID))

    def new_object(self, account_id: str) -> tuple[bytes, SealedDriver]:
        """A fresh object key for an upload of ``account_id``: (its wrap, to keep; the view that seals with it)."""
        key_id = self.ensure(account_id)
        object_key = AESGCM.generate_key(256)
        return self.wrap(None, account_id, key_id, object_key), self.view(object_key)

    def open_object(self, account_id: str, wrapped: bytes, store: StorageDriver | None = None) -> SealedDriver:
        return self.view(self.unwrap(None, account_id, wrapped), store)

    # ---- blob_keys: each account's wrap of a blob's object key --------------------------------------------------
    @staticmethod
    def wrapped_for(conn: sa.Connection, digest: str, account_id: str) -> bytes | None:
        return conn.execute(
            sa.select(blob_keys.c.wrapped_key).where(blob_keys.c.digest == digest, blob_keys.c.account_id == account_id)
        ).scalar()

    def object_key(self, conn: sa.Connection | None, digest: str) -> bytes | None:
        """The object key of the digest's service-key object, through any account whose key still opens it; None
        when no account holds a wrap (an earlier version's content) or none of their keys is left."""
        query = sa.select(blob_keys.c.account_id, blob_keys.c.wrapped_key).where(blob_keys.c.digest == digest)
        if conn is None:
            with self.ctx.db.read() as own:
                rows = own.execute(query).all()
        else:
            rows = conn.execute(query).all()
        for row in rows:
            try:
                return self.unwrap(conn, row.account_id, row.wrapped_key)
            except KeyUnavailable:
                continue
        return None

    def grant(self, conn: sa.Connection, digest: str, account_id: str, now: float) -> bool:
        """Make the stored service-key object of ``digest`` readable by ``account_id`` (in the caller's transaction,
        under the blob row's lock): True when it is — its own wrap, a new one made from another account's, or an
        earlier version's content (no wraps: the deployment key reads it). False when no live account key opens it
        (all holders crypto-shredded): the caller stores its own content in its place (``install``)."""
        if not self.enabled:
            return True
        own = self.wrapped_for(conn, digest, account_id)
        if own is not None and self._usable(conn, account_id, own):
            return True
        object_key = self.object_key(conn, digest)
        if object_key is None:
            return self._service().key_id(blob_path(digest)) != KEK_ID
        key_id = self._current_id(conn, account_id)
        if key_id is None:  # (callers ensure the account's key first; a shred raced it)
            return False
        self._put(conn, digest, account_id, self.wrap(conn, account_id, key_id, object_key), now)
        return True

    def _usable(self, conn: sa.Connection, account_id: str, wrapped: bytes) -> bool:
        try:
            self.unwrap(conn, account_id, wrapped)
        except KeyUnavailable:
            return False
        return True

    def _put(self, conn: sa.Connection, digest: str, account_id: str, wrapped: bytes, now: float) -> None:
        conn.execute(sa.delete(blob_keys).where(blob_keys.c.digest == digest, blob_keys.c.account_id == account_id))
        conn.execute(
            sa.insert(blob_keys).values(digest=digest, account_id=account_id, wrapped_key=wrapped, created_at=now)
        )

    def install(
        self, conn: sa.Connection, digest: str, object_key: bytes | None, now: float, holder: str | None = None
    ) -> None:
        """The object sealed under ``object_key`` becomes the digest's service-key object (the caller moves it into
        place last, in this transaction): every earlier wrap goes, and each account that holds the digest in an
        AES256 repository gets one (with a key made for it if it has none), and ``holder``, an account about to link
        it. ``object_key`` None: an earlier
        version's content (an upload started before account keys), read with the deployment key."""
        conn.execute(sa.delete(blob_keys).where(blob_keys.c.digest == digest))
        if object_key is None:
            return
        holders = conn.execute(
            sa.select(repos.c.account_id)
            .join(repository_blobs, repository_blobs.c.repository_id == repos.c.id)
            .where(repository_blobs.c.digest == digest, repos.c.encryption_type.in_(_SERVICE_TYPES))
            .distinct()
        ).scalars()
        for account_id in sorted(set(holders) | ({holder} if holder else set())):
            key_id = self._current_id(conn, account_id) or self._create(conn, account_id)
            self._put(conn, digest, account_id, self.wrap(conn, account_id, key_id, object_key), now)
