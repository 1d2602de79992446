"""Queueing a scan: the ``image_scans`` row set IN_PROGRESS and its leased ``scan`` job made due, in the caller's
transaction, and their removal (with the image's inventory once no repository holds it) when the image goes. In
the kernel (it imports only the schema), so the domain's push and delete paths call it without importing
``soko.scan``, which builds on the domain: scan on push adds two rows to the push's transaction and nothing else,
so it never slows a push by the scan itself."""

from __future__ import annotations

import sqlalchemy as sa

from soko.kernel import scan_rules
from soko.kernel.job_queue import enqueue
from soko.meta.schema import image_inventories, image_scans, jobs, manifests

KIND = "scan"
RULES_KIND = "scan_rules"  # one-shot, keyed by account: apply a new registry scanning configuration to stored images
RESCAN_KIND = "scan_rescan"  # one-shot, key "advisories": re-match continuously scanned images after an import
QUOTA_WINDOW = 24 * 3600  # ECR basic scanning: one scan per image per 24 hours (scan on push included)
IN_PROGRESS = "IN_PROGRESS"
IN_PROGRESS_DESCRIPTION = "The scan is in progress."
IMAGE_CONFIGS = frozenset({"application/vnd.oci.image.config.v1+json",
                           "application/vnd.docker.container.image.v1+json"})


def request(tx, repo_id: int, digest: str, scan_type: str = scan_rules.BASIC) -> bool:
    """Queue a scan of ``digest`` in repository ``repo_id`` within ``tx`` (a ``UnitOfWork``); False when a BASIC
    scan of the image was requested less than 24 hours ago (then nothing is queued). ENHANCED scans have no such
    quota (ECR's enhanced scanning has none: they are requested by pushes and rule changes, never by callers)."""
    t = image_scans.c
    conn = tx.conn
    row = conn.execute(sa.select(t.id, t.requested_at, t.scan_type).where(t.repository_id == repo_id,
                                                                           t.manifest_digest == digest)).first()
    # the quota counts basic scans only: an enhanced scan of the image (before the registry went back to BASIC)
    # does not stop its first basic one
    if (row is not None and scan_type == scan_rules.BASIC and row.scan_type == scan_rules.BASIC
            and tx.now - row.requested_at < QUOTA_WINDOW):
        return False
    values = {"status": IN_PROGRESS, "description": IN_PROGRESS_DESCRIPTION, "requested_at": tx.now,
              "completed_at": None, "counts": "{}", "findings": "[]", "scan_type": scan_type}
    if row is None:
        scan_id = conn.execute(sa.insert(image_scans).values(repository_id=repo_id, manifest_digest=digest,
                                                             **values)).inserted_primary_key[0]
    else:
        scan_id = row.id
        conn.execute(sa.update(image_scans).where(t.id == scan_id).values(**values))
    enqueue(tx.ctx.db, conn, KIND, str(scan_id), tx.now)
    return True


def on_push(tx, repo_id: int, digest: str) -> None:
    """A new image landed in repository ``repo_id``: queue its scan if a registry scanning rule or (BASIC) the
    repository's scanOnPush says so, of the registry's scan type."""
    applies = scan_rules.for_repository(tx.conn, repo_id)
    if applies.on_push:
        request(tx, repo_id, digest, applies.scan_type)


def forget(tx, repo_id: int, digest: str) -> None:
    """The image left the repository (its manifest row is deleted already, in ``tx``): its scan and any queued scan
    job go with it (as ECR drops an image's findings), so a later push of the same image is scanned afresh; so
    does its inventory once no repository holds the image (inventories are keyed by digest alone), else
    inventories would pile up for every image ever scanned."""
    tx.conn.execute(sa.delete(image_inventories).where(image_inventories.c.manifest_digest == digest,
                                                       ~sa.exists().where(manifests.c.digest == digest)))
    scan = (image_scans.c.repository_id == repo_id) & (image_scans.c.manifest_digest == digest)
    _drop_scan_jobs(tx, scan)
    tx.conn.execute(sa.delete(image_scans).where(scan))


def _drop_scan_jobs(tx, where: sa.ColumnElement[bool]) -> None:
    """These scans' queued jobs (keyed by scan id, no foreign key: a job whose scan is gone would stay for good)."""
    scan_keys = sa.select(sa.cast(image_scans.c.id, sa.String)).where(where)
    tx.conn.execute(sa.delete(jobs).where(jobs.c.kind == KIND, jobs.c.key.in_(scan_keys)))


def forget_repository(tx, repo_id: int) -> None:
    """The repository is about to be deleted (its manifests and scans cascade): its queued scan jobs and the
    inventories of its images that no other repository holds go now, in the same transaction."""
    _drop_scan_jobs(tx, image_scans.c.repository_id == repo_id)
    other = manifests.alias("other")
    held = sa.select(manifests.c.digest).where(manifests.c.repository_id == repo_id)
    tx.conn.execute(sa.delete(image_inventories).where(
        image_inventories.c.manifest_digest.in_(held),
        ~sa.exists().where(other.c.digest == image_inventories.c.manifest_digest, other.c.repository_id != repo_id)))
