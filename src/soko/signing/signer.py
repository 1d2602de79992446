"""The ``signing`` job: sign one image for one signing profile (an ``image_signing_status`` row, queued by the push in
its unit of work: ``soko.kernel.signing_queue``), then mark the row COMPLETE (or FAILED with a reason).

It calls the domain as a client of the repository would: the image's manifest through ``Registry.manifests.get``,
the envelope and the empty config through an upload session (verified against their digests, as any push), and the
signature manifest through ``Registry.manifests.put``, whose unit of work emits ECR's ``ECR Referrer Action`` PUSH
(artifact ``application/vnd.cncf.notary.signature``) and, since the signature has a ``subject``, queues no signing
of its own. The status row's ``requested_at`` is the request it answers: a newer push of the same image made during a
run keeps its IN_PROGRESS status and its job (then signed again).
"""

from __future__ import annotations

import hashlib
import logging

import sqlalchemy as sa

from soko import __version__
from soko.errors import BlobUnknown, LimitExceeded, ManifestUnknown, RepositoryNotFound, TooLarge
from soko.iam.secrets import MasterKey
from soko.kernel import job_queue
from soko.kernel.signing_queue import COMPLETE, FAILED, IN_PROGRESS, KIND
from soko.meta.schema import image_signing_status
from soko.meta.schema import repositories as repos
from soko.registry import Registry
from soko.registry.models import RepoRef
from soko.signing import notation
from soko.signing.keys import SigningKeyMissing, SigningKeys

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 5  # failed runs in a row before the status is FAILED (the runner backs off between them)
AGENT = f"Soko/{__version__}"


class Signer:
    def __init__(self, registry: Registry, master: MasterKey) -> None:
        self.registry = registry
        self.ctx = registry.ctx
        self.keys = SigningKeys(registry.ctx, master)

    def run(self, key: str) -> str | None:
        while True:  # again while newer requests (a push of the same image meanwhile) come in, as replication does
            done, message = self._run_once(key)
            if done:
                return message

    def _run_once(self, key: str) -> tuple[bool, str | None]:
        t = image_signing_status.c
        with self.ctx.db.read() as conn:
            row = conn.execute(
                sa.select(t.id, t.manifest_digest, t.profile_arn, t.status, t.requested_at, repos.c.account_id,
                          repos.c.name)
                .join(repos, repos.c.id == t.repository_id).where(t.id == int(key))
            ).first()
            failed_before = job_queue.attempts(conn, KIND, key)
        if row is None or row.status != IN_PROGRESS:
            self._finish(int(key), None, None, None, None)  # the image or repository is gone: only the job goes
            return True, None
        ref = RepoRef(row.account_id, row.name)
        outcome: tuple[str, str | None, str | None, str | None]
        try:
            outcome = (COMPLETE, None, None, self.sign(ref, row.manifest_digest, row.profile_arn))
        except (ManifestUnknown, RepositoryNotFound):
            outcome = (FAILED, "IMAGE_NOT_FOUND", "The image was deleted before it was signed.", None)
        except SigningKeyMissing as exc:
            outcome = (FAILED, "SIGNING_PROFILE_NOT_FOUND", exc.message, None)
        except (LimitExceeded, TooLarge) as exc:  # e.g. the repository's image quota: a retry will not help
            outcome = (FAILED, "LIMIT_EXCEEDED", exc.message, None)
        except Exception as exc:
            error = f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
            log.warning("signing %s@%s with %s failed: %s", ref.name, row.manifest_digest, row.profile_arn, error)
            if failed_before + 1 < MAX_ATTEMPTS:
                raise  # the runner retries after a backoff
            outcome = (FAILED, "SIGNING_FAILED", f"{error} (after {MAX_ATTEMPTS} attempts)"[:1000], None)
        status, code, reason, signature = outcome
        if not self._finish(row.id, row.requested_at, status, code, reason, signature):
            return False, None
        if status == COMPLETE:
            return True, f"signed {ref.name}@{row.manifest_digest} with {row.profile_arn}: {signature}"
        return True, f"signing {ref.name}@{row.manifest_digest} with {row.profile_arn} FAILED: {code}"

    def sign(self, ref: RepoRef, digest: str, profile_arn: str) -> str:
        """Sign image ``digest`` of ``ref`` with the profile's newest key; returns the signature manifest's digest."""
        record = self.registry.manifests.get(ref, digest)
        signing_key = self.keys.current(ref.account_id, profile_arn)
        target = {"mediaType": record.media_type, "digest": record.digest, "size": len(record.payload)}
        now = self.ctx.clock()
        envelope = notation.envelope(target, signing_key, now, AGENT)
        self._store_blob(ref, notation.EMPTY)
        self._store_blob(ref, envelope)
        manifest = notation.signature_manifest(target, envelope, signing_key, now)
        digest_of_signature = "sha256:" + hashlib.sha256(manifest).hexdigest()
        self.registry.manifests.put(ref, digest_of_signature, manifest, notation.OCI_MANIFEST)
        return digest_of_signature

    def _store_blob(self, ref: RepoRef, content: bytes) -> None:
        """A blob of the repository, through an upload session (verified like any pushed blob)."""
        digest = "sha256:" + hashlib.sha256(content).hexdigest()
        try:
            self.registry.blobs.stat(ref, digest)
            return
        except BlobUnknown:
            pass
        self.registry.uploads.store_bytes(ref, content)

    def _finish(self, row_id: int, requested_at: float | None, status: str | None, code: str | None,
                reason: str | None, signature: str | None = None) -> bool:
        """Record the outcome (only for the request this run answered) and drop the job, in one transaction; False
        when a newer request came in meanwhile (its job stays, due, and runs again)."""
        t = image_signing_status.c
        with self.ctx.transaction() as tx:
            if status is not None:
                done = tx.conn.execute(
                    sa.update(image_signing_status)
                    .where(t.id == row_id, t.requested_at == requested_at, t.status == IN_PROGRESS)
                    .values(status=status, failure_code=code, failure_reason=reason, signature_digest=signature,
                            updated_at=tx.now)
                ).rowcount
                if not done:
                    return False
            job_queue.forget(tx.conn, KIND, str(row_id))
        return True
