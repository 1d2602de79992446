"""Applying lifecycle policies: evaluate each repository's policy, expire and archive what it selects.

The evaluation is the same one previews use (``soko.lifecycle.evaluate`` over ``image_records``). Expiry deletes
each selected image by digest through the domain — the image and all its tags, nothing else — indexes before
the images they reference, so a manifest list never loses a child it still has. Each expiry is one unit of work
(``Manifests.expire``): the deletion, its link reviews, an audit record and its events; ``lastEvaluatedAt`` is set
per repository. Content is reclaimed later by the garbage collector.
TRANSITION actions archive the image (``StorageClasses.transition``: ARCHIVED at once, with its event and an audit
record; the content moves to the archive tier in the background), indexes before their children.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from soko.errors import (
    ImageChanged,
    ManifestReferenced,
    ManifestUnknown,
    RepositoryNotFound,
    StorageClassUpdateNotSupported,
)
from soko.lifecycle import EXPIRE, LifecyclePolicyError, evaluate, parse_lifecycle_policy
from soko.meta.schema import lifecycle_policies, manifest_children, manifests, repositories
from soko.registry.capabilities import NotCarriedOut
from soko.registry.lifecycle_store import image_records
from soko.registry.models import RepoRef

if TYPE_CHECKING:  # the Registry's jobs build this runner
    from soko.registry.service import Registry

log = logging.getLogger("soko.lifecycle")


@dataclass
class RepositoryRun:
    account_id: str
    repository: str
    expired: list[dict] = field(default_factory=list)  # {"imageDigest", "imageTags", "rulePriority"}
    archived: list[dict] = field(default_factory=list)  # the same, for transitions to the archive
    skipped: list[str] = field(default_factory=list)
    error: str | None = None


class LifecycleRunner:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.ctx = registry.ctx

    def run(
        self,
        *,
        account_id: str | None = None,
        repository: str | None = None,
        dry_run: bool = False,
        now: datetime | None = None,
    ) -> list[RepositoryRun]:
        now = now or datetime.fromtimestamp(self.ctx.clock(), UTC)
        query = (
            sa.select(
                repositories.c.id, repositories.c.account_id, repositories.c.name, lifecycle_policies.c.policy_text
            )
            .join(lifecycle_policies, lifecycle_policies.c.repository_id == repositories.c.id)
            .order_by(repositories.c.account_id, repositories.c.name)
        )
        if account_id:
            query = query.where(repositories.c.account_id == account_id)
        if repository:
            query = query.where(repositories.c.name == repository)
        with self.ctx.db.read() as conn:
            targets = conn.execute(query).all()
        if repository and not targets:
            raise RepositoryNotFound(f"repository '{repository}' has no lifecycle policy (or does not exist)")
        return [self._run_one(repo_id, account, name, text, now, dry_run) for repo_id, account, name, text in targets]

    def _run_one(self, repo_id: int, account: str, name: str, text: str, now: datetime, dry_run: bool) -> RepositoryRun:
        result = RepositoryRun(account, name)
        try:
            policy = parse_lifecycle_policy(text)
        except LifecyclePolicyError as exc:  # stored policies were validated; a newer validator may disagree
            result.error = exc.message
            log.warning("lifecycle policy of %s/%s no longer validates: %s", account, name, exc.message)
            return result
        self.registry.manifests.flush_pulls()  # sinceImagePulled must see the latest pulls
        with self.ctx.db.read() as conn:
            records = image_records(conn, repo_id)
            indexes = set(
                conn.execute(
                    sa.select(manifests.c.digest)
                    .join(manifest_children, manifest_children.c.parent_id == manifests.c.id)
                    .where(manifests.c.repository_id == repo_id)
                ).scalars()
            )
        actions = evaluate(policy, records, now)
        # Referrers before their subjects, deepest first (each is expired as its own action, with its audit record
        # and event, before its subject's deletion would take it along); then indexes first: deleting (or archiving)
        # a child while its index still stands is refused.
        depth = _referrer_depths({r.digest: r.subject for r in records})
        actions.sort(key=lambda a: (-depth.get(a.digest, 0), a.digest not in indexes, a.pushed_at, a.digest))
        ref = RepoRef(account, name)
        for action in actions:
            entry = {"imageDigest": action.digest, "imageTags": list(action.tags), "rulePriority": action.rule_priority}
            done = result.expired if action.action == EXPIRE else result.archived
            if dry_run:
                done.append(entry)
                continue
            try:
                if action.action == EXPIRE:
                    self.registry.manifests.expire(ref, action.digest, action.rule_priority, list(action.tags))
                else:
                    self.registry.storage_classes.transition(
                        ref, action.digest, action.rule_priority, list(action.tags)
                    )
            except (
                ManifestUnknown,
                ManifestReferenced,
                ImageChanged,
                StorageClassUpdateNotSupported,
                NotCarriedOut,
            ) as exc:
                result.skipped.append(f"{action.digest}: {exc.message}")
                continue
            done.append(entry)
        if not dry_run:
            with self.ctx.write() as conn:
                conn.execute(
                    sa.update(lifecycle_policies)
                    .where(lifecycle_policies.c.repository_id == repo_id)
                    .values(last_evaluated_at=now.timestamp())
                )
        return result


def _referrer_depths(subjects: dict[str, str | None]) -> dict[str, int]:
    """How many subjects of the repository's images each image refers to in a chain (a signature of an SBOM of an
    image: 2)."""
    depths: dict[str, int] = {}
    for digest in subjects:
        depth, seen, cur = 0, {digest}, subjects[digest]
        while cur in subjects and cur not in seen:  # (a subject of another repository or none ends the chain)
            seen.add(cur)
            depth, cur = depth + 1, subjects[cur]
        depths[digest] = depth
    return depths
