"""Replication: copies an image to each destination registry its account's rules name (docs/architecture.md,
"Replication").

A destination in this deployment's region (another account, or none: ECR forbids the source itself) is served by
this deployment, so the copy is the domain's: the destination repository is created as replication creates it
(a REPLICATION creation template, else ECR's defaults), the blobs are linked (stored once per deployment; each
once, those it holds skipped), then the manifests are put in dependency order — an index's children before it,
the image, then its referrers (signatures, SBOMs) and theirs — and the source's tags of the image moved onto it.
A tag that is immutable at the destination and names another image stays there: the image arrives without that
tag, as in ECR. Copies are announced in the destination as ``ECR Replication Action`` events, which are not pushes,
so nothing replicates on (no chaining). Deletes are not replicated.

Cross-account copies need the destination's registry policy to allow the source account ``ecr:ReplicateImage`` on
the repository (and ``ecr:CreateRepository`` when it must be created), decided by the policy engine; without it the
replication FAILS with ``REPLICATION_NOT_AUTHORIZED``. Transient failures are retried by the job framework with
exponential backoff (the status stays IN_PROGRESS, with the last reason); after ``MAX_ATTEMPTS`` failures in a row
the status is FAILED.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import sqlalchemy as sa

from soko.access import repository_arn
from soko.errors import LimitExceeded, ManifestUnknown, RepositoryNotFound, SokoError, TagImmutable
from soko.iam.policy import AuthzRequest, MalformedPolicy, PolicyKind, Principal, evaluate, parse_policy
from soko.kernel.context import DomainContext
from soko.registry import Registry
from soko.registry import media_types as mt
from soko.registry.manifest_format import parse_manifest
from soko.registry.models import RepoRef
from soko.registry.policies import RegistryPolicyNotFound
from soko.remote import UpstreamError
from soko.replication import store
from soko.replication.outbox import OutboxReader
from soko.replication.remote import RemoteRegions, pieces
from soko.replication.rules import Destination, destinations_for
from soko.replication.store import COMPLETE, FAILED, IN_PROGRESS

log = logging.getLogger("soko.replication")
MAX_ATTEMPTS = 12  # failures in a row before a replication is FAILED (the backoff is capped at RETRY_CAP)
RETRY_CAP = 600.0  # seconds: the longest wait between two attempts


class PermanentFailure(SokoError):
    """A replication that retrying cannot help (FAILED at once, with ``code``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Replicator:
    def __init__(self, registry: Registry, *, stopping: Callable[[], bool] = lambda: False) -> None:
        self.registry = registry
        self.ctx: DomainContext = registry.ctx
        self.region = self.ctx.settings.region
        self.stopping = stopping
        self.remote = RemoteRegions(self.ctx.settings.regions, self.region)
        self.outbox = OutboxReader(self.ctx, self.registry.replication.get_with_time)

    def close(self) -> None:
        """Close the clients of the other regions' deployments (logged in for copies there)."""
        self.remote.close()

    def rules(self, account_id: str) -> list[dict]:
        return self.registry.replication.get(account_id)

    # ---- the jobs ---------------------------------------------------------------------------------------------
    def read_outbox(self, _key: str = "") -> str | None:
        count = self.outbox.read()
        return f"requested {count} replication(s)" if count else None

    def run(self, key: str) -> str | None:
        """The ``replication`` job: copy one image to one destination (again while newer requests come in)."""
        while True:
            req = store.get(self.ctx, int(key))
            if req is None:
                return None  # its source repository was deleted
            if req.status != IN_PROGRESS:
                store.complete(self.ctx, req, req.status, req.failure_code)
                return None
            try:
                summary = self.copy(req)
            except PermanentFailure as exc:
                log.warning("replication of %s@%s to %s failed: %s", req.repository, req.digest, req.destination, exc)
                if store.complete(self.ctx, req, FAILED, f"{exc.code}: {exc.message}"[:1000]):
                    return f"FAILED: {exc.code}"
                continue
            except Exception as exc:
                reason = f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
                failed_before = store.note_failure(self.ctx, req, reason)
                if failed_before + 1 >= MAX_ATTEMPTS:
                    store.complete(self.ctx, req, FAILED, f"RETRIES_EXHAUSTED: {reason}"[:1000])
                    return f"FAILED after {MAX_ATTEMPTS} attempts: {reason}"
                raise  # the runner retries after an exponential backoff
            if store.complete(self.ctx, req, COMPLETE, None):
                return summary

    # ---- the copy ---------------------------------------------------------------------------------------------
    def copy(self, req: store.Request) -> str:
        dest = req.destination
        if dest.region != self.region:
            if not self.remote.reachable(dest.region, dest.registry_id):
                raise PermanentFailure(
                    "DESTINATION_UNREACHABLE",
                    f"registry {dest.registry_id} in {dest.region} is not configured (setting regions)",
                )
            return self._copy_remote(req)
        source = RepoRef(req.account_id, req.repository)
        target = RepoRef(dest.registry_id, req.repository)
        if source == target:
            raise PermanentFailure("INVALID_DESTINATION", "the destination is the source registry")
        try:
            manifests, blobs = self._plan(source, req.digest)
            tags = self.registry.images.describe_ids(source, [{"imageDigest": req.digest}])[0].tags
        except (ManifestUnknown, RepositoryNotFound) as exc:
            raise PermanentFailure("IMAGE_NOT_FOUND", f"the source image is gone: {exc.message}") from None
        if req.account_id != dest.registry_id:
            self._check_policy(req.account_id, target)
        source_of = (self.region, req.account_id)
        try:
            linked = self.registry.blobs.replicate(target, source, blobs)
            for digest, payload, media_type in manifests:
                self.registry.manifests.put(target, digest, payload, media_type, replicated_from=source_of)
            skipped = []
            _, payload, media_type = manifests[[m[0] for m in manifests].index(req.digest)]
            for tag in tags:
                try:
                    self.registry.manifests.put(target, tag, payload, media_type, replicated_from=source_of)
                except TagImmutable:
                    skipped.append(tag)  # ECR: the image arrives without a tag that is immutable there
        except LimitExceeded as exc:
            raise PermanentFailure("LIMIT_EXCEEDED", exc.message) from None
        note = f"; immutable tag(s) {', '.join(skipped)} left as they were" if skipped else ""
        return (
            f"replicated {req.repository}@{req.digest} to {dest.region}/{dest.registry_id}: {len(manifests)} "
            f"manifest(s), {linked} of {len(blobs)} blob(s) new{note}"
        )

    def _copy_remote(self, req: store.Request) -> str:
        """Push the image to the other region's deployment: blobs it lacks (streamed from storage), then the
        manifests in dependency order, then the tags. Its registry decides what the key may do."""
        dest = req.destination
        source = RepoRef(req.account_id, req.repository)
        try:
            manifests, blobs = self._plan(source, req.digest)
            tags = self.registry.images.describe_ids(source, [{"imageDigest": req.digest}])[0].tags
        except (ManifestUnknown, RepositoryNotFound) as exc:
            raise PermanentFailure("IMAGE_NOT_FOUND", f"the source image is gone: {exc.message}") from None
        name = req.repository
        try:
            client = self.remote.client(dest.region, dest.registry_id, req.account_id)
            sent = 0
            for digest in blobs:
                if self.stopping():
                    raise InterruptedError("stopping")
                if client.blob_exists(name, digest):
                    continue
                content = self.registry.blobs.open(source, digest)
                client.push_blob(name, digest, pieces(self.registry.blobs.reader(content)), content.size)
                sent += 1
            for digest, payload, media_type in manifests:
                client.put_manifest(name, digest, payload, media_type)
            _, payload, media_type = manifests[[m[0] for m in manifests].index(req.digest)]
            skipped = []
            for tag in tags:
                try:
                    client.put_manifest(name, tag, payload, media_type)
                except UpstreamError as exc:
                    if exc.code != "UpstreamAccessDenied":
                        raise
                    skipped.append(tag)  # the manifest went in: the tag is immutable there (DENIED)
        except UpstreamError as exc:
            if exc.code == "UpstreamAccessDenied":
                raise PermanentFailure("REPLICATION_NOT_AUTHORIZED", exc.message) from None
            if exc.code in ("NotFound", "Invalid") and exc.status not in (None, 429) and (exc.status or 0) < 500:
                raise PermanentFailure("DESTINATION_REFUSED", exc.message) from None
            raise  # unreachable, 5xx, rate-limited: retried with backoff
        note = f"; immutable tag(s) {', '.join(skipped)} left as they were" if skipped else ""
        return (
            f"replicated {name}@{req.digest} to {dest.region}/{dest.registry_id}: {len(manifests)} manifest(s), "
            f"{sent} of {len(blobs)} blob(s) sent{note}"
        )

    def _plan(self, source: RepoRef, digest: str) -> tuple[list[tuple[str, bytes, str]], list[str]]:
        """The manifests to put, children before parents and subjects before referrers, and every blob, once."""
        order: list[tuple[str, bytes, str]] = []
        blobs: dict[str, None] = {}
        seen: set[str] = set()

        def visit(d: str) -> None:
            if d in seen:
                return
            seen.add(d)
            record = self.registry.manifests.get(source, d)
            parsed = parse_manifest(record.payload, record.media_type)
            for child in parsed.children:
                visit(child.digest)
            for desc in parsed.blob_descriptors:
                if not (desc.media_type in mt.NON_DISTRIBUTABLE and desc.has_urls):
                    blobs.setdefault(desc.digest, None)
            order.append((record.digest, record.payload, record.media_type))
            for referrer in self.registry.manifests.referrers(source, d):
                visit(referrer["digest"])

        visit(digest)
        return order, list(blobs)

    def _check_policy(self, source_account: str, target: RepoRef) -> None:
        """ECR: the destination registry policy must allow the source account ReplicateImage (and CreateRepository
        when the repository does not exist there yet)."""
        try:
            text = self.registry.policies.registry_policy(target.account_id)
            policy = parse_policy(text, PolicyKind.REGISTRY)
        except (RegistryPolicyNotFound, MalformedPolicy):
            policy = None
        actions = ["ecr:ReplicateImage"]
        try:
            self.registry.repositories.get(target)
        except RepositoryNotFound:
            actions.append("ecr:CreateRepository")
        principal = Principal(
            arn=f"arn:aws:iam::{source_account}:root", account=source_account, type="Account", user_id=source_account
        )
        resource = repository_arn(self.region, target.account_id, target.name)
        for action in actions:
            request = AuthzRequest(
                principal=principal,
                action=action,
                resource=resource,
                resource_account=target.account_id,
                context={"aws:RequestedRegion": self.region, "aws:ResourceAccount": target.account_id},
            )
            decision = evaluate(request, resource_policies=[policy] if policy is not None else [])
            if not decision.allowed:
                raise PermanentFailure(
                    "REPLICATION_NOT_AUTHORIZED",
                    f"the registry policy of {target.account_id} does not allow account {source_account} {action} "
                    f"on {resource} ({decision.reason})",
                )

    # ---- requests and status ----------------------------------------------------------------------------------
    def statuses(self, ref: RepoRef, digest: str) -> list[store.Request]:
        return store.statuses(self.ctx, ref.account_id, ref.name, digest)

    def backfill(
        self,
        account_id: str,
        repository: str | None = None,
        *,
        only: Destination | None = None,
        note: Callable[[sa.Connection, RepoRef, list[str]], None] | None = None,
        halt: Callable[[], bool] = lambda: False,
    ) -> tuple[int, int]:
        """Request the replication of the images already in the account's repositories (one, or every one) that
        its rules name, to each destination not yet COMPLETE (``only``: to that one). Idempotent, and resumable by
        running it again. ``note``: called with each page of images in the transaction that requests them (an ECR
        backfill records its items); ``halt``: asked between pages. Returns (images looked at, replications
        requested)."""
        rules = self.rules(account_id)
        names = [repository] if repository is not None else self._repository_names(account_id)
        images = requested = 0
        for name in names:
            destinations = [d for d in destinations_for(rules, name) if only is None or d == only]
            if not destinations:
                continue
            ref = RepoRef(account_id, name)
            token: str | None = None
            while True:
                try:
                    page, token = self.registry.images.describe_page(ref, token=token, limit=500)
                except RepositoryNotFound:
                    if repository is not None:
                        raise
                    break
                digests = [d.digest for d in page if not d.subject_digest]
                requested += self._request_missing(ref, digests, destinations, note)
                images += len(page)
                if token is None or self.stopping() or halt():
                    break
            if self.stopping() or halt():
                break
        return images, requested

    def _request_missing(
        self,
        ref: RepoRef,
        digests: list[str],
        destinations: list[Destination],
        note: Callable[[sa.Connection, RepoRef, list[str]], None] | None = None,
    ) -> int:
        count = 0
        done = {
            (r.digest, r.destination)
            for d in digests
            for r in store.statuses(self.ctx, ref.account_id, ref.name, d)
            if r.status == COMPLETE
        }
        with self.ctx.write() as conn:
            now = self.ctx.clock()
            if note is not None:
                note(conn, ref, digests)
            for digest in digests:
                for dest in destinations:
                    if (digest, dest) not in done:
                        store.request(self.ctx, conn, ref.account_id, ref.name, digest, dest, now)
                        count += 1
        return count

    def _repository_names(self, account_id: str) -> list[str]:
        names: list[str] = []
        last: str | None = None
        while True:
            page = self.registry.repositories.list_names(account_id, last=last, limit=1000)
            names += page
            if len(page) < 1000:
                return names
            last = page[-1]
