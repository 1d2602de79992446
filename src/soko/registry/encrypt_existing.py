"""``soko encrypt-existing``: seal the blobs (and manifest rows) earlier versions stored in plaintext, online.

Manifest rows (and the pull-through cache's pending manifests) are sealed in place, a batch per transaction
(``soko.crypto.rows``: readers take both forms, so the order does not matter); with a key service, the manifest rows
of KMS repositories are then moved under their repository's key (``Encryption.row_sealer``), so crypto-shredding
covers the manifests earlier versions stored too.

A blob row with no ``seal_id`` is content written before encryption at rest (``soko.crypto``): its plaintext lies
at ``blobs/<digest path>`` in the storage driver. Each is read, verified against its digest, and sealed under the
service key at a temporary ``uploads/seal-<uuid>`` path (no session row: the collector's storage sweep removes it if
this process dies); then, in one transaction holding the blob row's lock (the lock an upload completion and the
collector take), the sealed object moves into place — ``SealedDriver.move`` drops the plaintext — and the row gets
its ``seal_id``. Readers are never without content: until the move they read the plaintext, after it the sealed
copy (a sealed copy always wins). A blob the collector deleted meanwhile, or that someone sealed meanwhile, is
skipped. Safe to run while serving, and again (it resumes with what is left).

A blob held by AES256 repositories is sealed (from plaintext, or again from an object an earlier version sealed
under the deployment's service key) under a fresh object key wrapped for each account that holds it
(``soko.registry.account_keys``), in the same way: the wraps are written in the transaction that moves it in.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import sqlalchemy as sa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from soko.crypto.driver import SealedDriver
from soko.crypto.rows import KEYED_MAGIC, RowSealer, sealed_sql
from soko.kernel.context import DomainContext
from soko.kernel.keyspaces import KEYED_TYPES, keyspace_of
from soko.meta.schema import blob_keys, blobs, manifests, pull_through_pending, repository_blobs
from soko.meta.schema import repositories as repos
from soko.registry.account_keys import KEK_ID, AccountKeys
from soko.registry.encryption import Encryption, KeyUnusable
from soko.storage import PathNotFound
from soko.storage.paths import blob_path, upload_dir, upload_path

_READ = 4 << 20
_ROW_BATCH = 200


@dataclass
class SealReport:
    sealed: int = 0  # blobs sealed by this run
    bytes: int = 0
    already: int = 0  # rows without seal_id whose content was sealed already (recorded now)
    missing: int = 0  # rows whose content is nowhere (soko fsck reports them)
    corrupt: int = 0  # plaintext that does not match its digest (left as it is; soko fsck reports it)
    remaining: int = 0  # blobs found in plaintext or under the deployment key (dry run: what a run would seal)
    blobs_rekeyed: int = 0  # blobs under the deployment key sealed anew under account keys
    manifests: int = 0  # manifest rows (and pending pull-through manifests) sealed (dry run: found in plaintext)
    rekeyed: int = 0  # manifest rows of KMS repositories moved under their key (dry run: found under the service key)
    keys_unusable: int = 0  # such rows left as they are: their repository's KMS key is not usable now


def encrypt_existing(
    ctx: DomainContext,
    *,
    dry_run: bool = False,
    report: SealReport | None = None,
    stopping: Callable[[], bool] = lambda: False,
    encryption: Encryption | None = None,
) -> SealReport:
    """``encryption`` (with a KeyService attached): also move the manifest rows of KMS repositories that an earlier
    version sealed under the service key (or left in plaintext) under their repository's key."""
    report = report or SealReport()
    storage = ctx.storage
    if not isinstance(storage, SealedDriver):
        raise ValueError("storage is not encrypted in this process: nothing to seal with")
    keys = AccountKeys(ctx)
    with ctx.db.read() as conn:
        rows = conn.execute(
            sa.select(blobs.c.digest, blobs.c.size, blobs.c.seal_id)
            .where(blobs.c.tier.is_(None), ~sa.exists().where(blob_keys.c.digest == blobs.c.digest))
            .order_by(blobs.c.digest)
        ).all()
    report.manifests += _seal_rows(ctx, manifests, [manifests.c.id], dry_run)
    report.manifests += _seal_rows(
        ctx, pull_through_pending, [pull_through_pending.c.repository_id, pull_through_pending.c.digest], dry_run
    )
    if encryption is not None:
        _rekey_manifests(ctx, encryption, dry_run, report)
    for digest, size, seal_id in rows:
        if stopping():
            break
        path = blob_path(digest)
        key_id = storage.key_id(path)
        if key_id == KEK_ID:  # under account keys already (its accounts' keys are gone: soko fsck says so)
            continue
        holders = _holders(ctx, digest)
        if key_id is not None:
            if seal_id is None:  # sealed (by an upload of the same content) but not recorded: record it
                if not dry_run:
                    seal_id = storage.seal_id(path)
                    if seal_id is not None:
                        _record(ctx, digest, seal_id)
                report.already += 1
            if not holders:  # sealed under the deployment key, and no AES256 repository holds it: nothing to do
                continue
        else:
            try:
                storage.inner.stat(path)
            except PathNotFound:
                if seal_id is None:
                    report.missing += 1
                continue
        report.remaining += 1
        if dry_run:
            continue
        if _seal(ctx, storage, keys if holders else None, digest, size, path, seal_id):
            if key_id is None:
                report.sealed += 1
            else:
                report.blobs_rekeyed += 1
            report.bytes += size
        else:
            report.corrupt += 1
    return report


def _holders(ctx: DomainContext, digest: str) -> list[str]:
    """The accounts whose AES256 repositories hold ``digest``."""
    with ctx.db.read() as conn:
        return list(
            conn.execute(
                sa.select(repos.c.account_id)
                .join(repository_blobs, repository_blobs.c.repository_id == repos.c.id)
                .where(repository_blobs.c.digest == digest, repos.c.encryption_type == "AES256")
                .distinct()
            ).scalars()
        )


def _seal_rows(ctx: DomainContext, table: sa.Table, key: list[sa.Column], dry_run: bool) -> int:
    """Seal the payloads of ``table`` an earlier version stored in plaintext (``soko.crypto.rows``), a batch of rows
    per transaction; an update only applies to a payload still unsealed (a concurrent writer's sealed one stays)."""
    sealer = RowSealer(cast(SealedDriver, ctx.storage).ring.row_key)
    plain = sa.not_(sealed_sql(table.c.payload))  # (a KMS repository's rows are sealed under its key: not these)
    done = 0
    while True:
        with ctx.db.read() as conn:
            rows = conn.execute(
                sa.select(*key, table.c.digest, table.c.payload).where(plain).order_by(*key).limit(_ROW_BATCH)
            ).all()
        if not rows or dry_run:
            return done + len(rows)
        with ctx.db.write() as conn:
            for row in rows:
                where = [column == row._mapping[column.name] for column in key]
                done += conn.execute(
                    sa.update(table)
                    .where(*where, table.c.payload == row.payload)
                    .values(payload=sealer.seal(bytes(row.payload), row.digest))
                ).rowcount


def _rekey_manifests(ctx: DomainContext, encryption: Encryption, dry_run: bool, report: SealReport) -> None:
    """Reseal the manifest rows of KMS / KMS_DSSE repositories not yet under their keyspace's row key, a batch per
    transaction; the keys are got (KMS calls) before it, and an update applies only to a payload still as read."""
    last = 0
    while True:
        with ctx.db.read() as conn:
            rows = conn.execute(
                sa.select(
                    manifests.c.id,
                    manifests.c.digest,
                    manifests.c.payload,
                    repos.c.encryption_type,
                    repos.c.kms_key,
                    repos.c.account_id,
                )
                .join(repos, repos.c.id == manifests.c.repository_id)
                .where(
                    manifests.c.id > last,
                    repos.c.encryption_type.in_(list(KEYED_TYPES)),
                    sa.func.substr(manifests.c.payload, 1, len(KEYED_MAGIC)) != sa.literal(KEYED_MAGIC, sa.LargeBinary),
                )
                .order_by(manifests.c.id)
                .limit(_ROW_BATCH)
            ).all()
        if not rows:
            return
        last = rows[-1].id
        updates = []
        for row in rows:
            space = keyspace_of(row.encryption_type, row.kms_key, row.account_id)
            assert space is not None
            try:
                sealer = encryption.row_sealer(space)
                plain = encryption.open_row(row.payload, row.digest, space)
            except KeyUnusable:
                report.keys_unusable += 1
                continue
            updates.append((row, sealer.seal(plain, row.digest)))
        if dry_run:
            report.rekeyed += len(updates)
            continue
        with ctx.db.write() as conn:
            for row, sealed in updates:
                report.rekeyed += conn.execute(
                    sa.update(manifests)
                    .where(manifests.c.id == row.id, manifests.c.payload == row.payload)
                    .values(payload=sealed)
                ).rowcount


def _record(ctx: DomainContext, digest: str, seal_id: str) -> None:
    with ctx.db.write() as conn:
        conn.execute(
            sa.update(blobs).where(blobs.c.digest == digest, blobs.c.seal_id.is_(None)).values(seal_id=seal_id)
        )


def _seal(
    ctx: DomainContext,
    storage: SealedDriver,
    keys: AccountKeys | None,
    digest: str,
    size: int,
    path: str,
    seal_id: str | None,
) -> bool:
    """Seal one blob of an earlier version (plaintext, or sealed under the deployment key) under a new object key
    wrapped by the key of each account that holds it (``keys``; None: no AES256 repository holds it, the deployment
    key seals it); False when its content does not match its digest (left alone)."""
    temp_id = f"seal-{uuid.uuid4()}"
    temp = upload_path(temp_id)
    algorithm, _, expected = digest.partition(":")
    hasher = hashlib.new(algorithm)
    object_key = AESGCM.generate_key(256) if keys is not None else None
    view = keys.view(object_key) if keys is not None and object_key is not None else storage
    try:
        writer = view.writer(temp)
        try:
            with storage.sealed_reader(path, 0, seal_id) as f:
                while piece := f.read(_READ):
                    hasher.update(piece)
                    writer.write(piece)
            if hasher.hexdigest() != expected or writer.size != size:
                writer.cancel()
                return False
            writer.commit()
        finally:
            writer.close()
        new_seal = view.seal_id(temp)
        with ctx.transaction() as tx:
            locked = sa.select(blobs.c.seal_id, blobs.c.tier).where(blobs.c.digest == digest)
            if not ctx.db.is_sqlite:
                locked = locked.with_for_update()
            row = tx.conn.execute(locked).first()
            wrapped = tx.conn.execute(sa.select(blob_keys.c.digest).where(blob_keys.c.digest == digest)).first()
            if row is None or row.seal_id != seal_id or row.tier is not None or wrapped is not None:
                return True  # collected, archived, or stored anew by someone else meanwhile
            tx.conn.execute(sa.update(blobs).where(blobs.c.digest == digest).values(seal_id=new_seal))
            if keys is not None:
                keys.install(tx.conn, digest, object_key, tx.now)
            view.move(temp, path)  # last: the sealed copy takes the blob's place and the plaintext goes
        return True
    finally:
        try:
            storage.delete(upload_dir(temp_id))
        except PathNotFound:
            pass
