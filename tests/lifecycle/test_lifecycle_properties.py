"""Property tests: validation never fails any other way than LifecyclePolicyError; evaluation invariants."""

from __future__ import annotations

import copy
import json
import random
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from soko.lifecycle import (
    EXPIRE,
    TRANSITION,
    ImageRecord,
    LifecyclePolicy,
    LifecyclePolicyError,
    evaluate,
    glob_matcher,
    parse_lifecycle_policy,
)

from ._helpers import NOW, digest, policy_text, rule

# --- validation never crashes ------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["tagged", "untagged", "any", "days", "expire", "transition", "archive", "standard"])
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=30,
)


def _parse_ok_or_policy_error(text: Any) -> None:
    try:
        policy = parse_lifecycle_policy(text)
    except LifecyclePolicyError as exc:
        assert exc.message and isinstance(exc.message, str)
        assert exc.ecr_message.endswith(exc.message + "'")
    else:
        assert isinstance(policy, LifecyclePolicy)


@given(json_values)
def test_arbitrary_json_values(value: Any) -> None:
    _parse_ok_or_policy_error(json.dumps(value))


@given(st.dictionaries(st.just("rules"), st.lists(json_values, max_size=4), min_size=1))
def test_arbitrary_rule_lists(doc: dict[str, Any]) -> None:
    _parse_ok_or_policy_error(json.dumps(doc))


@given(st.text(max_size=200))
def test_arbitrary_text(text: str) -> None:
    _parse_ok_or_policy_error(text)


SEED_POLICIES = [
    json.loads(
        policy_text(
            rule(1, "tagged", "imageCountMoreThan", 3, prefixes=["prod"]),
            rule(2, "tagged", "sinceImagePulled", 30, patterns=["*rc*"], action="transition"),
            rule(3, "untagged", "sinceImagePushed", 7),
            rule(4, "any", "sinceImageTransitioned", 90, storage_class="archive"),
        )
    )
]


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for key, child in node.items():
            out += _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            out += _paths(child, (*prefix, i))
    return out


@given(st.randoms(use_true_random=False), json_values, st.sampled_from(["replace", "delete", "add"]))
def test_mutated_valid_policy(rnd: random.Random, value: Any, op: str) -> None:
    doc = copy.deepcopy(SEED_POLICIES[0])
    path = rnd.choice(_paths(doc)[1:])
    parent: Any = doc
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if op == "replace":
        parent[last] = value
    elif op == "delete":
        del parent[last]
    elif isinstance(parent[last], dict):
        parent[last]["extra"] = value
    else:
        parent[last] = [parent[last], value]
    _parse_ok_or_policy_error(json.dumps(doc))


@given(st.text(alphabet="ab*", max_size=12), st.text(alphabet="ab", max_size=12))
def test_glob_agrees_with_fnmatch_style_reference(pattern: str, tag: str) -> None:
    import re

    reference = re.fullmatch(".*".join(re.escape(part) for part in pattern.split("*")), tag, re.DOTALL)
    assert glob_matcher(pattern)(tag) is (reference is not None)


# --- evaluation invariants ---------------------------------------------------------------------------------

TAGS = ["prod-1", "prod-2", "beta-1", "rc1", "v1", "v2", "latest", "main-abc"]
PREFIX_CHOICES = ["prod", "beta", "v", "rc", "main-", "l"]
PATTERN_CHOICES = ["prod*", "*1", "*rc*", "v*", "main-*", "latest", "*-*"]


@st.composite
def image_sets(draw: st.DrawFn) -> list[ImageRecord]:
    count = draw(st.integers(min_value=0, max_value=14))
    names = [f"img{i}" for i in range(count)]
    images = []
    for i, name in enumerate(names):
        archived = draw(st.booleans()) and draw(st.booleans())
        pushed = NOW - timedelta(hours=draw(st.integers(min_value=0, max_value=24 * 200)))
        earlier = names[:i]
        indexes = draw(st.lists(st.sampled_from(earlier), unique=True, max_size=2)) if earlier else []
        subject = draw(st.none() | st.sampled_from(names)) if draw(st.integers(0, 3)) == 0 else None
        pulled = draw(st.none() | st.integers(min_value=0, max_value=24 * 200))
        images.append(
            ImageRecord(
                digest=digest(name),
                tags=tuple(draw(st.lists(st.sampled_from(TAGS), unique=True, max_size=3))),
                pushed_at=pushed,
                last_pulled_at=None if pulled is None else NOW - timedelta(hours=pulled),
                storage_class="archive" if archived else "standard",
                transitioned_at=NOW - timedelta(days=draw(st.integers(0, 400))) if archived else None,
                referenced_by_index=tuple(digest(n) for n in indexes),
                subject=digest(subject) if subject else None,
            )
        )
    return images


@st.composite
def policies(draw: st.DrawFn) -> LifecyclePolicy:
    rules: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        use_prefix = draw(st.booleans())
        values = draw(
            st.lists(
                st.sampled_from(PREFIX_CHOICES if use_prefix else PATTERN_CHOICES), unique=True, min_size=1, max_size=2
            )
        )
        rules.append(_standard_rule(draw, "tagged", **({"prefixes": values} if use_prefix else {"patterns": values})))
    if draw(st.booleans()):
        rules.append(_standard_rule(draw, "untagged"))
    if draw(st.booleans()):
        rules.append(_standard_rule(draw, "any"))
    # Any order of the tagged/untagged rules is valid; an "any" rule must stay last.
    last = [rules.pop()] if rules and rules[-1]["selection"]["tagStatus"] == "any" else []
    draw(st.randoms(use_true_random=False)).shuffle(rules)
    rules += last
    if draw(st.booleans()):
        tag_status = draw(st.sampled_from(["tagged", "untagged", "any"]))
        extra = {"patterns": [draw(st.sampled_from(PATTERN_CHOICES))]} if tag_status == "tagged" else {}
        rules.append(
            rule(0, tag_status, "sinceImageTransitioned", draw(st.integers(90, 200)), storage_class="archive", **extra)
        )
    assume(rules)
    priority = 0
    for r in rules:  # increasing, with gaps
        priority += draw(st.integers(1, 3))
        r["rulePriority"] = priority
    try:
        return parse_lifecycle_policy(policy_text(*rules))
    except LifecyclePolicyError:
        assume(False)
        raise


def _standard_rule(draw: st.DrawFn, tag_status: str, **lists: Any) -> dict[str, Any]:
    count_type = draw(st.sampled_from(["imageCountMoreThan", "sinceImagePushed", "sinceImagePulled"]))
    number = draw(st.integers(1, 5)) if count_type == "imageCountMoreThan" else draw(st.integers(1, 150))
    action = draw(st.sampled_from(["expire", "transition"]))
    return rule(0, tag_status, count_type, number, action=action, **lists)


def _tag_match(values: tuple[str, ...], prefix: bool, tags: tuple[str, ...]) -> bool:
    if prefix:
        return all(any(t.startswith(v) for t in tags) for v in values)
    return all(any(glob_matcher(v)(t) for t in tags) for v in values)


def _selects(r: Any, img: ImageRecord) -> bool:
    sel = r.selection
    if img.storage_class != sel.storage_class:
        return False
    if sel.tag_status == "any":
        return True
    if sel.tag_status == "untagged":
        return not img.tags
    if sel.tag_prefix_list:
        return bool(img.tags) and _tag_match(sel.tag_prefix_list, True, img.tags)
    return bool(img.tags) and _tag_match(sel.tag_pattern_list, False, img.tags)


def _reference(policy: LifecyclePolicy, images: list[ImageRecord]) -> dict[str, tuple[int, str]]:
    """A direct, quadratic reading of the AWS rules for repositories without indexes or referrers."""
    out: dict[str, tuple[int, str]] = {}
    for img in images:
        for r in policy.rules:  # lowest priority number first
            if not _selects(r, img):
                continue
            sel = r.selection
            cutoff = NOW - timedelta(days=sel.count_number) if sel.count_type != "imageCountMoreThan" else None
            if sel.count_type == "imageCountMoreThan":
                newer = [o for o in images if _selects(r, o) and (o.pushed_at, o.digest) > (img.pushed_at, img.digest)]
                due = len(newer) >= sel.count_number
            elif sel.count_type == "sinceImagePushed":
                due = img.pushed_at < cutoff
            elif sel.count_type == "sinceImagePulled":
                due = max(img.last_pulled_at or img.pushed_at, img.pushed_at) < cutoff
            else:
                due = img.transitioned_at is not None and img.transitioned_at < cutoff
            if due:
                out[img.digest] = (r.rule_priority, TRANSITION if r.action.type == "transition" else EXPIRE)
            break  # the first rule whose selection matches owns the image, acting or not
    return out


SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow]
)


@SETTINGS
@given(policies(), image_sets())
def test_matches_reference_model_without_indexes_or_referrers(
    policy: LifecyclePolicy, images: list[ImageRecord]
) -> None:
    plain = [
        ImageRecord(i.digest, i.tags, i.pushed_at, i.last_pulled_at, i.storage_class, i.transitioned_at) for i in images
    ]
    got = {a.digest: (a.rule_priority, a.action) for a in evaluate(policy, plain, NOW)}
    assert got == _reference(policy, plain)


@SETTINGS
@given(policies(), image_sets(), st.randoms(use_true_random=False))
def test_evaluation_invariants(policy: LifecyclePolicy, images: list[ImageRecord], rnd: random.Random) -> None:
    actions = evaluate(policy, images, NOW)
    by_digest = {i.digest: i for i in images}
    acted = {a.digest: a for a in actions}

    assert len(acted) == len(actions), "an image was acted on twice"
    assert [(a.pushed_at, a.digest) for a in actions] == sorted((a.pushed_at, a.digest) for a in actions)

    for a in actions:
        img = by_digest[a.digest]
        assert (a.target_storage_class == "ARCHIVE") is (a.action == TRANSITION)
        if a.action == TRANSITION:
            assert img.storage_class == "standard"
        for index in img.referenced_by_index:
            if a.action == EXPIRE:
                assert index in acted and acted[index].action == EXPIRE, "index child expired before its index"
            else:
                assert index in acted or by_digest[index].storage_class == "archive"
        if img.subject in by_digest and img.subject != img.digest:
            assert img.subject in acted, "referrer acted on without its subject"
            assert acted[img.subject].rule_priority == a.rule_priority

    shuffled = list(images)
    rnd.shuffle(shuffled)
    assert evaluate(policy, shuffled, NOW) == actions
