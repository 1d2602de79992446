"""Domain events, shaped like Amazon ECR's EventBridge events (docs/architecture.md, "Events").

What ECR defines keeps ECR's shape: source ``aws.ecr``, detail-type ``ECR Image Action`` (``ECR Referrer Action``
for a manifest with a ``subject``), ``action-type`` PUSH or DELETE, ``resources`` empty. A push that moves a tag
is a PUSH with that ``image-tag`` (as ECR's PutImage of a new tag); removing a tag is a DELETE with it; archiving
an image and the end of its restore are ``UPDATE_STORAGE_CLASS`` (``target-storage-class`` ARCHIVE or STANDARD,
the latter with ``last-activated-at``). What ECR
does not define goes under Soko's own source ``soko.registry``: ``Soko Repository Action`` (CREATE, DELETE) and
``Soko Lifecycle Expiry`` (an image a lifecycle rule expired; its DELETE event is emitted as well). An image that
replication copied in is announced in the destination as ECR's ``ECR Replication Action`` (not as a push); an
image a pull-through cache fetched from its upstream (or failed to) as ECR's ``ECR Pull Through Cache Action``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from soko.access import repository_arn

ECR = "aws.ecr"
INSPECTOR = "aws.inspector2"
SOKO = "soko.registry"
IMAGE_ACTION = "ECR Image Action"
REFERRER_ACTION = "ECR Referrer Action"
REPOSITORY_ACTION = "Soko Repository Action"
LIFECYCLE_EXPIRY = "Soko Lifecycle Expiry"
IMAGE_SCAN = "ECR Image Scan"
INSPECTOR_SCAN = "Inspector2 Scan"
SCAN_RESOURCE_CHANGE = "ECR Scan Resource Change"
REPLICATION_ACTION = "ECR Replication Action"
PULL_THROUGH_CACHE_ACTION = "ECR Pull Through Cache Action"


@dataclass(frozen=True)
class Event:
    account_id: str
    source: str
    detail_type: str
    detail: dict
    resources: list[str] = field(default_factory=list)

    def envelope(self, event_id: str, when: float, region: str) -> dict:
        return {
            "version": "0",
            "id": event_id,
            "detail-type": self.detail_type,
            "source": self.source,
            "account": self.account_id,
            "time": datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": region,
            "resources": self.resources,
            "detail": self.detail,
        }

    def row(self, when: float, region: str) -> dict:
        event_id = str(uuid.uuid4())
        return {
            "event_id": event_id,
            "account_id": self.account_id,
            "source": self.source,
            "detail_type": self.detail_type,
            "created_at": when,
            "body": json.dumps(self.envelope(event_id, when, region), separators=(",", ":")),
        }


def image_action(
    account_id: str,
    repository: str,
    action: str,
    digest: str,
    *,
    tag: str | None = None,
    media_type: str | None = None,
    artifact_type: str | None = None,
    referrer: bool = False,
    target_storage_class: str | None = None,
    last_activated_at: float | None = None,
) -> Event:
    """PUSH, DELETE, or UPDATE_STORAGE_CLASS (``target_storage_class`` ARCHIVE, or STANDARD with
    ``last-activated-at`` once a restore is done), as AWS's samples show them."""
    detail = {"result": "SUCCESS", "repository-name": repository, "image-digest": digest, "action-type": action}
    if tag is not None:
        detail["image-tag"] = tag
    if target_storage_class is not None:
        detail["target-storage-class"] = target_storage_class
    if last_activated_at is not None:
        stamp = datetime.fromtimestamp(last_activated_at, UTC)
        detail["last-activated-at"] = stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 10000:02d}Z"
    if media_type:
        detail["manifest-media-type"] = media_type
    if artifact_type:
        detail["artifact-media-type"] = artifact_type
    return Event(account_id, ECR, REFERRER_ACTION if referrer else IMAGE_ACTION, detail)


def repository_action(account_id: str, region: str, repository: str, action: str) -> Event:
    detail = {"result": "SUCCESS", "repository-name": repository, "action-type": action}
    return Event(account_id, SOKO, REPOSITORY_ACTION, detail, [repository_arn(region, account_id, repository)])


def lifecycle_expiry(
    account_id: str, region: str, repository: str, digest: str, tags: list[str], rule_priority: int
) -> Event:
    detail = {
        "result": "SUCCESS",
        "repository-name": repository,
        "image-digest": digest,
        "image-tags": tags,
        "rule-priority": rule_priority,
    }
    return Event(account_id, SOKO, LIFECYCLE_EXPIRY, detail, [repository_arn(region, account_id, repository)])


def image_scan(
    account_id: str, region: str, repository: str, digest: str, tags: list[str], status: str, counts: dict[str, int]
) -> Event:
    """ECR's basic-scan completion event (``scan-status`` COMPLETE or FAILED, counts by severity)."""
    detail = {
        "scan-status": status,
        "repository-name": repository,
        "finding-severity-counts": counts,
        "image-digest": digest,
        "image-tags": tags,
    }
    return Event(account_id, ECR, IMAGE_SCAN, detail, [repository_arn(region, account_id, repository)])


def inspector_scan(
    account_id: str, region: str, repository: str, digest: str, tags: list[str], counts: dict[str, int]
) -> Event:
    """An ENHANCED scan's first result, as Amazon Inspector announces it for ECR images (``aws.inspector2`` /
    ``Inspector2 Scan``, ``scan-status`` INITIAL_SCAN_COMPLETE; ``repository-name`` is the repository's ARN and
    ``finding-severity-counts`` carries CRITICAL, HIGH, MEDIUM and TOTAL)."""
    arn = repository_arn(region, account_id, repository)
    detail = {
        "scan-status": "INITIAL_SCAN_COMPLETE",
        "repository-name": arn,
        "finding-severity-counts": {
            **{severity: counts.get(severity, 0) for severity in ("CRITICAL", "HIGH", "MEDIUM")},
            "TOTAL": sum(counts.values()),
        },
        "image-digest": digest,
        "image-tags": tags,
    }
    return Event(account_id, INSPECTOR, INSPECTOR_SCAN, detail, [arn])


def scan_resource_change(account_id: str, region: str, changes: list[tuple[str, str, str]]) -> Event:
    """ECR's event when enhanced scanning's rules change repositories' scan frequency: ``changes`` are (repository,
    frequency, previous frequency)."""
    arns = [repository_arn(region, account_id, name) for name, _, _ in changes]
    detail = {
        "action-type": "SCAN_FREQUENCY_CHANGE",
        "repositories": [
            {"repository-name": name, "repository-arn": arn, "scan-frequency": new, "previous-scan-frequency": old}
            for (name, new, old), arn in zip(changes, arns, strict=True)
        ],
        "resource-type": "REPOSITORY",
        "scan-type": "ENHANCED",
    }
    return Event(account_id, ECR, SCAN_RESOURCE_CHANGE, detail, arns)


def replication_action(
    account_id: str,
    region: str,
    repository: str,
    digest: str,
    *,
    source_region: str,
    source_account: str,
    tag: str | None = None,
    result: str = "SUCCESS",
) -> Event:
    """ECR's event in the destination registry for an image replication copied there (``action-type`` REPLICATE)."""
    detail = {
        "result": result,
        "repository-name": repository,
        "image-digest": digest,
        "source-account": source_account,
        "action-type": "REPLICATE",
        "source-region": source_region,
    }
    if tag is not None:
        detail["image-tag"] = tag
    return Event(account_id, ECR, REPLICATION_ACTION, detail, [repository_arn(region, account_id, repository)])


def pull_through_cache_action(
    account_id: str,
    region: str,
    repository: str,
    *,
    prefix: str,
    rule_version: int,
    upstream_url: str,
    digest: str | None = None,
    tag: str | None = None,
    failure_code: str | None = None,
    failure_reason: str | None = None,
) -> Event:
    """ECR's event for a sync of a pull-through cached image with its upstream: ``sync-status`` SUCCESS (the
    image was fetched) or FAILED with ECR's ``failure-code`` and a ``failure-reason``."""
    detail: dict = {
        "rule-version": str(rule_version),
        "sync-status": "FAILED" if failure_code else "SUCCESS",
        "ecr-repository-prefix": prefix,
        "repository-name": repository,
        "upstream-registry-url": upstream_url,
    }
    if tag is not None:
        detail["image-tag"] = tag
    if digest is not None:
        detail["image-digest"] = digest
    if failure_code:
        detail["failure-code"] = failure_code
        detail["failure-reason"] = failure_reason or ""
    return Event(
        account_id, ECR, PULL_THROUGH_CACHE_ACTION, detail, [repository_arn(region, account_id, repository)]
    )
