"""ECR lifecycle policy evaluation: which images a policy expires or archives, and why.

Semantics follow the AWS user guide ("Lifecycle policy evaluation rules" and "Examples of lifecycle policies
in Amazon ECR"); the tests reproduce every worked example there. Pure function of its inputs: the caller
supplies the repository's images and the clock, and applies (or previews) the returned actions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from soko.lifecycle.policy import LifecyclePolicy, Selection

EXPIRE = "EXPIRE"
TRANSITION = "TRANSITION"


@dataclass(frozen=True)
class ImageRecord:
    """One image (manifest) in a repository. All datetimes must share one convention (aware UTC)."""

    digest: str
    tags: tuple[str, ...]
    pushed_at: datetime
    last_pulled_at: datetime | None
    storage_class: str = "standard"  # "standard" | "archive"
    transitioned_at: datetime | None = None
    referenced_by_index: tuple[
        str, ...
    ] = ()  # digests of manifest lists/indexes in this repo that reference this image
    subject: str | None = None  # for referrers (signatures/SBOMs): the subject manifest digest


@dataclass(frozen=True)
class LifecycleAction:
    """What the policy does to one image, shaped like ECR's LifecyclePolicyPreviewResult."""

    digest: str
    tags: tuple[str, ...]
    pushed_at: datetime
    rule_priority: int
    action: str  # "EXPIRE" | "TRANSITION"
    target_storage_class: str | None  # "ARCHIVE" for TRANSITION, else None
    storage_class: str = "STANDARD"  # the image's storage class before the action ("STANDARD" | "ARCHIVE")


@dataclass(frozen=True)
class LifecyclePreview:
    results: tuple[LifecycleAction, ...]
    expiring_image_total_count: int
    transitioning_image_total_counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The GetLifecyclePolicyPreview ``summary`` member (transition counts only when there are any)."""
        out: dict[str, Any] = {"expiringImageTotalCount": self.expiring_image_total_count}
        if self.transitioning_image_total_counts:
            out["transitioningImageTotalCounts"] = [
                {"targetStorageClass": target, "imageTotalCount": count}
                for target, count in sorted(self.transitioning_image_total_counts.items())
            ]
        return out


def evaluate(policy: LifecyclePolicy, images: Sequence[ImageRecord], now: datetime) -> list[LifecycleAction]:
    """Actions the policy takes on ``images`` at ``now``, oldest image first.

    Evaluation rules (AWS user guide, "Lifecycle policy evaluation rules"):
    * "All rules are evaluated at the same time ... then applied based on rule priority" and "An image is
      expired or archived by exactly one or zero rules".
    * "An image that matches the tagging requirements of a rule cannot be expired or archived by a rule with
      a lower priority" -- even when that rule keeps it (multiple-rules example B, all-images example B).
    * "Rules can never mark images that are marked by higher priority rules, but can still identify them as
      if they haven't been expired": a lower rule still *counts* those images for imageCountMoreThan
      (multiple-rules example A: Rule 2 counts Image A, so only Image C is kept and B is skipped).
    * "If an image is referenced by a manifest list, it cannot be expired or archived without the manifest
      list being deleted or archived first": see :func:`_protect_index_children`.
    * "When reference artifacts are present ... lifecycle policies automatically expire or archive those
      artifacts ... [after] the deletion or archival of the subject image": see :func:`_follow_subjects`.
    """
    by_digest: dict[str, ImageRecord] = {}
    for image in images:
        if image.digest in by_digest:
            raise ValueError(f"duplicate image digest {image.digest}")
        by_digest[image.digest] = image
    # Referrers whose subject is present only follow it; they are not selected or counted by rules, so
    # signatures never use up an imageCountMoreThan slot. A referrer whose subject is gone is an ordinary image.
    followers = {
        d for d, img in by_digest.items() if img.subject is not None and img.subject != d and img.subject in by_digest
    }
    # A rule only ever selects images of its own storage class.
    pools: dict[str, list[ImageRecord]] = defaultdict(list)
    for d, img in by_digest.items():
        if d not in followers:
            pools[img.storage_class].append(img)
    unclaimed = {sc: list(pool) for sc, pool in pools.items()}

    decided: dict[str, LifecycleAction] = {}
    claimed: set[str] = set()  # images matched by the selection of an already-applied (higher priority) rule
    for rule in policy.rules:
        selection = rule.selection
        sc = selection.storage_class
        kind = TRANSITION if rule.action.type == "transition" else EXPIRE
        matches = _tag_selector(selection)
        if selection.count_type == "imageCountMoreThan":
            # Counting needs every matching image, claimed or not; only unclaimed ones may be acted on.
            pool = pools.get(sc, [])
            matched = pool if matches is None else [img for img in pool if matches(img.tags)]
            for img in _due(selection, matched, now):
                if img.digest not in claimed:
                    decided[img.digest] = _action(img, rule.rule_priority, kind)
            claimed.update(img.digest for img in matched)
            unclaimed[sc] = [img for img in unclaimed.get(sc, []) if img.digest not in claimed]
        else:
            # Age rules look at each image on its own, so claimed images need not even be visited.
            rest = unclaimed.get(sc, [])
            matched = rest if matches is None else [img for img in rest if matches(img.tags)]
            for img in _due(selection, matched, now):
                decided[img.digest] = _action(img, rule.rule_priority, kind)
            claimed.update(img.digest for img in matched)
            unclaimed[sc] = [] if matches is None else [img for img in rest if img.digest not in claimed]

    _protect_index_children(decided, by_digest)
    _follow_subjects(decided, by_digest, followers)
    return sorted(decided.values(), key=lambda a: (a.pushed_at, a.digest))


def preview(policy: LifecyclePolicy, images: Sequence[ImageRecord], now: datetime) -> LifecyclePreview:
    """Same evaluation as :func:`evaluate`, plus GetLifecyclePolicyPreview's summary counts."""
    results = evaluate(policy, images, now)
    transitions: dict[str, int] = defaultdict(int)
    for act in results:
        if act.action == TRANSITION and act.target_storage_class:
            transitions[act.target_storage_class] += 1
    expiring = sum(1 for act in results if act.action == EXPIRE)
    return LifecyclePreview(tuple(results), expiring, dict(transitions))


# --- selection ---------------------------------------------------------------------------------------------


def glob_matcher(pattern: str) -> Callable[[str], bool]:
    """Case-sensitive glob where ``*`` matches zero or more characters; linear time, no regex backtracking."""
    if "*" not in pattern:
        return pattern.__eq__
    head, *middle, tail = pattern.split("*")
    min_len = len(pattern) - pattern.count("*")

    def match(tag: str) -> bool:
        if len(tag) < min_len or not tag.startswith(head) or not tag.endswith(tail):
            return False
        pos, end = len(head), len(tag) - len(tail)
        for part in middle:  # leftmost match of each literal is always safe for `*`-only globs
            found = tag.find(part, pos, end)
            if found < 0:
                return False
            pos = found + len(part)
        return True

    return match


def _tag_selector(selection: Selection) -> Callable[[tuple[str, ...]], bool] | None:
    """Predicate on an image's tags for the rule's tag criteria; None when every image matches ("any")."""
    if selection.tag_status == "any":
        return None
    if selection.tag_status == "untagged":
        return _no_tags
    if selection.tag_prefix_list:
        entries = [_any_tag_starts_with(p) for p in selection.tag_prefix_list]
    else:
        entries = [_any_tag_matches(p) for p in selection.tag_pattern_list]
    if len(entries) == 1:
        return entries[0]
    # Every list entry must match at least one of the image's tags (AND across entries).
    return lambda tags: all(entry(tags) for entry in entries)


def _no_tags(tags: tuple[str, ...]) -> bool:
    return not tags


# Matchers over an image's whole tag tuple, specialised because they run once per image per rule.
def _any_tag_starts_with(prefix: str) -> Callable[[tuple[str, ...]], bool]:
    return lambda tags: any(tag.startswith(prefix) for tag in tags)


def _any_tag_matches(pattern: str) -> Callable[[tuple[str, ...]], bool]:
    stars = pattern.count("*")
    if stars == 0:
        return lambda tags: pattern in tags
    if stars == 1 and pattern.endswith("*"):
        return _any_tag_starts_with(pattern[:-1])
    match = glob_matcher(pattern)
    return lambda tags: any(map(match, tags))


def _cutoff(now: datetime, days: int) -> datetime | None:
    try:
        return now - timedelta(days=days)
    except OverflowError:  # further back than datetime can represent: nothing is that old
        return None


def _due(selection: Selection, matched: list[ImageRecord], now: datetime) -> list[ImageRecord]:
    """Images of ``matched`` that meet the rule's count criterion (before priority is considered)."""
    n = selection.count_number
    if selection.count_type == "imageCountMoreThan":
        if len(matched) <= n:
            return []
        # Newest first by push time; the digest breaks ties so the result never depends on input order.
        return sorted(matched, key=lambda img: (img.pushed_at, img.digest), reverse=True)[n:]
    cutoff = _cutoff(now, n)
    if cutoff is None:
        return []
    if selection.count_type == "sinceImagePushed":
        return [img for img in matched if img.pushed_at < cutoff]
    if selection.count_type == "sinceImagePulled":
        # Never pulled: fall back to push time (AWS). max() also keeps a re-pushed image from being judged
        # by a stale pull record.
        return [img for img in matched if max(img.last_pulled_at or img.pushed_at, img.pushed_at) < cutoff]
    # sinceImageTransitioned: an archived image without a recorded archive time is left alone.
    return [img for img in matched if img.transitioned_at is not None and img.transitioned_at < cutoff]


def _action(img: ImageRecord, priority: int, kind: str) -> LifecycleAction:
    return LifecycleAction(
        img.digest,
        img.tags,
        img.pushed_at,
        priority,
        kind,
        "ARCHIVE" if kind == TRANSITION else None,
        _API_STORAGE_CLASS.get(img.storage_class) or img.storage_class.upper(),
    )


_API_STORAGE_CLASS = {"standard": "STANDARD", "archive": "ARCHIVE"}


# --- manifest lists and referrers --------------------------------------------------------------------------


def _blocked(
    img: ImageRecord, act: LifecycleAction, decided: dict[str, LifecycleAction], by_digest: dict[str, ImageRecord]
) -> bool:
    """Whether an index that references ``img`` is kept, which forbids ``act``.

    A child may be expired only when every index referencing it is expired in the same evaluation, and
    archived only when every such index is being expired or archived, or already is archived. An index we
    were not told about counts as kept.
    """
    for index in img.referenced_by_index:
        index_act = decided.get(index)
        if act.action == EXPIRE:
            if index_act is None or index_act.action != EXPIRE:
                return True
        elif index_act is None:
            index_img = by_digest.get(index)
            if index_img is None or index_img.storage_class != "archive":
                return True
    return False


def _protect_index_children(decided: dict[str, LifecycleAction], by_digest: dict[str, ImageRecord]) -> None:
    """Drop actions on index children whose index stays; cascades through nested indexes."""
    children: dict[str, list[str]] = defaultdict(list)
    pending: list[str] = []
    for digest in decided:
        parents = by_digest[digest].referenced_by_index
        for index in parents:
            children[index].append(digest)
        if parents:
            pending.append(digest)
    while pending:
        digest = pending.pop()
        act = decided.get(digest)
        if act is not None and _blocked(by_digest[digest], act, decided, by_digest):
            del decided[digest]
            pending.extend(children.get(digest, ()))  # a kept nested index keeps its own children too


def _follow_subjects(
    decided: dict[str, LifecycleAction], by_digest: dict[str, ImageRecord], followers: set[str]
) -> None:
    """Give each referrer its subject's fate: expired with it, archived with it (if not archived already)."""
    resolved: dict[str, LifecycleAction | None] = {}
    for start in sorted(followers):
        path: list[str] = []
        on_path: set[str] = set()
        cur = start
        while cur in followers and cur not in resolved and cur not in on_path:
            path.append(cur)
            on_path.add(cur)
            cur = by_digest[cur].subject  # type: ignore[assignment]  # followers always have a subject
        if cur in resolved:
            subject_act = resolved[cur]
        elif cur in on_path:  # a cycle of referrers with no real subject: leave them alone
            subject_act = None
        else:
            subject_act = decided.get(cur)
        for digest in reversed(path):
            img = by_digest[digest]
            act = _follow(img, subject_act)
            if act is not None and _blocked(img, act, decided, by_digest):
                act = None
            resolved[digest] = act
            if act is not None:
                decided[digest] = act
            subject_act = act


def _follow(img: ImageRecord, subject_act: LifecycleAction | None) -> LifecycleAction | None:
    if subject_act is None:
        return None
    if subject_act.action == EXPIRE:
        return _action(img, subject_act.rule_priority, EXPIRE)
    if img.storage_class == "archive":
        return None
    return _action(img, subject_act.rule_priority, TRANSITION)


__all__ = [
    "EXPIRE",
    "TRANSITION",
    "ImageRecord",
    "LifecycleAction",
    "LifecyclePreview",
    "evaluate",
    "glob_matcher",
    "preview",
]
