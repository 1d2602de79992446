"""Signing on push: for a new manifest in a repository that the account's signing rules match, one
``image_signing_status`` row per signing profile set IN_PROGRESS and its leased ``signing`` job made due, in the
push's transaction; their removal when the image goes. In the kernel (it imports only the schema) so the domain's
push and delete paths call it without importing ``soko.signing``, which builds on the domain: a push adds a few rows
and never waits for the signature."""

from __future__ import annotations

import json
from collections.abc import Callable

import sqlalchemy as sa

from soko.kernel.job_queue import enqueue
from soko.kernel.wildcard import wildcard_match
from soko.meta.schema import image_signing_status, jobs, signing_configurations

KIND = "signing"
IN_PROGRESS, COMPLETE, FAILED = "IN_PROGRESS", "COMPLETE", "FAILED"
NOT_AUTHORIZED = "SIGNING_NOT_AUTHORIZED"  # the pusher may not use the profile (signer:SignPayload)


def filter_matches(repository: str, filter_value: str) -> bool:
    """ECR's WILDCARD_MATCH: ``*`` is any run of characters (``/`` included), the rest literal, the whole name."""
    return wildcard_match(repository, filter_value)


def matching_profiles(rules: list[dict], repository: str) -> list[str]:
    """The signing profiles whose rule matches ``repository`` (a rule without filters matches every repository),
    each once, in rule order."""
    profiles: dict[str, None] = {}
    for rule in rules:
        filters = rule.get("repositoryFilters") or []
        if not filters or any(filter_matches(repository, f["filter"]) for f in filters):
            profiles[rule["signingProfileArn"]] = None
    return list(profiles)


def request(tx, account_id: str, repository: str, repo_id: int, digest: str,
            may_sign: Callable[[str], str | None] | None = None) -> int:
    """Queue the signing of ``digest`` in ``repository`` within ``tx`` (a ``UnitOfWork``) for every profile the
    account's rules match; returns how many were queued. ``may_sign(profile)``: None when the pusher may sign with
    the profile (ECR requires ``signer:SignPayload`` of the pusher), else why not: that profile's status is FAILED
    at once and nothing is queued for it."""
    conn = tx.conn
    rules = conn.execute(
        sa.select(signing_configurations.c.rules).where(signing_configurations.c.account_id == account_id)
    ).scalar()
    if rules is None:
        return 0
    t = image_signing_status.c
    profiles = matching_profiles(json.loads(rules), repository)
    queued = 0
    for profile in profiles:
        refused = may_sign(profile) if may_sign is not None else None
        values = {"status": IN_PROGRESS if refused is None else FAILED,
                  "failure_code": None if refused is None else NOT_AUTHORIZED,
                  "failure_reason": None if refused is None else refused[:1000],
                  "signature_digest": None, "requested_at": tx.now, "updated_at": tx.now}
        row_id = conn.execute(sa.select(t.id).where(t.repository_id == repo_id, t.manifest_digest == digest,
                                                    t.profile_arn == profile)).scalar()
        if row_id is None:
            row_id = conn.execute(sa.insert(image_signing_status).values(
                repository_id=repo_id, manifest_digest=digest, profile_arn=profile, **values)).inserted_primary_key[0]
        else:
            conn.execute(sa.update(image_signing_status).where(t.id == row_id).values(**values))
        if refused is None:
            enqueue(tx.ctx.db, conn, KIND, str(row_id), tx.now)
            queued += 1
    return queued


def _drop_jobs(tx, where: sa.ColumnElement[bool]) -> None:
    """Queued signing jobs of these rows (keyed by row id, no foreign key: a job whose row is gone would stay)."""
    keys = sa.select(sa.cast(image_signing_status.c.id, sa.String)).where(where)
    tx.conn.execute(sa.delete(jobs).where(jobs.c.kind == KIND, jobs.c.key.in_(keys)))


def forget(tx, repo_id: int, digest: str) -> None:
    """The image left the repository (in ``tx``): its signing statuses and queued signing jobs go with it."""
    image = (image_signing_status.c.repository_id == repo_id) & (image_signing_status.c.manifest_digest == digest)
    _drop_jobs(tx, image)
    tx.conn.execute(sa.delete(image_signing_status).where(image))


def forget_repository(tx, repo_id: int) -> None:
    """The repository is about to be deleted (its statuses cascade): its queued signing jobs go now."""
    _drop_jobs(tx, image_signing_status.c.repository_id == repo_id)
