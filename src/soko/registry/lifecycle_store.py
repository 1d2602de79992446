"""Lifecycle policies and their previews, stored per repository.

Policies are validated with :func:`soko.lifecycle.parse_lifecycle_policy` and stored verbatim (GetLifecyclePolicy
returns exactly the text that was put). A preview runs the same evaluator as the real lifecycle run
(:func:`soko.lifecycle.preview`), asynchronously: StartLifecyclePolicyPreview claims the repository's single
``lifecycle_previews`` row (status IN_PROGRESS) and queues a ``lifecycle_preview`` leased job (``soko.jobs``, key =
the repository id) in one write transaction — a second start while it runs is refused. Whichever serving process
takes the job evaluates the repository's images and stores the results (COMPLETE) or the error (FAILED); a process
that dies mid-preview loses the job's lease and another one runs it again, so GetLifecyclePolicyPreview answers
IN_PROGRESS until it is done. A start may replace a preview IN_PROGRESS for ``STALE_AFTER`` seconds (no process
runs jobs, e.g.).

:func:`image_records` builds the evaluator's input from the database, including which indexes reference each image
(``manifest_children``) and each referrer's subject (``subject_digest``); the lifecycle runner uses it too.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from soko.errors import SokoError
from soko.kernel.job_queue import enqueue
from soko.lifecycle import ImageRecord, LifecyclePolicyError, parse_lifecycle_policy, preview
from soko.meta.schema import lifecycle_policies, lifecycle_previews, manifest_children, manifests, tags
from soko.registry.capabilities import require_service_key_for_archive
from soko.registry.models import RepoRef

if TYPE_CHECKING:  # the Registry composes this service
    from soko.registry.service import Registry

log = logging.getLogger("soko.lifecycle")
STALE_AFTER = 600.0
PREVIEW_JOB = "lifecycle_preview"
IN_PROGRESS, COMPLETE, FAILED = "IN_PROGRESS", "COMPLETE", "FAILED"


class LifecyclePolicyInvalid(SokoError):
    """Validation failure; ``message`` is ECR's full InvalidParameterException message."""


class LifecyclePolicyNotFound(SokoError):
    pass


class LifecyclePolicyPreviewNotFound(SokoError):
    pass


class LifecyclePolicyPreviewInProgress(SokoError):
    pass


@dataclass(frozen=True, slots=True)
class StoredPolicy:
    text: str
    last_evaluated_at: float | None


@dataclass(frozen=True, slots=True)
class PreviewState:
    status: str
    policy_text: str
    results: list[dict]  # LifecyclePolicyPreviewResult-shaped, imagePushedAt as epoch seconds
    summary: dict | None
    failure: str | None


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def image_records(conn: sa.Connection, repo_id: int) -> list[ImageRecord]:
    """Every image of the repository as the lifecycle evaluator sees it."""
    rows = conn.execute(
        sa.select(
            manifests.c.id,
            manifests.c.digest,
            manifests.c.pushed_at,
            manifests.c.last_pulled_at,
            manifests.c.subject_digest,
            manifests.c.image_status,
            manifests.c.last_archived_at,
            manifests.c.last_activated_at,
        ).where(
            # an image being restored is neither standard nor archive until the restore ends: no rule acts on it
            manifests.c.repository_id == repo_id,
            manifests.c.image_status != "ACTIVATING",
        )
    ).all()
    tag_map: dict[int, list[str]] = {}
    for manifest_id, name in conn.execute(
        sa.select(tags.c.manifest_id, tags.c.name).where(tags.c.repository_id == repo_id).order_by(tags.c.name)
    ):
        tag_map.setdefault(manifest_id, []).append(name)
    parents: dict[str, list[str]] = {}
    for parent_digest, child in conn.execute(
        sa.select(manifests.c.digest, manifest_children.c.child_digest)
        .join(manifests, manifests.c.id == manifest_children.c.parent_id)
        .where(manifests.c.repository_id == repo_id)
    ):
        parents.setdefault(child, []).append(parent_digest)
    return [
        ImageRecord(
            digest=r.digest,
            tags=tuple(tag_map.get(r.id, ())),
            pushed_at=_utc(r.pushed_at),  # type: ignore[arg-type]
            # ECR: "time since last pull" falls back to push time, or the last activation after a restore
            last_pulled_at=_utc(
                max((t for t in (r.last_pulled_at, r.last_activated_at) if t is not None), default=None)
            ),
            referenced_by_index=tuple(sorted(parents.get(r.digest, ()))),
            subject=r.subject_digest,
            storage_class="archive" if r.image_status == "ARCHIVED" else "standard",
            transitioned_at=_utc(r.last_archived_at) if r.image_status == "ARCHIVED" else None,
        )
        for r in rows
    ]


def validate_policy(text: str, *, ecr_strict: bool = False) -> None:
    """A policy ECR would accept (``ecr_strict``: and nothing beyond it; the ``lifecycle_ecr_strict`` setting)."""
    try:
        parse_lifecycle_policy(text, ecr_strict=ecr_strict)
    except LifecyclePolicyError as exc:
        raise LifecyclePolicyInvalid(exc.ecr_message) from None


def _policy_not_found(ref: RepoRef) -> LifecyclePolicyNotFound:
    return LifecyclePolicyNotFound(
        f"Lifecycle policy does not exist for the repository with name '{ref.name}' in the registry with id "
        f"'{ref.account_id}'"
    )


class LifecycleStore:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.ctx = registry.ctx
        self.repositories = registry.repositories

    # ---- policies ---------------------------------------------------------------------------------------------
    def put(self, ref: RepoRef, text: str) -> StoredPolicy:
        validate_policy(text, ecr_strict=self.ctx.settings.lifecycle_ecr_strict)
        now = self.ctx.clock()
        with self.ctx.write() as conn:
            repo_id = self.repositories.id_for(conn, ref)
            if '"transition"' in text and any(
                rule.action.type == "transition" for rule in parse_lifecycle_policy(text).rules
            ):
                require_service_key_for_archive(self.repositories.get(ref, conn).encryption_type, ref.name)
            conn.execute(
                self.ctx.db.upsert(
                    lifecycle_policies, ["repository_id"], {"policy_text": None, "updated_at": None}
                ).values(repository_id=repo_id, policy_text=text, updated_at=now)
            )
            last = conn.execute(
                sa.select(lifecycle_policies.c.last_evaluated_at).where(lifecycle_policies.c.repository_id == repo_id)
            ).scalar()
        return StoredPolicy(text, last)

    def get(self, ref: RepoRef) -> StoredPolicy:
        with self.ctx.db.read() as conn:
            repo_id = self.repositories.id_for(conn, ref)
            row = conn.execute(
                sa.select(lifecycle_policies.c.policy_text, lifecycle_policies.c.last_evaluated_at).where(
                    lifecycle_policies.c.repository_id == repo_id
                )
            ).first()
        if row is None:
            raise _policy_not_found(ref)
        return StoredPolicy(row.policy_text, row.last_evaluated_at)

    def delete(self, ref: RepoRef) -> StoredPolicy:
        with self.ctx.write() as conn:
            repo_id = self.repositories.id_for(conn, ref)
            row = conn.execute(
                sa.delete(lifecycle_policies)
                .where(lifecycle_policies.c.repository_id == repo_id)
                .returning(lifecycle_policies.c.policy_text, lifecycle_policies.c.last_evaluated_at)
            ).first()
        if row is None:
            raise _policy_not_found(ref)
        return StoredPolicy(row.policy_text, row.last_evaluated_at)

    # ---- previews ---------------------------------------------------------------------------------------------
    def start_preview(self, ref: RepoRef, text: str | None = None) -> str:
        """Claim the repository's preview slot and queue its evaluation (a leased job); returns the policy text."""
        now = self.ctx.clock()
        with self.ctx.write() as conn:
            repo_id = self.repositories.id_for(conn, ref)
            if text is None:
                text = conn.execute(
                    sa.select(lifecycle_policies.c.policy_text).where(lifecycle_policies.c.repository_id == repo_id)
                ).scalar()
                if text is None:
                    raise _policy_not_found(ref)
            validate_policy(text, ecr_strict=self.ctx.settings.lifecycle_ecr_strict)
            locked = sa.select(lifecycle_previews.c.status, lifecycle_previews.c.updated_at).where(
                lifecycle_previews.c.repository_id == repo_id
            )
            if not self.ctx.db.is_sqlite:
                locked = locked.with_for_update()
            current = conn.execute(locked).first()
            if current is not None and current.status == IN_PROGRESS and now - current.updated_at < STALE_AFTER:
                raise LifecyclePolicyPreviewInProgress(
                    f"Previous lifecycle policy preview request has not completed for repository '{ref.name}' in the "
                    f"registry with id '{ref.account_id}'; wait for it (GetLifecyclePolicyPreview) and try again"
                )
            values = {"status": IN_PROGRESS, "policy_text": text, "results": None, "failure": None, "updated_at": now}
            if current is None:
                conn.execute(sa.insert(lifecycle_previews).values(repository_id=repo_id, created_at=now, **values))
            else:
                conn.execute(
                    sa.update(lifecycle_previews)
                    .where(lifecycle_previews.c.repository_id == repo_id)
                    .values(created_at=now, **values)
                )
            # Due at once (the runner's wall clock), once this commits; run again if its process dies.
            enqueue(self.ctx.db, conn, PREVIEW_JOB, str(repo_id), time.time())
        return text

    def run_preview_job(self, key: str) -> str | None:
        """The ``lifecycle_preview`` job: evaluate repository ``key``'s preview if it is still IN_PROGRESS."""
        repo_id = int(key)
        with self.ctx.db.read() as conn:
            previews = lifecycle_previews.c
            row = conn.execute(
                sa.select(previews.status, previews.policy_text, previews.created_at).where(
                    previews.repository_id == repo_id
                )
            ).first()
        if row is None or row.status != IN_PROGRESS:
            return None  # done already, or the repository was deleted
        self._run_preview(repo_id, row.policy_text, row.created_at)
        return f"lifecycle preview of repository {repo_id} evaluated"

    def _run_preview(self, repo_id: int, text: str, started: float) -> None:
        try:
            policy = parse_lifecycle_policy(text)
            self.registry.manifests.flush_pulls()  # pull times recorded in this process count
            with self.ctx.db.read() as conn:
                images = image_records(conn, repo_id)
            result = preview(policy, images, datetime.fromtimestamp(self.ctx.clock(), UTC))
            results = [
                {
                    "imageTags": list(a.tags),
                    "imageDigest": a.digest,
                    "imagePushedAt": a.pushed_at.timestamp(),
                    "action": {
                        "type": a.action,
                        **({"targetStorageClass": a.target_storage_class} if a.target_storage_class else {}),
                    },
                    "appliedRulePriority": a.rule_priority,
                    "storageClass": a.storage_class,
                }
                for a in result.results
            ]
            payload = json.dumps({"results": results, "summary": result.summary()})
            self._finish(repo_id, started, COMPLETE, payload, None)
        except Exception as exc:  # the preview fails visibly (status FAILED), never silently
            log.exception("lifecycle preview of repository %s failed", repo_id)
            self._finish(repo_id, started, FAILED, None, f"{type(exc).__name__}: {exc}")

    def _finish(self, repo_id: int, started: float, status: str, payload: str | None, failure: str | None) -> None:
        with self.ctx.write() as conn:
            # Only the run that claimed the slot may complete it (a stale-then-restarted preview has a newer start).
            conn.execute(
                sa.update(lifecycle_previews)
                .where(lifecycle_previews.c.repository_id == repo_id, lifecycle_previews.c.created_at == started)
                .values(status=status, results=payload, failure=failure, updated_at=self.ctx.clock())
            )

    def get_preview(self, ref: RepoRef) -> PreviewState:
        with self.ctx.db.read() as conn:
            repo_id = self.repositories.id_for(conn, ref)
            row = conn.execute(
                sa.select(lifecycle_previews).where(lifecycle_previews.c.repository_id == repo_id)
            ).first()
        if row is None:
            raise LifecyclePolicyPreviewNotFound(
                f"There is no dry run for the repository with name '{ref.name}' in the registry with id "
                f"'{ref.account_id}'; start one with StartLifecyclePolicyPreview"
            )
        status = row.status
        data = json.loads(row.results) if row.results else {}
        return PreviewState(status, row.policy_text, data.get("results", []), data.get("summary"), row.failure)
