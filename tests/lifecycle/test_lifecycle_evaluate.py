"""Evaluation semantics beyond the AWS worked examples."""

from __future__ import annotations

from datetime import timedelta

import pytest

from soko.lifecycle import glob_matcher, parse_lifecycle_policy, preview

from ._helpers import NOW, acted, ago, digest, expired, image, policy_text, rule, run

# --- tag matching -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "tag", "match"),
    [
        ("prod", "prod", True),
        ("prod", "prod1", False),  # no wildcard: exact
        ("prod*", "prod", True),  # * matches zero characters
        ("prod*", "production-team1", True),
        ("*prod*", "repo-production", True),
        ("*prod*", "Prod", False),  # case-sensitive
        ("*-sha-*", "main-sha-abc", True),
        ("*-sha-*", "main-sha", False),
        ("a*a", "a", False),  # head and tail may not overlap
        ("a*a", "aa", True),
        ("*test*1*2*3", "xtest-1-2-3", True),
        ("*test*1*2*3", "test123", True),
        ("*test*1*2*3", "test1-3-2", False),
        ("v*.*.*", "v1.2.3", True),
        ("v*.*.*", "v1.2", False),
        ("*", "", True),
        ("*a*a*a*ab", "a" * 300, False),  # would backtrack badly as a regex
        ("**", "anything", True),
    ],
)
def test_glob(pattern: str, tag: str, match: bool) -> None:
    assert glob_matcher(pattern)(tag) is match


def test_prefix_is_not_a_pattern() -> None:
    images = [image("A", ["v*1"], ago(10)), image("B", ["v21"], ago(10))]
    assert expired(policy_text(rule(1, "tagged", "sinceImagePushed", 1, prefixes=["v*"])), images) == ["A"]
    assert expired(policy_text(rule(1, "tagged", "sinceImagePushed", 1, patterns=["v*"])), images) == ["A", "B"]


def test_prefix_vs_pattern_anchor() -> None:
    # A prefix only anchors at the start; a pattern without a leading * does too, and also at the end.
    images = [image("A", ["release-1.0"], ago(10)), image("B", ["pre-release"], ago(10))]
    assert expired(policy_text(rule(1, "tagged", "sinceImagePushed", 1, prefixes=["release"])), images) == ["A"]
    assert expired(policy_text(rule(1, "tagged", "sinceImagePushed", 1, patterns=["release"])), images) == []
    assert expired(policy_text(rule(1, "tagged", "sinceImagePushed", 1, patterns=["*release*"])), images) == ["A", "B"]


def test_each_list_entry_may_match_a_different_tag_but_all_must_match() -> None:
    images = [image("A", ["prod-1", "eu-1"], ago(10)), image("B", ["prod-eu"], ago(10)), image("C", ["prod"], ago(10))]
    text = policy_text(rule(1, "tagged", "sinceImagePushed", 1, patterns=["prod*", "*eu*"]))
    assert expired(text, images) == ["A", "B"]


# --- rule interplay ---------------------------------------------------------------------------------------


def test_keep_rule_shields_matching_images_from_later_rules() -> None:
    # "Keep the 2 newest releases" at priority 1 protects ALL release images from the catch-all rule, even
    # the ones it expires itself are only expired once (by rule 1).
    images = [image(f"R{i}", [f"v{i}"], ago(10 - i)) for i in range(5)] + [image("X", ["dev"], ago(20))]
    text = policy_text(
        rule(1, "tagged", "imageCountMoreThan", 2, patterns=["v*"]),
        rule(2, "any", "sinceImagePushed", 1),
    )
    actions = run(text, images)
    assert [(n, a.rule_priority) for n, a in zip(acted(actions), actions, strict=True)] == [
        ("X", 2),
        ("R0", 1),
        ("R1", 1),
        ("R2", 1),
    ]


def test_lower_rule_counts_images_claimed_by_higher_rule() -> None:
    # Rule 2 keeps the 2 newest "app" images and counts the pinned ones too ("can still identify them"), so
    # D and A are kept and B and C are beyond the count. B matched rule 1, so only C goes. Had rule 2 ignored
    # the pinned images, C and D would be its only images and nothing would be expired.
    images = [
        image("A", ["app-1", "pinned"], ago(1)),
        image("B", ["app-2", "pinned"], ago(2)),
        image("C", ["app-3"], ago(3)),
        image("D", ["app-4"], ago(0.5)),
    ]
    text = policy_text(
        rule(1, "tagged", "imageCountMoreThan", 10, prefixes=["pinned"]),
        rule(2, "tagged", "imageCountMoreThan", 2, prefixes=["app"]),
    )
    actions = run(text, images)
    assert acted(actions) == ["C"]
    assert actions[0].rule_priority == 2


def test_untagged_expire_after_n_days_leaves_tagged_alone() -> None:
    images = [
        image("A", [], ago(8)),
        image("B", [], ago(6)),
        image("C", ["latest"], ago(100)),
        image("D", [], ago(7, hours=0.01)),
    ]
    assert expired(policy_text(rule(1, "untagged", "sinceImagePushed", 7)), images) == ["A", "D"]


def test_image_count_ties_are_broken_by_digest_not_input_order() -> None:
    same = ago(1)
    images = [image(n, [], same) for n in "ABCD"]
    text = policy_text(rule(1, "untagged", "imageCountMoreThan", 2))
    first = run(text, images)
    assert len(first) == 2
    assert run(text, list(reversed(images))) == first


def test_output_is_oldest_first() -> None:
    images = [image("N", [], ago(2)), image("O", [], ago(9)), image("M", [], ago(5))]
    assert expired(policy_text(rule(1, "any", "sinceImagePushed", 1)), images) == ["O", "M", "N"]


def test_huge_day_counts_do_not_overflow() -> None:
    images = [image("A", [], ago(10_000))]
    for number in (999_999_999, 2**31 - 1):
        assert expired(policy_text(rule(1, "any", "sinceImagePushed", number)), images) == []


def test_duplicate_digests_are_a_caller_bug() -> None:
    policy = parse_lifecycle_policy(policy_text(rule(1, "any", "sinceImagePushed", 1)))
    with pytest.raises(ValueError, match="duplicate"):
        preview(policy, [image("A"), image("A")], NOW)


# --- pull time and storage class --------------------------------------------------------------------------


def test_since_image_pulled_expire_and_fallback_to_push_time() -> None:
    images = [
        image("A", ["c1"], ago(300), pulled=ago(31)),
        image("B", ["c2"], ago(300), pulled=ago(29)),
        image("C", ["c3"], ago(40)),  # never pulled
        image("D", ["c4"], ago(20)),  # never pulled, young
        image("E", ["c5"], ago(5), pulled=ago(100)),  # stale pull record from before a re-push
    ]
    assert expired(policy_text(rule(1, "tagged", "sinceImagePulled", 30, prefixes=["c"])), images) == ["A", "C"]


def test_transition_rules_skip_archived_images_and_archive_rules_skip_standard() -> None:
    images = [
        image("S", [], ago(100)),
        image("Z", [], ago(100), storage_class="archive", transitioned=ago(95)),
        image("Q", [], ago(300), storage_class="archive"),  # archive time unknown: left alone
    ]
    text = policy_text(
        rule(1, "untagged", "sinceImagePushed", 30, action="transition"),
        rule(2, "untagged", "sinceImageTransitioned", 90, storage_class="archive"),
    )
    actions = run(text, images)
    assert [(n, a.action, a.storage_class) for n, a in zip(acted(actions), actions, strict=True)] == [
        ("S", "TRANSITION", "STANDARD"),
        ("Z", "EXPIRE", "ARCHIVE"),
    ]


def test_preview_summary() -> None:
    images = [
        image("A", [], ago(100)),
        image("B", [], ago(100), storage_class="archive", transitioned=ago(120)),
        image("C", ["v1"], ago(100)),
        image("D", ["v2"], ago(50)),
    ]
    text = policy_text(
        rule(1, "tagged", "sinceImagePushed", 30, prefixes=["v"], action="transition"),
        rule(2, "untagged", "sinceImagePushed", 30),
        rule(3, "any", "sinceImageTransitioned", 90, storage_class="archive"),
    )
    result = preview(parse_lifecycle_policy(text), images, NOW)
    assert result.expiring_image_total_count == 2
    assert result.transitioning_image_total_counts == {"ARCHIVE": 2}
    assert result.summary() == {
        "expiringImageTotalCount": 2,
        "transitioningImageTotalCounts": [{"targetStorageClass": "ARCHIVE", "imageTotalCount": 2}],
    }
    assert preview(parse_lifecycle_policy(text), [], NOW).summary() == {"expiringImageTotalCount": 0}


# --- manifest lists / indexes ---------------------------------------------------------------------------------

UNTAGGED_1D = policy_text(rule(1, "untagged", "sinceImagePushed", 1))


def test_index_children_kept_while_index_is_kept() -> None:
    images = [
        image("IDX", ["v1"], ago(30)),
        image("amd64", [], ago(30), indexes=["IDX"]),
        image("arm64", [], ago(30), indexes=["IDX"]),
        image("loose", [], ago(30)),
    ]
    assert expired(UNTAGGED_1D, images) == ["loose"]


def test_index_children_go_when_index_goes_in_same_evaluation() -> None:
    images = [
        image("IDX", [], ago(30)),
        image("amd64", [], ago(30), indexes=["IDX"]),
        image("arm64", [], ago(29), indexes=["IDX"]),
    ]
    assert sorted(expired(UNTAGGED_1D, images)) == ["IDX", "amd64", "arm64"]


def test_child_shared_by_two_indexes_needs_both_expired() -> None:
    images = [
        image("OLD", [], ago(30)),
        image("NEW", ["v2"], ago(30)),
        image("shared", [], ago(30), indexes=["OLD", "NEW"]),
        image("only-old", [], ago(30), indexes=["OLD"]),
    ]
    assert sorted(expired(UNTAGGED_1D, images)) == ["OLD", "only-old"]


def test_child_not_selected_is_not_expired_with_its_index() -> None:
    # Children are only expired by a rule that selects them; expiring the index does not cascade.
    images = [image("IDX", ["tmp-1"], ago(30)), image("child", ["tmp-1-amd64"], ago(30), indexes=["IDX"])]
    text = policy_text(rule(1, "tagged", "sinceImagePushed", 1, patterns=["tmp-1"]))
    assert expired(text, images) == ["IDX"]


def test_nested_index_keeps_grandchildren() -> None:
    # OUTER (kept, tagged) -> INNER (untagged) -> leaf (untagged): nothing below OUTER may go.
    images = [
        image("OUTER", ["v1"], ago(30)),
        image("INNER", [], ago(30), indexes=["OUTER"]),
        image("leaf", [], ago(30), indexes=["INNER"]),
    ]
    assert expired(UNTAGGED_1D, images) == []


def test_unknown_index_counts_as_kept() -> None:
    images = [image("child", [], ago(30), indexes=["not-in-this-listing"])]
    assert expired(UNTAGGED_1D, images) == []


def test_index_child_archived_with_or_after_its_index() -> None:
    archive = policy_text(rule(1, "any", "sinceImagePushed", 10, action="transition"))
    images = [image("IDX", ["v1"], ago(30)), image("child", [], ago(30), indexes=["IDX"])]
    assert sorted(acted(run(archive, images), "TRANSITION")) == ["IDX", "child"]
    young_index = [image("IDX", ["v1"], ago(5)), image("child", [], ago(30), indexes=["IDX"])]
    assert acted(run(archive, young_index)) == []
    archived_index = [
        image("IDX", ["v1"], ago(5), storage_class="archive", transitioned=ago(1)),
        image("child", [], ago(30), indexes=["IDX"]),
    ]
    assert acted(run(archive, archived_index)) == ["child"]


def test_children_still_count_for_image_count() -> None:
    # Children are images (as in ECR): an untagged count rule counts them even though it may not expire them.
    images = [
        image("IDX", ["v1"], ago(30)),
        image("c1", [], ago(1), indexes=["IDX"]),
        image("c2", [], ago(2), indexes=["IDX"]),
        image("loose", [], ago(3)),
    ]
    assert expired(policy_text(rule(1, "untagged", "imageCountMoreThan", 2)), images) == ["loose"]


# --- referrers (signatures, SBOMs) -------------------------------------------------------------------------------


def test_referrers_follow_subject_expiry_with_subject_rule_priority() -> None:
    images = [
        image("APP", ["pr-1"], ago(30)),
        image("sig", [], ago(29), subject="APP"),
        image("sbom", [], ago(29), subject="APP"),
        image("sig-of-sbom", [], ago(29), subject="sbom"),
        image("KEEP", ["pr-2"], ago(1)),
        image("keep-sig", [], ago(1), subject="KEEP"),
    ]
    text = policy_text(rule(3, "tagged", "sinceImagePushed", 7, prefixes=["pr-"]))
    actions = run(text, images)
    assert sorted(acted(actions, "EXPIRE")) == ["APP", "sbom", "sig", "sig-of-sbom"]
    assert {a.rule_priority for a in actions} == {3}


def test_referrers_are_not_selected_or_counted_by_rules() -> None:
    # An untagged rule would otherwise delete every signature; and signatures must not use up count slots.
    images = [
        image("A", ["v1"], ago(10)),
        image("sigA", [], ago(10), subject="A"),
        image("B", [], ago(3)),
        image("C", [], ago(2)),
    ]
    assert expired(policy_text(rule(1, "untagged", "sinceImagePushed", 1)), images) == ["B", "C"]
    assert expired(policy_text(rule(1, "untagged", "imageCountMoreThan", 1)), images) == ["B"]


def test_referrer_without_its_subject_is_an_ordinary_image() -> None:
    images = [image("orphan-sig", [], ago(10), subject="deleted-image")]
    assert expired(policy_text(rule(1, "untagged", "sinceImagePushed", 1)), images) == ["orphan-sig"]


def test_referrers_follow_subject_to_archive() -> None:
    images = [
        image("APP", ["v1"], ago(200)),
        image("sig", [], ago(200), subject="APP"),
        image("old-sig", [], ago(200), subject="APP", storage_class="archive", transitioned=ago(100)),
    ]
    actions = run(policy_text(rule(1, "any", "sinceImagePulled", 90, action="transition")), images)
    assert sorted((n, a.action) for n, a in zip(acted(actions), actions, strict=True)) == [
        ("APP", "TRANSITION"),
        ("sig", "TRANSITION"),
    ]


def test_referrer_cycle_is_left_alone() -> None:
    images = [image("X", [], ago(10), subject="Y"), image("Y", [], ago(10), subject="X")]
    assert expired(policy_text(rule(1, "any", "sinceImagePushed", 1)), images) == []


def test_long_referrer_chain_does_not_recurse() -> None:
    images = [image("root", ["t"], ago(10))]
    images += [image(f"r{i}", [], ago(10), subject="root" if i == 0 else f"r{i - 1}") for i in range(5000)]
    assert len(expired(policy_text(rule(1, "tagged", "sinceImagePushed", 1, prefixes=["t"])), images)) == 5001


# --- scale ---------------------------------------------------------------------------------------------------


def test_hundred_thousand_images() -> None:
    start = ago(400)
    images = []
    for i in range(100_000):
        kind = i % 4
        tags = (
            []
            if kind == 0
            else [f"release-{i}"]
            if kind == 1
            else [f"main-{i}", f"sha-{i:x}"]
            if kind == 2
            else [f"pr-{i}"]
        )
        images.append(
            image(
                f"img{i}",
                tags,
                start + timedelta(minutes=5 * i),
                pulled=start + timedelta(minutes=5 * i + 60) if i % 3 == 0 else None,
            )
        )
    text = policy_text(
        rule(1, "tagged", "imageCountMoreThan", 1000, patterns=["release-*"]),
        rule(2, "tagged", "sinceImagePushed", 30, patterns=["main-*", "sha-*"]),
        rule(3, "tagged", "sinceImagePulled", 60, prefixes=["pr-"]),
        rule(4, "untagged", "imageCountMoreThan", 500),
        rule(5, "any", "sinceImagePushed", 365),
    )
    actions = run(text, images)
    by_rule: dict[int, int] = {}
    for a in actions:
        by_rule[a.rule_priority] = by_rule.get(a.rule_priority, 0) + 1
    # 25,000 images of each kind, pushed 5 minutes apart over ~347 days, so nothing is older than 365 days.
    cutoff_30 = sum(1 for i in range(2, 100_000, 4) if start + timedelta(minutes=5 * i) < ago(30))
    # Rule 3 judges by pull time, which for every third image is an hour after its push.
    cutoff_60 = sum(
        1 for i in range(3, 100_000, 4) if start + timedelta(minutes=5 * i + (60 if i % 3 == 0 else 0)) < ago(60)
    )
    assert by_rule == {1: 24_000, 2: cutoff_30, 3: cutoff_60, 4: 24_500}
    assert len({a.digest for a in actions}) == len(actions)
    assert [a.pushed_at for a in actions] == sorted(a.pushed_at for a in actions)
    assert digest("img0") in {a.digest for a in actions}
