"""Repositories encrypted with a customer key: ECR's ``encryptionType`` KMS and KMS_DSSE.

A repository's *keyspace* is where its blobs' content lives: AES256 repositories share the service-key copy at
``blobs/<digest path>`` (``soko.crypto``); a KMS repository's keyspace is ``kms/<key id>`` and a KMS_DSSE one's
``dsse/<key id>``, each with its own copy of a blob at ``keyed/<keyspace>/<digest path>`` (a row of
``blob_copies``). So content is stored once per key: deduplicated among the repositories of one key, and copied
(re-encrypted) when a mount or a replication crosses keys.

Every object of a keyspace (an upload's data, then the blob it becomes) is sealed under a fresh key that KMS makes
for it — ``GenerateDataKey`` on the repository's key, by ECR (``kms:ViaService`` = ``ecr.<region>.amazonaws.com``,
audited as CloudTrail records it) — and only the KMS ciphertext of that key is kept (``uploads.wrapped_key``, then
``blob_copies.wrapped_key``, with the keyspace as encryption context). Reading calls ``Decrypt``: a key that is
disabled, pending deletion or deleted makes the content unreadable (``KeyUnusable``), and readable again once the
key is enabled or its deletion cancelled; rotation only changes the version new keys are made with. KMS_DSSE seals
twice: the service key inside, the customer key outside (``crypto.driver.LayerDriver``).

``KeyService`` (``soko.kms.service``) is attached by whoever has one (the server, ``soko fsck``): the domain needs
no identity to be built, and without an attached key service a keyed repository is refused, not mishandled.
"""

from __future__ import annotations

import functools
import threading
from typing import Protocol

import sqlalchemy as sa

from soko.access import Principal
from soko.crypto.driver import LayerDriver, SealedDriver
from soko.crypto.keys import KeyRing
from soko.crypto.rows import KEYED_MAGIC, RowBroken, RowSealer, is_keyed, is_sealed
from soko.errors import ContentUnreadable, SokoError
from soko.kernel.context import DomainContext
from soko.kernel.keyspaces import Keyspace, keyspace_of
from soko.kms.errors import KmsError
from soko.meta.schema import keyspace_keys
from soko.storage import StorageDriver

__all__ = ["Encryption", "KeyUnusable", "Keyspace", "keyspace_of"]
_KEK = "kms"  # the key id sealed headers of keyed objects name: the object's own KMS-made key


class KeyUnusable(SokoError):
    """The repository's KMS key cannot be used (disabled, pending deletion, deleted, missing, not allowed): ECR's
    KmsException with ``kmsError``; on /v2/ a DENIED naming the key and what to do."""

    def __init__(self, message: str, kms_error: str) -> None:
        super().__init__(message)
        self.kms_error = kms_error


class _KeyInfo(Protocol):
    @property
    def key_id(self) -> str: ...

    @property
    def arn(self) -> str: ...

    def usable_error(self) -> KmsError | None: ...


class DataKeys(Protocol):
    """What this module uses of ``soko.kms.service.KeyService`` (its documented contract)."""

    def resolve_key(self, account_id: str, key_ref: str) -> _KeyInfo: ...

    def peek_key(self, account_id: str, key_ref: str) -> _KeyInfo: ...

    def generate_data_key(
        self,
        principal: Principal | None,
        key_ref: str,
        encryption_context: dict[str, str] | None = None,
        via_service: str | None = None,
        context: None = None,
        *,
        account_id: str | None = None,
    ) -> tuple[bytes, bytes, str]: ...

    def decrypt(
        self,
        principal: None,
        blob: bytes,
        encryption_context: dict[str, str] | None = None,
        via_service: str | None = None,
    ) -> tuple[bytes, str]: ...


def _explain(exc: KmsError, arn: str) -> str:
    code = exc.code
    if code == "DisabledException":
        fix = f"enable it (aws kms enable-key --key-id {arn}) and retry"
        what = "is disabled"
    elif code == "KMSInvalidStateException":
        fix = f"cancel its deletion (aws kms cancel-key-deletion --key-id {arn}), enable it, and retry"
        what = "is pending deletion"
    elif code == "NotFoundException":
        fix = "its content cannot be decrypted any more (crypto-shredded) unless the key comes back"
        what = "does not exist (deleted?)"
    elif code == "AccessDeniedException":
        fix = "its key policy must let ECR use it (kms:ViaService ecr)"
        what = "cannot be used"
    else:
        fix = "see the key's state with aws kms describe-key"
        what = "failed"
    return f"the repository's KMS key {arn} {what} ({code}: {exc.message}); {fix}"


class Encryption:
    def __init__(self, ctx: DomainContext) -> None:
        self.ctx = ctx
        self.keys: DataKeys | None = None
        # keyspace name → (generation its key was last seen usable at, the sealer of its rows): see row_sealer
        self._row_keys: dict[str, tuple[int, RowSealer]] = {}
        self._checked: dict[str, int] = {}  # keyspace name → generation its key was last seen usable at
        self._row_keys_lock = threading.Lock()

    def attach(self, keys: DataKeys) -> None:
        self.keys = keys

    @property
    def via_service(self) -> str:
        return f"ecr.{self.ctx.settings.region}.amazonaws.com"

    def _keys(self) -> DataKeys:
        if self.keys is None:
            raise KeyUnusable(
                "this process has no KMS key service, so repositories encrypted with a KMS key are not served here",
                "KMSInternalException",
            )
        return self.keys

    def _service(self) -> SealedDriver:
        storage = self.ctx.storage
        if not isinstance(storage, SealedDriver):
            raise KeyUnusable(
                "storage is not encrypted in this process, so a KMS key cannot be applied", "KMSInternalException"
            )
        return storage

    def resolve_for_repository(
        self, account_id: str, encryption_type: str, key_ref: str, user: Principal | None = None
    ) -> str:
        """The key ARN a new repository of ``encryption_type`` is bound to: ``key_ref`` (id, ARN, alias, or the
        ``aws/ecr`` alias, created on first use) resolved in this region, and usable now (as ECR checks). ``user``
        (the caller) must be allowed to use the key through ECR — as ECR needs the caller's permission to create its
        grant — checked by a GenerateDataKey in the caller's name with ``kms:ViaService`` ECR (key policy and IAM
        policies, across accounts both): a repository cannot be bound to a key its creator may not use."""
        keys = self._keys()
        try:
            info = keys.resolve_key(account_id, key_ref)
            error = info.usable_error()
            if error is not None:
                raise error
            if user is not None:
                keys.generate_data_key(
                    user, info.arn, {"soko:ecr:repository-key-check": "CreateRepository"}, self.via_service
                )
        except KmsError as exc:
            raise KeyUnusable(
                f"encryptionType {encryption_type} with kmsKey {key_ref[:300]}: {exc.code}: {exc.message}", exc.code
            ) from None
        return info.arn

    def key_for_template(self, account_id: str, encryption_type: str, key_ref: str) -> str:
        """The key ARN a repository created from a creation template is bound to: the template's ``kmsKey`` (checked
        when the template was stored, in its creator's or custom role's name) resolved now and usable now. Reads
        only, so it runs inside the transaction that creates the repository (templates apply there)."""
        keys = self._keys()
        try:
            info = keys.peek_key(account_id, key_ref)
            error = info.usable_error()
            if error is not None:
                raise error
        except KmsError as exc:
            raise KeyUnusable(
                f"the creation template's encryptionType {encryption_type} with kmsKey {key_ref[:300]}: "
                f"{exc.code}: {exc.message}",
                exc.code,
            ) from None
        return info.arn

    def check_usable(self, space: Keyspace) -> None:
        """KeyUnusable unless the keyspace's key may be used now (a push that stores nothing new checks it)."""
        try:
            info = self._keys().resolve_key(space.account_id, space.key_arn)
            error = info.usable_error()
            if error is not None:
                raise error
        except KmsError as exc:
            raise KeyUnusable(_explain(exc, space.key_arn), exc.code) from None

    def new_object(self, space: Keyspace) -> tuple[bytes, StorageDriver]:
        """A fresh KMS-made key for one object: (its KMS ciphertext, to keep; the storage view that seals with it)."""
        try:
            plain, wrapped, _ = self._keys().generate_data_key(
                None, space.key_arn, space.context, self.via_service, account_id=space.account_id
            )
        except KmsError as exc:
            raise KeyUnusable(_explain(exc, space.key_arn), exc.code) from None
        return wrapped, self.view(space, plain)

    def open_object(self, space: Keyspace, wrapped: bytes) -> StorageDriver:
        """The storage view that reads (and resumes) an object of ``space`` whose key KMS wrapped as ``wrapped``."""
        try:
            plain, _ = self._keys().decrypt(None, wrapped, space.context, self.via_service)
        except KmsError as exc:
            raise KeyUnusable(_explain(exc, space.key_arn), exc.code) from None
        return self.view(space, plain)

    # ---- sealed database values (manifests), soko.crypto.rows: the service key's row key, or a keyspace's -------
    @functools.cached_property
    def _rows(self) -> RowSealer | None:
        storage = self.ctx.storage
        return RowSealer(storage.ring.row_key) if isinstance(storage, SealedDriver) else None

    def row_sealer(self, space: Keyspace) -> RowSealer:
        """The sealer of a keyspace's rows (a KMS repository's manifests): a data key KMS generated on the keyspace's
        key once (``keyspace_keys``, wrapped), decrypted once per process and kept in memory while the key stays
        usable. The key's state is checked again whenever the metadata generation moved (every KMS change moves it):
        disabled, pending deletion or deleted → KeyUnusable, and the plaintext key is dropped. KMS calls: never
        inside a write transaction."""
        generation = self.ctx.generation.current()
        hit = self._row_keys.get(space.name)
        if hit is not None and hit[0] == generation:
            return hit[1]
        self._usable_now(space, generation)
        sealer = hit[1] if hit is not None else self._open_row_key(space)
        with self._row_keys_lock:
            self._row_keys[space.name] = (generation, sealer)
        return sealer

    def _usable_now(self, space: Keyspace, generation: int) -> None:
        """``check_usable``, once per keyspace and metadata generation (a key's state changes only by a KMS write,
        which moves the generation); an unusable key's row key is dropped from memory."""
        if self._checked.get(space.name) == generation:
            return
        try:
            self.check_usable(space)
        except KeyUnusable:
            with self._row_keys_lock:
                self._row_keys.pop(space.name, None)
                self._checked.pop(space.name, None)
            raise
        with self._row_keys_lock:
            self._checked[space.name] = generation

    def _open_row_key(self, space: Keyspace) -> RowSealer:
        context = space.context | {"soko:ecr:data": "manifests"}
        with self.ctx.db.read() as conn:
            wrapped = conn.execute(
                sa.select(keyspace_keys.c.wrapped_key).where(keyspace_keys.c.keyspace == space.name)
            ).scalar()
        if wrapped is None:  # the keyspace's first manifest: KMS makes its key (a concurrent maker may win)
            try:
                _, made, _ = self._keys().generate_data_key(
                    None, space.key_arn, context, self.via_service, account_id=space.account_id
                )
            except KmsError as exc:
                raise KeyUnusable(_explain(exc, space.key_arn), exc.code) from None
            with self.ctx.db.write() as conn:
                conn.execute(
                    self.ctx.db.insert_ignore(keyspace_keys).values(
                        keyspace=space.name, wrapped_key=made, created_at=self.ctx.clock()
                    )
                )
                wrapped = conn.execute(
                    sa.select(keyspace_keys.c.wrapped_key).where(keyspace_keys.c.keyspace == space.name)
                ).scalar_one()
        try:
            plain, _ = self._keys().decrypt(None, bytes(wrapped), context, self.via_service)
        except KmsError as exc:
            raise KeyUnusable(_explain(exc, space.key_arn), exc.code) from None
        return RowSealer(plain, KEYED_MAGIC)

    def seal_row(self, payload: bytes, bound_to: str, sealer: RowSealer | None = None) -> bytes:
        """``payload`` sealed for its row (a manifest: ``bound_to`` its digest) — under ``sealer`` (a keyspace's,
        from ``row_sealer``, got before the transaction), else the service key; as it is without encryption."""
        if sealer is not None:
            return sealer.seal(payload, bound_to)
        return payload if self._rows is None else self._rows.seal(payload, bound_to)

    def open_row(self, stored: bytes, bound_to: str, space: Keyspace | None = None) -> bytes:
        """The plaintext of a value ``seal_row`` stored (or an earlier version's plaintext); ContentUnreadable when it
        fails authentication. ``space``: the keyspace of the row's repository, whose key must be usable (KeyUnusable)
        even for a row an earlier version sealed under the service key: crypto-shredding covers manifests."""
        sealer: RowSealer | None
        if is_keyed(stored):
            if space is None:
                raise ContentUnreadable(f"{bound_to} is sealed under a KMS key its repository does not have")
            sealer = self.row_sealer(space)
        elif space is not None:  # (an earlier version's row: only the check, no key is made for it here)
            self._usable_now(space, self.ctx.generation.current())
            sealer = self._rows
        else:
            sealer = self._rows
        if sealer is None:
            if is_sealed(stored):
                raise ContentUnreadable(f"{bound_to} is stored encrypted and this process has no key to read it")
            return bytes(stored)
        try:
            return sealer.open(stored, bound_to)
        except RowBroken as exc:
            raise ContentUnreadable(f"{exc}; an operator should run soko fsck, then push the image again") from None

    def view(self, space: Keyspace, data_key: bytes) -> StorageDriver:
        service = self._service()
        outer = SealedDriver(service.inner, KeyRing({_KEK: data_key}, _KEK))
        if space.encryption_type == "KMS_DSSE":  # two independent layers: the service key inside
            return LayerDriver(outer, service.ring)
        return outer
