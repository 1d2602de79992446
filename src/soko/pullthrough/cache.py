"""The pull-through cache: pulls of repositories under a rule's prefix are answered from the cache, and what the cache
lacks is fetched from the rule's upstream, verified, stored and served.

* **Manifests.** A manifest the repository lacks (or a tag last checked more than ``pull_through_recheck`` ago) is
  fetched from the upstream (bounded, verified against its digest by ``soko.remote``) and stored through the
  domain's ``Manifests.put``: the repository is created first (PULL_THROUGH_CACHE creation template, else ECR's
  defaults). An image whose blobs are not cached yet cannot be stored (the domain refuses manifests with missing
  blobs), so it waits in ``pull_through_pending`` and is served from there; once its last blob is in (each blob
  fetch ends by trying), or when the ``pull_through_fill`` job fetches what no client pulled, it is stored.
  While the upstream is down or rate-limits, a cached tag is served from the cache.
* **Blobs** stream to the client while they are stored: each piece is written to an upload session of the
  repository, then sent; the last piece is sent only after the whole blob has hashed to its digest, so a client
  never gets a complete wrong blob, and the blob becomes visible only through ``Uploads.complete``, which verifies
  it again. Memory stays at one piece per pull.
* **One fetch per blob** across processes and nodes: the fetch holds a row of ``pull_through_fetches`` (inserted
  once; refreshed while bytes arrive; taken over when it goes stale). Other pulls of the same blob wait for it and
  then serve the stored blob (linked into their repository like a cross-repository mount).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

import sqlalchemy as sa

from soko import process_identity
from soko.digest import Digest, is_digest
from soko.errors import (
    AccessDenied,
    BlobUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    ReferencedManifestUnknown,
    RepositoryNotFound,
    SokoError,
    TagImmutable,
)
from soko.kernel import events
from soko.kernel.events import Event
from soko.kernel.keyspaces import keyspace_of
from soko.meta.schema import (
    blobs,
    jobs,
    pull_through_fetches,
    pull_through_pending,
    pull_through_tags,
    repository_blobs,
)
from soko.meta.schema import repositories as repos
from soko.pullthrough.clients import UpstreamClients
from soko.pullthrough.live import LiveFetch
from soko.pullthrough.rules import Rule, Rules
from soko.registry import Registry
from soko.registry import media_types as mt
from soko.registry.immutability import tag_is_immutable
from soko.registry.manifest_format import parse_manifest
from soko.registry.models import BlobContent, RepoRef
from soko.registry.uploads import ChunkWriter
from soko.remote import Credentials, RegistryClient, UpstreamError
from soko.secrets.store import SecretDecryptionFailure, SecretInvalidRequest, SecretNotFound, SecretStore

log = logging.getLogger("soko.pullthrough")
FILL_JOB = "pull_through_fill"
FILL_DELAY = 60.0  # the fill job runs this long after a manifest went pending (clients usually pull the blobs first)
FILL_ATTEMPTS = 10  # failed runs in a row (backoff from 5 s, doubling: ~1.5 h) before a fill job gives its image up
FILL_DEPTH = 4  # index levels a fill follows (OCI allows nested indexes; real images nest one or two)
CLAIM_STALE = 30.0  # a blob fetch silent this long is taken over
CLAIM_REFRESH = 5.0
WAIT_STEP = 0.05
LIVE_WINDOW = 32 << 20  # bytes of a fetch kept for pulls that have not asked for them yet (a prefetch)
LIVE_PATIENCE = 20.0  # how long a fetch waits for a pull to take them (or for a stalled pull) before going on alone
PREFETCH_SLOTS = 8  # prefetches under way at once per process
LIVE_PIECE = 1 << 20  # bytes per piece of a stored blob sent in place of a failed fetch
BACKLOG = 8  # pieces (~1 MiB) a fetch may have received but not yet stored and hashed


class UpstreamFailed(SokoError):
    """The upstream could not give what the cache lacks. ``code``: ECR's failure code (UpstreamAccessDenied,
    UpstreamTooManyRequests, UpstreamUnavailable), or NotFound / Invalid."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message, detail={"failureCode": code})
        self.code = code


class UpstreamAccessDenied(UpstreamFailed):
    pass


class UpstreamTooManyRequests(UpstreamFailed):
    pass


class UpstreamUnavailable(UpstreamFailed):
    pass


class NotStorable(SokoError):
    """A pending image the cache cannot store as the upstream gave it (malformed, too deep, over a quota)."""


class StoreFailed(SokoError):
    """A pending image whose blobs are all in was refused by the store (over a quota, say): retried a while."""


class CredentialsUnusable(SokoError):
    """The rule's secret is missing, unreadable or not {"username","accessToken"}. ``code``: SecretNotFound,
    UnableToAccessSecret or UnableToDecryptSecretValue (ECR's exception names)."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


_BY_CODE: dict[str, type[UpstreamFailed]] = {
    "UpstreamAccessDenied": UpstreamAccessDenied,
    "UpstreamTooManyRequests": UpstreamTooManyRequests,
    "UpstreamUnavailable": UpstreamUnavailable,
    "Invalid": UpstreamUnavailable,
}


def upstream_failed(rule: Rule, exc: UpstreamError, what: str = "manifest") -> SokoError:
    message = f"pull-through cache '{rule.prefix}' ({rule.upstream_registry_url}): {exc.message}"
    if exc.code == "NotFound":
        return BlobUnknown(message) if what == "blob" else ManifestUnknown(message)
    cls = _BY_CODE.get(exc.code, UpstreamUnavailable)
    return cls(message, code="UpstreamUnavailable" if exc.code == "Invalid" else exc.code)


@dataclass(frozen=True)
class CachedManifest:
    digest: str
    media_type: str
    payload: bytes
    record_id: int | None = None  # the stored manifest's row (None: pending)
    fresh: bool = False  # just fetched, and pending: its blobs are worth a prefetch


@dataclass
class BlobFetch:
    """An upstream blob being fetched for a client: ``size`` for the headers, then iterate ``pieces``."""

    digest: str
    size: int
    pieces: Iterator[bytes]
    close: Callable[[], None]


Authorize = Callable[[str], None]  # raises AccessDenied for an ECR action on the repository


class PullThroughCache:
    def __init__(self, registry: Registry, secrets: SecretStore) -> None:
        self.registry = registry
        self.ctx = registry.ctx
        self.rules = Rules(self.ctx)
        self.secrets = secrets
        self._rules: dict[str, tuple[int, list[Rule]]] = {}  # account → (generation, rules)
        self._clients = UpstreamClients()  # per rule, for its secret's version; replaced ones closed when idle
        self._checked: dict[tuple[int, str], float] = {}  # (repository id, tag) → last upstream check
        self._fresh: dict[tuple[str, str, str], tuple[float, str]] = {}  # (account, name, tag) → (checked, digest)
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="pull-through-store")
        self._live: dict[tuple[str, str, str], LiveFetch] = {}  # (account, repository, digest) → fetch under way
        self._changed = threading.Condition()
        self._unsettled: dict[tuple[str, str], int] = {}  # (account, repository) → blobs becoming visible
        self._prefetch_slots = threading.BoundedSemaphore(PREFETCH_SLOTS)
        self._unstorable: dict[tuple[int, str], str] = {}  # (repository id, pending digest) → why its store failed

    # --- rules ----------------------------------------------------------------------------------------------------

    def rule_cached(self, ref: RepoRef) -> tuple[bool, Rule | None]:
        """(known, the rule covering ``ref``) from this process's cache, for the event loop (not known: ask
        ``rule_for`` on a thread)."""
        entry = self._rules.get(ref.account_id)
        if entry is None or entry[0] != self.ctx.generation.current():
            return False, None
        return True, _best(entry[1], ref.name)

    def rule_for(self, ref: RepoRef) -> Rule | None:
        generation = self.ctx.generation.current()
        entry = self._rules.get(ref.account_id)
        if entry is None or entry[0] != generation:
            before = entry[1] if entry is not None else []
            rules, _ = self.rules.page(ref.account_id, None, limit=1000)
            entry = (generation, rules)
            self._rules[ref.account_id] = entry
            gone = [_slot_version(rule) for rule in set(before) - set(rules)]
            self._retire_stale(ref.account_id, rules, gone=gone, current=[_slot_version(rule) for rule in rules])
        return _best(entry[1], ref.name)

    def delete_rule(self, account_id: str, prefix: str) -> Rule:
        """DeletePullThroughCacheRule: its upstream client goes with it (once pulls still using it end); other
        processes retire theirs at their next look at the account's rules."""
        rule = self.rules.delete(account_id, prefix)
        self._clients.retire(lambda slot, _version: slot == (account_id, prefix), [_slot_version(rule)])
        return rule

    def update_rule(self, account_id: str, prefix: str, credential_arn: str | None, now: float) -> Rule:
        """UpdatePullThroughCacheRule: the client of the former secret goes as a deleted rule's does."""
        rule = self.rules.update_credentials(account_id, prefix, credential_arn, now)
        former = (rule.account_id, rule.prefix), (rule.created_at, rule.version - 1)  # (each update adds one)
        self._retire_stale(account_id, [rule], only=prefix, gone=[former])
        return rule

    def _retire_stale(
        self,
        account_id: str,
        rules: list[Rule],
        only: str | None = None,
        gone: list[RuleVersion] | None = None,
        current: list[RuleVersion] | None = None,
    ) -> None:
        """Retire this process's clients of ``account_id`` built for a rule that is gone, or for another upstream
        or secret than the rule now names (``only``: that prefix's alone); ``gone``: the versions of rules pulls may
        still hold, deleted or changed since (``_slot_version``): a client leased for one closes with its pull;
        ``current``: the versions of the rules now, all of them read."""
        named = {rule.prefix: _client_of(rule) for rule in rules}
        self._clients.retire(
            lambda slot, version: slot[0] == account_id
            and (only is None or slot[1] == only)
            and named.get(slot[1]) != version[:2],
            gone or (),
            current or (),
        )

    # --- upstream access ------------------------------------------------------------------------------------------

    def credentials(self, rule: Rule) -> tuple[Credentials | None, str]:
        if not rule.credential_arn:
            return None, ""
        try:
            _, version, value = self.secrets.value(rule.account_id, rule.credential_arn)
        except SecretNotFound:
            raise CredentialsUnusable(
                f"The secret {rule.credential_arn} of pull-through cache rule '{rule.prefix}' does not exist",
                code="SecretNotFound",
            ) from None
        except SecretInvalidRequest:
            raise CredentialsUnusable(
                f"The secret {rule.credential_arn} of pull-through cache rule '{rule.prefix}' is scheduled for "
                "deletion",
                code="UnableToAccessSecret",
            ) from None
        except SecretDecryptionFailure:
            raise CredentialsUnusable(
                f"The secret {rule.credential_arn} cannot be decrypted with this Soko's master key",
                code="UnableToDecryptSecretValue",
            ) from None
        try:
            document = json.loads(value.string or "")
            username, token = document["username"], document["accessToken"]
            if not isinstance(username, str) or not isinstance(token, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise CredentialsUnusable(
                f"The secret {rule.credential_arn} is not a JSON object with string fields username and accessToken",
                code="UnableToAccessSecret",
            ) from None
        return Credentials(username, token), version

    def lease(self, rule: Rule) -> tuple[RegistryClient, Callable[[], None]]:
        """The rule's upstream client for its secret's current version, and its release (call it when done: a
        client replaced after the secret changed closes once its last pull lets go)."""
        credentials, version = self.credentials(rule)
        timeout = self.ctx.settings.pull_through_timeout
        return self._clients.lease(
            (rule.account_id, rule.prefix),
            (*_client_of(rule), version),
            lambda: RegistryClient(rule.base_url, credentials, timeout=timeout),
            _rule_version(rule),
        )

    @contextlib.contextmanager
    def _upstream(self, rule: Rule) -> Iterator[RegistryClient]:
        client, release = self.lease(rule)
        try:
            yield client
        finally:
            release()

    def close(self) -> None:
        self._clients.close()
        self._pool.shutdown(wait=True)

    def validate(self, rule: Rule) -> str | None:
        """ValidatePullThroughCacheRule: None when the upstream answers /v2/ with the rule's credentials, else why."""
        try:
            with self._upstream(rule) as client:
                client.ping()
        except CredentialsUnusable as exc:
            return f"{exc.code}: {exc.message}"
        except UpstreamError as exc:
            return f"{'UpstreamUnavailable' if exc.code == 'Invalid' else exc.code}: {exc.message}"
        return None

    # --- manifests ------------------------------------------------------------------------------------------------

    def cached_manifest(self, ref: RepoRef, reference: str, *, record_pull: bool) -> CachedManifest | None:
        """What an event loop may ask: the stored manifest from this process's caches when no upstream check is
        due (a digest, or a tag checked within ``pull_through_recheck`` by this process); else None."""
        fresh = None
        if not is_digest(reference):
            fresh = self._fresh.get((ref.account_id, ref.name, reference))
            if fresh is None or self.ctx.clock() - fresh[0] >= self.ctx.settings.pull_through_recheck:
                return None
        record = self.registry.manifests.cached(ref, reference, record_pull=record_pull)
        if record is None or (fresh is not None and record.digest != fresh[1]):
            return None
        return CachedManifest(record.digest, record.media_type, record.payload, record.id)

    def manifest(
        self, ref: RepoRef, rule: Rule, reference: str, authorize: Authorize, *, record_pull: bool
    ) -> CachedManifest:
        manifests = self.registry.manifests
        local: CachedManifest | None = None
        try:
            record = manifests.get(ref, reference, record_pull=record_pull)
            local = CachedManifest(record.digest, record.media_type, record.payload, record.id)
        except (ManifestUnknown, RepositoryNotFound):
            local = self._pending(ref, reference)
        if is_digest(reference):
            if local is not None:
                return local
            return self._prefetched(ref, rule, self._fetch_manifest(ref, rule, reference, None, authorize))
        now = self.ctx.clock()
        if local is not None and local.record_id is not None and self._immutable(ref, reference):
            # an immutable tag the cache holds stays: a new image under it upstream could not be stored anyway
            self._remember(ref, reference, now, local.digest)
            return local
        checked = self._checked_at(ref, reference)
        if local is not None and checked is not None and now - checked < self.ctx.settings.pull_through_recheck:
            if local.record_id is not None:
                self._remember(ref, reference, checked, local.digest)
            return local
        try:
            fetched = self._fetch_manifest(ref, rule, reference, local, authorize)
        except AccessDenied:
            if local is None:
                raise
            return local  # a caller who may read but not import gets what is cached (the check waits for another)
        except (UpstreamFailed, CredentialsUnusable, ManifestUnknown, TagImmutable) as exc:
            if local is None:
                raise
            log.warning("serving %s:%s from the cache: the upstream check failed (%s)", ref.name, reference, exc)
            return local
        self._mark_checked(ref, reference, fetched.digest, now)
        return self._prefetched(ref, rule, fetched)

    def _immutable(self, ref: RepoRef, tag: str) -> bool:
        repo = self.registry.repositories.get(ref)
        return tag_is_immutable(tag, repo.tag_mutability, repo.tag_mutability_filters)

    def _prefetched(self, ref: RepoRef, rule: Rule, fetched: CachedManifest) -> CachedManifest:
        """``fetched``, its blobs' prefetch started (last: the manifest's own writes go first)."""
        if fetched.fresh and fetched.media_type not in mt.INDEXES:
            self.prefetch(ref, rule, fetched.payload)
        return fetched

    def _remember(self, ref: RepoRef, tag: str, checked: float, digest: str) -> None:
        if len(self._fresh) > 100_000:
            self._fresh.clear()
        self._fresh[(ref.account_id, ref.name, tag)] = (checked, digest)

    def _fetch_manifest(
        self, ref: RepoRef, rule: Rule, reference: str, local: CachedManifest | None, authorize: Authorize
    ) -> CachedManifest:
        exists = self._repository_id(ref) is not None
        authorize("ecr:BatchImportUpstreamImage")
        if not exists:
            authorize("ecr:CreateRepository")
        upstream = rule.upstream_name(ref.name)
        tag = None if is_digest(reference) else reference
        try:
            try:
                with self._upstream(rule) as client:
                    if local is not None:  # a HEAD says whether the tag moved, without the manifest's bytes
                        head = client.manifest_head(upstream, reference)
                        if head.digest == local.digest:
                            return local
                    fetched = client.manifest(upstream, reference)
            except UpstreamError as exc:
                raise upstream_failed(rule, exc) from None
            if fetched.media_type not in mt.SUPPORTED:
                raise UpstreamUnavailable(
                    f"the upstream's {upstream}:{reference} is a {fetched.media_type[:100]}, which this registry "
                    "does not store (OCI and Docker v2 manifests and indexes only)",
                    code="UpstreamUnavailable",
                )
            event = self._sync_event(ref, rule, tag, fetched.digest)
            try:
                # checked before it goes pending (an image is put only once its blobs are in): what the cache
                # cannot store is the upstream's failure (503, as every other), not the client's 400
                parse_manifest(fetched.payload, fetched.media_type)
                stored = self._store(ref, tag, fetched.digest, fetched.media_type, fetched.payload, event)
            except ManifestInvalid as exc:
                raise UpstreamUnavailable(
                    f"the upstream's {upstream}:{reference} is not a valid manifest: {exc.message}",
                    code="UpstreamUnavailable",
                ) from None
        except (UpstreamFailed, CredentialsUnusable) as exc:
            failure = exc.code if isinstance(exc, UpstreamFailed) else "UpstreamAccessDenied"
            with self.ctx.transaction() as tx:
                tx.emit(self._sync_event(ref, rule, tag, None if tag else reference, failure, exc.message))
            raise
        return CachedManifest(fetched.digest, fetched.media_type, fetched.payload, fresh=not stored)

    def _sync_event(
        self,
        ref: RepoRef,
        rule: Rule,
        tag: str | None,
        digest: str | None,
        failure_code: str | None = None,
        failure_reason: str | None = None,
    ) -> Event:
        """ECR's "ECR Pull Through Cache Action": an image fetched from the upstream, or a fetch that failed."""
        return events.pull_through_cache_action(
            ref.account_id,
            self.ctx.settings.region,
            ref.name,
            prefix=rule.prefix,
            rule_version=rule.version,
            upstream_url=rule.upstream_registry_url,
            digest=digest,
            tag=tag,
            failure_code=failure_code,
            failure_reason=failure_reason,
        )

    def _store(self, ref: RepoRef, tag: str | None, digest: str, media_type: str, payload: bytes, event: Event) -> bool:
        """Store a verified upstream manifest (True), or keep it pending until its blobs (children) are cached;
        ``event`` (the sync's) is emitted with it."""
        with self.ctx.transaction(invalidates=True) as tx:
            repo_id = self.registry.repositories.id_for_pull_through(tx, ref)
        if media_type not in mt.INDEXES:
            # an image whose blobs are not all here (a first pull, usually) goes pending without a put that would
            # fail: it still takes the write lock. Blobs another repository of the account holds are linked first.
            for blob in _blob_digests(_descriptors(payload)):
                self._link_stored(ref, blob)
            if not self._blobs_linked(repo_id, payload):
                self._pend(repo_id, tag, digest, media_type, payload, event)
                return False
        try:
            self.registry.manifests.put(ref, tag or digest, payload, media_type, sign=False)
            self._emit(event)
            return True
        except ManifestBlobUnknown as exc:
            # blobs another repository of the account holds (the same layers cached under another prefix) are
            # linked at once, as a mount would
            if all([self._link_stored(ref, missing) for missing in exc.digests]):
                try:
                    self.registry.manifests.put(ref, tag or digest, payload, media_type, sign=False)
                    self._emit(event)
                    return True
                except (ManifestBlobUnknown, ReferencedManifestUnknown):
                    pass
        except ReferencedManifestUnknown:
            pass
        self._pend(repo_id, tag, digest, media_type, payload, event)
        return False

    def _pend(self, repo_id: int, tag: str | None, digest: str, media_type: str, payload: bytes, event: Event) -> None:
        """Keep a manifest pending until its blobs (children) are cached; the fill job fetches what no client does."""
        with self.ctx.db.read() as conn:
            space = self.registry.repositories.keyspace(conn, repo_id)
        # a KMS repository's: sealed under its key, got before the transaction (KMS calls)
        sealer = self.registry.encryption.row_sealer(space) if space is not None else None
        now = self.ctx.clock()
        with self.ctx.transaction(invalidates=True) as tx:
            conn = tx.conn
            tx.emit(event)
            # an upsert: concurrent first pulls of one image (other nodes, other threads) each pend it, and a
            # delete-then-insert let two of them delete nothing and the second insert fail the primary key
            conn.execute(
                self.ctx.db.upsert(
                    pull_through_pending,
                    ["repository_id", "digest"],
                    {"tag": None, "media_type": None, "payload": None, "created_at": None},
                ).values(
                    repository_id=repo_id,
                    digest=digest,
                    tag=tag,
                    media_type=media_type,
                    payload=self.registry.encryption.seal_row(payload, digest, sealer),  # sealed as manifests are
                    created_at=now,
                )
            )
            key = f"{repo_id}:{digest}"
            conn.execute(self.ctx.db.insert_ignore(jobs).values(kind=FILL_JOB, key=key, next_run=now + FILL_DELAY))

    def _emit(self, event: Event) -> None:
        with self.ctx.transaction() as tx:
            tx.emit(event)

    def _pending(self, ref: RepoRef, reference: str) -> CachedManifest | None:
        column = pull_through_pending.c.digest if is_digest(reference) else pull_through_pending.c.tag
        with self.ctx.db.read() as conn:
            row = conn.execute(
                sa.select(
                    pull_through_pending.c.digest,
                    pull_through_pending.c.media_type,
                    pull_through_pending.c.payload,
                    repos.c.encryption_type,
                    repos.c.kms_key,
                )
                .join(repos, repos.c.id == pull_through_pending.c.repository_id)
                .where(repos.c.account_id == ref.account_id, repos.c.name == ref.name, column == reference)
                .order_by(pull_through_pending.c.created_at.desc())
            ).first()
        if row is None:
            return None
        space = keyspace_of(row.encryption_type, row.kms_key, ref.account_id)
        payload = self.registry.encryption.open_row(row.payload, row.digest, space)
        return CachedManifest(row.digest, row.media_type, payload)

    def _repository_id(self, ref: RepoRef) -> int | None:
        with self.ctx.db.read() as conn:
            return conn.execute(
                sa.select(repos.c.id).where(repos.c.account_id == ref.account_id, repos.c.name == ref.name)
            ).scalar()

    def _checked_at(self, ref: RepoRef, tag: str) -> float | None:
        repo_id = self._repository_id(ref)
        if repo_id is None:
            return None
        key = (repo_id, tag)
        if key in self._checked:
            return self._checked[key]
        with self.ctx.db.read() as conn:
            when = conn.execute(
                sa.select(pull_through_tags.c.checked_at).where(
                    pull_through_tags.c.repository_id == repo_id, pull_through_tags.c.tag == tag
                )
            ).scalar()
        if when is not None:
            self._checked[key] = when
        return when

    def _mark_checked(self, ref: RepoRef, tag: str, digest: str, now: float) -> None:
        repo_id = self._repository_id(ref)
        if repo_id is None:
            return
        with self.ctx.db.write() as conn:  # an upsert: concurrent pulls of the tag each record their check
            conn.execute(
                self.ctx.db.upsert(
                    pull_through_tags, ["repository_id", "tag"], {"digest": None, "checked_at": None}
                ).values(repository_id=repo_id, tag=tag, digest=digest, checked_at=now)
            )
        if len(self._checked) > 100_000:
            self._checked.clear()
        self._checked[(repo_id, tag)] = now
        self._remember(ref, tag, now, digest)  # the next pulls within the recheck interval stay on the event loop

    def promote(self, ref: RepoRef) -> int:
        """Store the repository's pending manifests whose blobs (children) are all cached now; how many were."""
        repo_id = self._repository_id(ref)
        if repo_id is None:
            return 0
        with self.ctx.db.read() as conn:
            rows = conn.execute(
                sa.select(pull_through_pending).where(pull_through_pending.c.repository_id == repo_id)
            ).all()
            space = self.registry.repositories.keyspace(conn, repo_id)
        stored = 0
        # images before indexes: an index can only be stored once its children are
        for row in sorted(rows, key=lambda r: r.media_type in mt.INDEXES):
            payload = self.registry.encryption.open_row(row.payload, row.digest, space)
            if row.media_type not in mt.INDEXES and not self._blobs_linked(repo_id, payload):
                continue  # (a read: a put that would fail still takes the write lock)
            try:
                try:
                    self.registry.manifests.put(ref, row.tag or row.digest, payload, row.media_type, sign=False)
                except TagImmutable:  # the tag holds another image for good: this one is stored by its digest
                    self.registry.manifests.put(ref, row.digest, payload, row.media_type, sign=False)
            except (ManifestBlobUnknown, ReferencedManifestUnknown):
                continue
            except SokoError as exc:  # this one cannot be stored (over a quota, invalid): the others still can
                # (warned once per reason: promote runs after every blob fetch of the repository; the fill job
                # gives the image up after FILL_ATTEMPTS)
                if self._unstorable.get((repo_id, row.digest)) != exc.message:
                    log.warning("pending manifest %s of %s cannot be stored: %s", row.digest, ref.name, exc)
                if len(self._unstorable) > 10_000:
                    self._unstorable.clear()
                self._unstorable[(repo_id, row.digest)] = exc.message
                continue
            self._unstorable.pop((repo_id, row.digest), None)
            with self.ctx.write(invalidates=True) as conn:
                conn.execute(
                    sa.delete(pull_through_pending).where(
                        pull_through_pending.c.repository_id == repo_id, pull_through_pending.c.digest == row.digest
                    )
                )
                conn.execute(sa.delete(jobs).where(jobs.c.kind == FILL_JOB, jobs.c.key == f"{repo_id}:{row.digest}"))
            stored += 1
        return stored

    def _blobs_linked(self, repo_id: int, payload: bytes) -> bool:
        """Whether the repository holds every blob an image manifest names."""
        wanted = set(_blob_digests(_descriptors(payload)))
        with self.ctx.db.read() as conn:
            held = conn.execute(
                sa.select(sa.func.count())
                .select_from(repository_blobs)
                .where(repository_blobs.c.repository_id == repo_id, repository_blobs.c.digest.in_(wanted))
            ).scalar_one()
        return held == len(wanted)

    @contextlib.contextmanager
    def _settling(self, ref: RepoRef) -> Iterator[None]:
        """A blob of ``ref`` becomes visible and its pending images are stored meanwhile: a pull that finds the
        blob stored in between waits (``wait_settled``), so a client done with its pull finds the image even when
        a prefetch, not its own request, fetched the blob."""
        key = (ref.account_id, ref.name)
        with self._changed:
            self._unsettled[key] = self._unsettled.get(key, 0) + 1
        try:
            yield
        finally:
            with self._changed:
                left = self._unsettled.pop(key) - 1
                if left:
                    self._unsettled[key] = left
                self._changed.notify_all()

    def unsettled(self, ref: RepoRef) -> bool:
        """(event loop) Whether a blob of ``ref`` is being made visible in this process right now."""
        return (ref.account_id, ref.name) in self._unsettled

    def wait_settled(self, ref: RepoRef, timeout: float = 30.0) -> None:
        key = (ref.account_id, ref.name)
        with self._changed:
            self._changed.wait_for(lambda: key not in self._unsettled, timeout)

    def _promote_quietly(self, ref: RepoRef) -> None:
        """``promote`` after a blob came in; a failure leaves the manifests pending for the fill job."""
        try:
            self.promote(ref)
        except Exception:
            log.exception("could not store the pending manifests of %s (the fill job retries)", ref.name)

    # --- blobs ----------------------------------------------------------------------------------------------------

    def blob(
        self, ref: RepoRef, rule: Rule, digest: str, authorize: Authorize, *, refetch: bool = True
    ) -> BlobContent | BlobFetch:
        """The stored blob, or a fetch from the upstream to stream (the caller iterates it to the end or closes
        it). Waits while another process fetches the same blob, then serves what it stored. ``refetch``: a fetch
        this pull joins that fails before sending it anything is retried once for it (``_joined``)."""
        Digest.parse(digest)
        deadline = None
        linkable: bool | None = None
        while True:
            try:
                return self.registry.blobs.open(ref, digest)
            except (BlobUnknown, RepositoryNotFound):
                pass
            if linkable is None:
                # Only a blob an image of this repository names (the upstream vouched for it) is linked from
                # another repository: any other digest would read a repository the caller may not, with no check.
                try:
                    linkable = self.references(ref, digest)
                except RepositoryNotFound:  # (created below, on the first fetch)
                    linkable = False
            if linkable and self._link_stored(ref, digest):
                self._promote_quietly(ref)
                continue
            if deadline is None:
                exists = self._repository_id(ref) is not None
                authorize("ecr:BatchImportUpstreamImage")
                if not exists:
                    authorize("ecr:CreateRepository")
                    with self.ctx.transaction(invalidates=True) as tx:
                        self.registry.repositories.id_for_pull_through(tx, ref)
                deadline = time.monotonic() + 3600
            live = self._live.get((ref.account_id, ref.name, digest))
            if live is not None:  # this process is fetching it (for another pull, or a prefetch): follow that
                follower = live.follow()
                if follower is not None:
                    if not refetch:
                        return BlobFetch(digest, live.size, follower, follower.close)
                    joined = self._joined(ref, rule, digest, authorize, live.size, follower)
                    return BlobFetch(digest, live.size, joined, joined.close)
            else:
                owner = self._claim(ref, digest)
                if owner is not None:
                    stored = self._stored_meanwhile(ref, digest, owner, link=linkable)
                    if stored is not None:
                        return stored
                    live = self._start(ref, rule, digest, owner)
                    follower = live.follow(starter=True)
                    if follower is not None:
                        return BlobFetch(digest, live.size, follower, follower.close)
            if time.monotonic() > deadline:
                raise UpstreamUnavailable(
                    f"blob {digest} is still being fetched by another pull", code="UpstreamUnavailable"
                )
            with self._changed:  # woken when a fetch of this process starts or ends; others are polled
                self._changed.wait(WAIT_STEP)

    def _joined(
        self,
        ref: RepoRef,
        rule: Rule,
        digest: str,
        authorize: Authorize,
        size: int,
        follower: Generator[bytes, None, None],
    ) -> Generator[bytes, None, None]:
        """The pieces of a fetch this pull joined (a prefetch, another pull's). When the upstream failed it before
        any piece reached this pull, the pull fetches the blob again for itself, once: the fetch it joined may have
        started while the upstream was failing (a prefetch from the manifest's pull), and this pull, still whole,
        need not inherit that failure. A pull that got pieces already ends with the error, as a cut would."""
        sent = False
        try:
            for piece in follower:
                sent = True
                yield piece
            return
        except UpstreamFailed as exc:
            if sent:
                raise
            log.info("the fetch of %s that a pull of %s joined failed (%s): fetching it again", digest, ref.name, exc)
        finally:
            follower.close()
        again = self.blob(ref, rule, digest, authorize, refetch=False)
        if again.size != size:  # (the headers promised the first fetch's length)
            if isinstance(again, BlobFetch):
                again.close()
            raise UpstreamUnavailable(
                f"the upstream sent blob {digest} with {size} bytes, then {again.size}", code="UpstreamUnavailable"
            )
        if isinstance(again, BlobFetch):
            try:
                yield from again.pieces
            finally:
                again.close()
            return
        reader = self.registry.blobs.reader(again)  # stored meanwhile (verified): read as any pull of it
        try:
            while piece := reader.read(LIVE_PIECE):
                yield piece
        finally:
            reader.close()

    def _stored_meanwhile(self, ref: RepoRef, digest: str, owner: str, *, link: bool = True) -> BlobContent | None:
        """Under our claim: a fetch that ended between our look and our claim stored it already? Then the claim
        goes and that is served. ``link``: from another repository of the account (only a blob the repository's
        images name)."""
        try:
            if link and self._link_stored(ref, digest):
                self._promote_quietly(ref)
            stored = self.registry.blobs.open(ref, digest)
        except (BlobUnknown, RepositoryNotFound):
            return None
        except BaseException:
            self._release(digest, owner)
            raise
        self._release(digest, owner)
        return stored

    def _start(
        self, ref: RepoRef, rule: Rule, digest: str, owner: str, ended: Callable[[], None] | None = None
    ) -> LiveFetch:
        """Open the upstream blob under our claim and pump it into the cache on a thread of its own, for pulls
        to follow (``soko.pullthrough.live``). ``ended``: called when the pump is done (not when this raises)."""
        fetch = self._fetch_blob(ref, rule, digest, owner)
        live = LiveFetch(digest, fetch.size, fetch.pieces, fetch.close, window=LIVE_WINDOW, patience=LIVE_PATIENCE)
        key = (ref.account_id, ref.name, digest)

        def finished(done: LiveFetch, pumped: bool = True) -> None:
            with self._changed:
                if self._live.get(key) is done:
                    del self._live[key]
                self._changed.notify_all()
            if ended is not None and pumped:
                ended()

        with self._changed:
            self._live[key] = live
            self._changed.notify_all()
        try:
            threading.Thread(target=live.pump, args=(finished,), name="pull-through-fetch", daemon=True).start()
        except BaseException:
            fetch.close()
            finished(live, pumped=False)
            raise
        return live

    def prefetch(self, ref: RepoRef, rule: Rule, payload: bytes) -> None:
        """Start fetching an image's blobs the cache lacks, side by side, as soon as its manifest came in: a client
        that pulls them one after the other then follows fetches under way (or finds them stored) instead of
        waiting for each in turn. At most PREFETCH_SLOTS at once per process; the rest come when pulled (or with
        the fill job). Its thread starts holding a slot: none starts while every slot is taken."""
        digests = [d for d in dict.fromkeys(_blob_digests(_descriptors(payload))) if not self._fetching(ref, d)]
        if not digests or not self._prefetch_slots.acquire(blocking=False):
            return
        try:
            threading.Thread(
                target=self._prefetch, args=(ref, rule, digests), name="pull-through-prefetch", daemon=True
            ).start()
        except BaseException:
            self._prefetch_slots.release()
            raise

    def _fetching(self, ref: RepoRef, digest: str) -> bool:
        return (ref.account_id, ref.name, digest) in self._live

    def _prefetch(self, ref: RepoRef, rule: Rule, digests: list[str]) -> None:
        """(holding the slot ``prefetch`` took) Each blob not under way takes a slot, until none is free; a slot a
        blob did not need goes to the next one, the last is given back."""
        held = True
        try:
            for digest in digests:
                if self._fetching(ref, digest):
                    continue
                if not held and not self._prefetch_slots.acquire(blocking=False):
                    return
                held = not self._prefetch_one(ref, rule, digest)
        finally:
            if held:
                self._prefetch_slots.release()

    def _prefetch_one(self, ref: RepoRef, rule: Rule, digest: str) -> bool:
        """Start the fetch of a blob the cache lacks; True when it started (it gives the slot back when it ends)."""
        try:
            try:
                self.registry.blobs.open(ref, digest)
                stored = True
            except (BlobUnknown, RepositoryNotFound):
                stored = self._link_stored(ref, digest)
            owner = None if stored else self._claim(ref, digest)
            if owner is None or self._stored_meanwhile(ref, digest, owner) is not None:
                return False
            self._start(ref, rule, digest, owner, self._prefetch_slots.release)
        except Exception as exc:  # a prefetch is a head start only: the pull itself fetches and reports
            log.info("prefetch of %s for %s did not start: %s", digest, ref.name, exc)
            return False
        return True

    def _link_stored(self, ref: RepoRef, digest: str) -> bool:
        """Link a blob another repository of the account holds (fetched for it, or by a concurrent pull)."""
        with self.ctx.db.read() as conn:
            source = conn.execute(
                sa.select(repos.c.name)
                .join(repository_blobs, repository_blobs.c.repository_id == repos.c.id)
                .where(
                    repos.c.account_id == ref.account_id, repository_blobs.c.digest == digest, repos.c.name != ref.name
                )
                .limit(1)
            ).scalar()
        if source is None:
            return False
        with self.ctx.transaction(invalidates=True) as tx:
            self.registry.repositories.id_for_pull_through(tx, ref)
        return self.registry.blobs.mount(ref, digest, RepoRef(ref.account_id, source)) is not None

    def _claim(self, ref: RepoRef, digest: str) -> str | None:
        """This process's claim on fetching ``digest`` (None: another holds a live one)."""
        owner = process_identity.new_token()
        now = self.ctx.clock()
        repo_id = self._repository_id(ref)
        with self.ctx.db.write() as conn:
            inserted = conn.execute(
                self.ctx.db.insert_ignore(pull_through_fetches).values(
                    digest=digest, owner=owner, heartbeat=now, repository_id=repo_id
                )
            ).rowcount
            if inserted:
                return owner
            holder = conn.execute(
                sa.select(pull_through_fetches.c.owner).where(pull_through_fetches.c.digest == digest)
            ).scalar()
            # a holder that stopped (its heartbeat is old, or it was a process of this node that died) is replaced
            stale = pull_through_fetches.c.heartbeat < now - CLAIM_STALE
            if holder is not None and process_identity.holder_is_dead(holder):
                stale = pull_through_fetches.c.owner == holder
            taken = conn.execute(
                sa.update(pull_through_fetches)
                .where(pull_through_fetches.c.digest == digest, stale)
                .values(owner=owner, heartbeat=now, repository_id=repo_id)
            ).rowcount
        return owner if taken else None

    def _refresh(self, digest: str, owner: str) -> None:
        with self.ctx.db.write() as conn:
            conn.execute(
                sa.update(pull_through_fetches)
                .where(pull_through_fetches.c.digest == digest, pull_through_fetches.c.owner == owner)
                .values(heartbeat=self.ctx.clock())
            )

    def _release(self, digest: str, owner: str) -> None:
        with self.ctx.db.write() as conn:
            conn.execute(
                sa.delete(pull_through_fetches).where(
                    pull_through_fetches.c.digest == digest, pull_through_fetches.c.owner == owner
                )
            )

    def references(self, ref: RepoRef, digest: str) -> bool:
        """Whether an image of the repository the cache knows (stored, or pending its blobs) names blob ``digest``
        — what GetDownloadUrlForLayer may fetch for it."""
        return self.registry.images.blob_in_use(ref, digest) or self._pending_descriptor(ref, digest) is not None

    def _expected_size(self, ref: RepoRef, digest: str) -> int | None:
        """The blob's size as a manifest of the repository (stored or pending) describes it."""
        with self.ctx.db.read() as conn:
            known = conn.execute(sa.select(blobs.c.size).where(blobs.c.digest == digest)).scalar()
        if known is not None:
            return int(known)
        descriptor = self._pending_descriptor(ref, digest)
        size = descriptor.get("size") if descriptor else None
        return size if isinstance(size, int) else None

    def _pending_descriptor(self, ref: RepoRef, digest: str) -> dict | None:
        """The descriptor of blob ``digest`` in a manifest of the repository pending its blobs."""
        with self.ctx.db.read() as conn:
            pending = conn.execute(
                sa.select(
                    pull_through_pending.c.digest,
                    pull_through_pending.c.payload,
                    repos.c.encryption_type,
                    repos.c.kms_key,
                )
                .join(repos, repos.c.id == pull_through_pending.c.repository_id)
                .where(repos.c.account_id == ref.account_id, repos.c.name == ref.name)
            ).all()
        for row in pending:
            space = keyspace_of(row.encryption_type, row.kms_key, ref.account_id)
            for descriptor in _descriptors(self.registry.encryption.open_row(row.payload, row.digest, space)):
                if descriptor.get("digest") == digest:
                    return descriptor
        return None

    def _fetch_blob(self, ref: RepoRef, rule: Rule, digest: str, owner: str) -> BlobFetch:
        uploads = self.registry.uploads
        stream = None
        release_client: Callable[[], None] | None = None
        try:
            limit = self.registry.repositories.quotas.get(ref.account_id, "max_image_size")
            client, release_client = self.lease(rule)  # held until the stream is done: pieces' end, or close()
            try:
                # the upload's own running hash verifies the bytes (Uploads.complete) before the last piece goes
                stream = client.blob(
                    rule.upstream_name(ref.name),
                    digest,
                    size=self._expected_size(ref, digest),
                    limit=limit,
                    verify=False,
                )
            except UpstreamError as exc:
                raise upstream_failed(rule, exc, "blob") from None
            if stream.size is None:
                raise UpstreamUnavailable(
                    f"the upstream sent blob {digest} without a length", code="UpstreamUnavailable"
                )
            size = stream.size
            uploads.check_size(ref, 0, size)  # over the image size quota: refused before the client's 200
        except BaseException:
            if stream is not None:  # an open response holds one of the rule's pooled connections
                stream.close()
            if release_client is not None:
                release_client()
            self._release(digest, owner)
            raise
        release_stream = release_client

        def open_upload() -> tuple[str, ChunkWriter]:
            state = uploads.start(ref)
            try:
                return state.id, uploads.begin_chunk(ref, state.id, 0, size)
            except BaseException:
                uploads.cancel(ref, state.id)
                raise

        # The upload session opens (a few database writes) while the first pieces already go to the client: they
        # are stored once it is open, in order, before the last piece goes.
        upload = self._pool.submit(open_upload)
        finished = ended = False

        def store(piece: bytes) -> None:
            writer = upload.result()[1]
            writer.store((piece,))
            writer.keep((piece,))  # the plaintext cache's copy (verified by the hash lane's digest at completion)

        def hash_(piece: bytes) -> None:
            upload.result()[1].digest((piece,))

        def pieces() -> Generator[bytes, None, None]:
            nonlocal finished
            beat = time.monotonic()
            held: bytes | None = None
            # Each piece is stored and hashed on two threads of this fetch, in order, up to BACKLOG pieces behind
            # (file writes, sealing and hashlib release the GIL), while this thread receives the next and the one
            # before goes to the client: the client's bytes never wait for storage (nor for the upload session to
            # open), only the last piece waits for the whole blob to be stored, verified and committed.
            lanes = [_Lane(store, BACKLOG), _Lane(hash_, BACKLOG)]
            try:
                for piece in stream:
                    for lane in lanes:
                        lane.put(piece)  # (raises what storing an earlier piece raised)
                    if time.monotonic() - beat > CLAIM_REFRESH:
                        self._refresh(digest, owner)
                        beat = time.monotonic()
                    if held is not None:
                        yield held
                    held = piece
                for lane in lanes:
                    lane.finish()
                upload_id, writer = upload.result()
                # the stream ended verified (digest and size): the last piece may go, the blob may become visible
                writer.finish()
                with self._settling(ref):
                    try:
                        uploads.complete(ref, upload_id, digest, size)
                    except DigestInvalid:
                        raise UpstreamError(
                            "Invalid", f"the upstream's content for blob {digest} does not hash to it"
                        ) from None
                    finished = True
                    self._release(digest, owner)
                    self._promote_quietly(ref)  # before the last piece: a client done with its pull finds the image
                if held is not None:
                    yield held
            except UpstreamError as exc:
                raise upstream_failed(rule, exc, "blob") from None
            finally:
                for lane in lanes:
                    lane.close()  # never abandon the upload under a piece still being written
                end()
                release_stream()

        def end() -> None:
            nonlocal ended
            if not finished and not ended:
                ended = True
                wait([upload])
                if upload.exception() is None:
                    _abandon(self, ref, *upload.result(), digest, owner)
                else:
                    self._release(digest, owner)

        generator = pieces()

        def close() -> None:
            generator.close()  # a generator stopped mid-blob waits for its writes in flight, then abandons
            stream.close()
            end()
            release_stream()  # (a generator closed before its start runs no finally)

        return BlobFetch(digest, size, generator, close)

    # --- the fill job ---------------------------------------------------------------------------------------------

    def fill(self, key: str) -> str | None:
        """Job ``pull_through_fill`` (key ``<repository id>:<digest>``): fetch what a pending manifest still lacks
        (blobs, an index's children), then store it. Raises while something cannot be fetched or stored (retried
        with backoff by the job runner); after FILL_ATTEMPTS failed runs in a row, or at once when the image can
        never be stored as given (a malformed index, indexes nested deeper than FILL_DEPTH), it gives the image
        up: the pending manifest goes (a later pull fetches it again) with a FAILED sync event saying why."""
        with self.ctx.db.read() as conn:
            attempts = conn.execute(
                sa.select(jobs.c.attempts).where(jobs.c.kind == FILL_JOB, jobs.c.key == key)
            ).scalar()
        visited: list[str] = []
        try:
            return self._fill(key, 0, visited)
        except NotStorable as exc:
            return self._give_up(key, visited, exc.message)
        except Exception as exc:
            if (attempts or 0) + 1 < FILL_ATTEMPTS:
                raise
            reason = exc.message if isinstance(exc, SokoError) else f"{type(exc).__name__}: {exc}"
            return self._give_up(key, visited, f"not cached whole after {FILL_ATTEMPTS} attempts: {reason}")

    def _fill(self, key: str, depth: int, visited: list[str]) -> str | None:
        repo_id_text, _, digest = key.partition(":")
        repo_id = int(repo_id_text)
        with self.ctx.db.read() as conn:
            row = conn.execute(
                sa.select(
                    pull_through_pending, repos.c.account_id, repos.c.name, repos.c.encryption_type, repos.c.kms_key
                )
                .join(repos, repos.c.id == pull_through_pending.c.repository_id)
                .where(pull_through_pending.c.repository_id == repo_id, pull_through_pending.c.digest == digest)
            ).first()
        if row is None:
            return None
        visited.append(digest)
        ref = RepoRef(row.account_id, row.name)
        rule = self.rule_for(ref)
        if rule is None:
            return f"{ref.name}: no pull-through cache rule covers it any more; {digest} stays pending"
        space = keyspace_of(row.encryption_type, row.kms_key, row.account_id)
        try:
            document = json.loads(self.registry.encryption.open_row(row.payload, row.digest, space))
        except ValueError:
            raise NotStorable(f"{digest} is not JSON") from None
        if not isinstance(document, dict):
            raise NotStorable(f"{digest} is not a JSON object")

        def allowed(_action: str) -> None:
            return None  # the pull that made it pending was authorized to import

        if row.media_type in mt.INDEXES:
            if depth >= FILL_DEPTH:
                raise NotStorable(f"{digest} nests indexes deeper than {FILL_DEPTH} levels")
            children = document.get("manifests") or []
            if not isinstance(children, list) or not all(
                isinstance(c, dict) and is_digest(str(c.get("digest"))) for c in children
            ):
                raise NotStorable(f"index {digest} has a child without a valid digest")
            for child in children:
                self.manifest(ref, rule, child["digest"], allowed, record_pull=False)
                self._fill(f"{repo_id}:{child['digest']}", depth + 1, visited)
        for blob in _blob_digests(_descriptors_in(document)):
            fetched = self.blob(ref, rule, blob, allowed)
            if isinstance(fetched, BlobFetch):
                try:
                    for _ in fetched.pieces:
                        pass
                finally:
                    fetched.close()
        self.promote(ref)
        if self._pending(ref, digest) is not None:
            why = self._unstorable.get((repo_id, digest))
            if why is not None:
                raise StoreFailed(f"{ref.name}@{digest} cannot be stored: {why}")
            raise UpstreamUnavailable(f"{ref.name}@{digest} is not cached whole yet", code="UpstreamUnavailable")
        return f"{ref.name}@{digest}: cached"

    def _give_up(self, key: str, visited: list[str], reason: str) -> str:
        """Drop a pending image (and the pending children this fill met) with its fill jobs; a FAILED sync event
        records why."""
        repo_id_text, _, digest = key.partition(":")
        repo_id = int(repo_id_text)
        digests = list(dict.fromkeys([digest, *visited]))
        with self.ctx.db.read() as conn:
            name = conn.execute(sa.select(repos.c.account_id, repos.c.name).where(repos.c.id == repo_id)).first()
            tag = conn.execute(
                sa.select(pull_through_pending.c.tag).where(
                    pull_through_pending.c.repository_id == repo_id, pull_through_pending.c.digest == digest
                )
            ).scalar()
        ref = RepoRef(name.account_id, name.name) if name is not None else None
        rule = self.rule_for(ref) if ref is not None else None
        with self.ctx.transaction(invalidates=True) as tx:
            tx.conn.execute(
                sa.delete(pull_through_pending).where(
                    pull_through_pending.c.repository_id == repo_id, pull_through_pending.c.digest.in_(digests)
                )
            )
            tx.conn.execute(
                sa.delete(jobs).where(jobs.c.kind == FILL_JOB, jobs.c.key.in_([f"{repo_id}:{d}" for d in digests]))
            )
            if ref is not None and rule is not None:
                tx.emit(self._sync_event(ref, rule, tag, digest, "UpstreamUnavailable", f"gave up: {reason}"))
        for each in digests:
            self._unstorable.pop((repo_id, each), None)
        where = f"{ref.name}@{digest}" if ref is not None else key
        log.warning("pull-through cache gave up on %s: %s", where, reason)
        return f"{where}: gave up: {reason}"


def _client_of(rule: Rule) -> tuple[str, str | None]:
    """What a rule's upstream client is built for, besides its secret's version."""
    return rule.base_url, rule.credential_arn


def _rule_version(rule: Rule) -> tuple[float, int]:
    """Which rule of its prefix, and which of its updates, a pull read (``UpstreamClients.lease``)."""
    return rule.created_at, rule.version


RuleVersion = tuple[tuple[str, str], tuple[float, int]]  # (its slot: account, prefix), _rule_version


def _slot_version(rule: Rule) -> RuleVersion:
    return (rule.account_id, rule.prefix), _rule_version(rule)


def _descriptors(payload: bytes) -> list[dict]:
    """An image manifest's config and layer descriptors (none when it is not one, or not JSON)."""
    try:
        return _descriptors_in(json.loads(payload))
    except ValueError:
        return []


def _descriptors_in(document: object) -> list[dict]:
    try:
        found = [document.get("config"), *(document.get("layers") or [])]  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        return []
    return [d for d in found if isinstance(d, dict)]


def _blob_digests(descriptors: list[dict]) -> list[str]:
    """The digests of the descriptors' blobs the cache fetches (valid digests, not non-distributable layers)."""
    return [
        d["digest"]
        for d in descriptors
        if is_digest(str(d.get("digest"))) and d.get("mediaType") not in mt.NON_DISTRIBUTABLE
    ]


class _Lane:
    """``work(piece)`` for each piece put, in order, on a thread of its own, at most ``depth`` pieces behind; the
    first error stops the work and is raised by the next ``put`` or by ``finish``."""

    def __init__(self, work: Callable[[bytes], None], depth: int) -> None:
        self._work = work
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pull-through-lane", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (piece := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._work(piece)
                except BaseException as exc:
                    self._error = exc

    def put(self, piece: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(piece)

    def finish(self) -> None:
        """Wait until every piece put is done; raise the first error."""
        self.close()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


def _abandon(
    cache: PullThroughCache, ref: RepoRef, upload_id: str, writer: ChunkWriter, digest: str, owner: str
) -> None:
    try:
        writer.abort()
        cache.registry.uploads.cancel(ref, upload_id)
    except SokoError:
        pass
    except Exception:
        log.exception("could not cancel the upload of an interrupted fetch of %s", digest)
    finally:
        cache._release(digest, owner)


def _best(rules: list[Rule], name: str) -> Rule | None:
    best: Rule | None = None
    for rule in rules:
        if not rule.matches(name):
            continue
        if best is None or best.prefix == "ROOT" or (rule.prefix != "ROOT" and len(rule.prefix) > len(best.prefix)):
            best = rule
    return best
