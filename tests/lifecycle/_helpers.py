"""Shared builders for lifecycle tests: images are named ("A", "B", ...), policies are built as dicts."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from soko.lifecycle import ImageRecord, LifecycleAction, evaluate, parse_lifecycle_policy
from tests.oci.helpers import sha256

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def ago(days: float = 0, hours: float = 0) -> datetime:
    return NOW - timedelta(days=days, hours=hours)


def digest(name: str) -> str:
    return sha256(name.encode())


_NAME_OF: dict[str, str] = {}


def image(
    name: str,
    tags: Iterable[str] = (),
    pushed: datetime = NOW,
    *,
    pulled: datetime | None = None,
    storage_class: str = "standard",
    transitioned: datetime | None = None,
    indexes: Iterable[str] = (),
    subject: str | None = None,
) -> ImageRecord:
    """An image whose digest is derived from ``name``; ``indexes``/``subject`` are names too."""
    img = ImageRecord(
        digest=digest(name),
        tags=tuple(tags),
        pushed_at=pushed,
        last_pulled_at=pulled,
        storage_class=storage_class,
        transitioned_at=transitioned,
        referenced_by_index=tuple(digest(n) for n in indexes),
        subject=digest(subject) if subject is not None else None,
    )
    _NAME_OF[img.digest] = name
    return img


def rule(
    priority: int,
    tag_status: str,
    count_type: str,
    count_number: int,
    *,
    prefixes: list[str] | None = None,
    patterns: list[str] | None = None,
    storage_class: str | None = None,
    action: str = "expire",
) -> dict[str, Any]:
    selection: dict[str, Any] = {"tagStatus": tag_status, "countType": count_type, "countNumber": count_number}
    if count_type != "imageCountMoreThan":
        selection["countUnit"] = "days"
    if prefixes is not None:
        selection["tagPrefixList"] = prefixes
    if patterns is not None:
        selection["tagPatternList"] = patterns
    if storage_class is not None:
        selection["storageClass"] = storage_class
    act: dict[str, Any] = {"type": action}
    if action == "transition":
        act["targetStorageClass"] = "archive"
    return {"rulePriority": priority, "selection": selection, "action": act}


def policy_text(*rules: dict[str, Any]) -> str:
    return json.dumps({"rules": list(rules)})


def run(text: str, images: list[ImageRecord], now: datetime = NOW) -> list[LifecycleAction]:
    return evaluate(parse_lifecycle_policy(text), images, now)


def acted(actions: list[LifecycleAction], kind: str | None = None) -> list[str]:
    """Names of the images acted on (optionally only EXPIRE or TRANSITION), in result order."""
    return [_NAME_OF[a.digest] for a in actions if kind is None or a.action == kind]


def expired(text: str, images: list[ImageRecord], now: datetime = NOW) -> list[str]:
    return acted(run(text, images, now), "EXPIRE")
