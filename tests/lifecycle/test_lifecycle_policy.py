"""Lifecycle policy validation: accepted shapes and each rejection with its exact message."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from soko.lifecycle import (
    LifecyclePolicyError,
    RuleAction,
    Selection,
    invalid_parameter_message,
    parse_lifecycle_policy,
)

from ._helpers import policy_text, rule

UNTAGGED_14 = rule(1, "untagged", "sinceImagePushed", 14)


def _reject(text: str) -> str:
    with pytest.raises(LifecyclePolicyError) as info:
        parse_lifecycle_policy(text)
    return info.value.message


def _with(base: dict[str, Any], path: str, value: Any) -> str:
    """``base`` as a one-rule policy with the dotted ``path`` set to ``value`` (``...`` deletes it)."""
    doc = {"rules": [copy.deepcopy(base)]}
    node: Any = doc["rules"][0]
    *parents, last = path.split(".")
    for key in parents:
        node = node[key]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return json.dumps(doc)


# --- accepted ------------------------------------------------------------------------------------------------


def test_parses_into_model_sorted_by_priority() -> None:
    text = policy_text(
        rule(10, "any", "imageCountMoreThan", 100),
        rule(2, "tagged", "sinceImagePulled", 30, patterns=["release-*"], action="transition"),
        rule(5, "untagged", "sinceImagePushed", 7),
    )
    policy = parse_lifecycle_policy(text)
    assert [r.rule_priority for r in policy.rules] == [2, 5, 10]
    pulled = policy.rules[0]
    assert pulled.selection == Selection(
        tag_status="tagged",
        count_type="sinceImagePulled",
        count_number=30,
        count_unit="days",
        tag_pattern_list=("release-*",),
        storage_class="standard",
    )
    assert pulled.action == RuleAction("transition", "archive")
    assert pulled.description is None


def test_description_and_sinceimagepulled_expire_soko_extension() -> None:
    r = rule(1, "tagged", "sinceImagePulled", 30, prefixes=["cache-"])
    r["description"] = "drop cache images nobody pulls"
    policy = parse_lifecycle_policy(policy_text(r))
    assert policy.rules[0].description == "drop cache images nobody pulls"
    assert policy.rules[0].action == RuleAction("expire")


def test_four_wildcards_allowed() -> None:
    parse_lifecycle_policy(
        policy_text(rule(1, "tagged", "imageCountMoreThan", 1, patterns=["*test*1*2*3", "test*1*2*3*"]))
    )


def test_gaps_in_priorities_and_fifty_rules_allowed() -> None:
    rules = [rule(i * 7 + 1, "tagged", "imageCountMoreThan", 5, prefixes=[f"p{i}"]) for i in range(50)]
    assert len(parse_lifecycle_policy(policy_text(*rules)).rules) == 50


def test_untagged_rule_per_storage_class_and_any_last_per_class() -> None:
    parse_lifecycle_policy(
        policy_text(
            rule(1, "untagged", "sinceImagePushed", 30, action="transition"),
            rule(2, "any", "sinceImagePushed", 60, action="transition"),
            rule(3, "untagged", "sinceImageTransitioned", 90, storage_class="archive"),
            rule(4, "any", "sinceImageTransitioned", 365, storage_class="archive"),
        )
    )


def test_overlapping_but_distinct_prefix_sets_allowed() -> None:
    parse_lifecycle_policy(
        policy_text(
            rule(1, "tagged", "imageCountMoreThan", 1, prefixes=["prod", "v1"]),
            rule(2, "tagged", "imageCountMoreThan", 1, prefixes=["prod"]),
        )
    )


# --- rejected: exact messages --------------------------------------------------------------------------------

R = rule(1, "tagged", "imageCountMoreThan", 3, prefixes=["prod"])

CASES: list[tuple[str, str, str]] = [
    ("not json", "{rules: []}", "Could not map policyString into LifecyclePolicy."),
    ("empty", "", "Could not map policyString into LifecyclePolicy."),
    ("top-level array", "[]", 'instance type (array) does not match any allowed primitive type (allowed: ["object"])'),
    ("missing rules", "{}", 'object has missing required properties (["rules"])'),
    (
        "unknown top-level key",
        '{"rules": [], "version": 1}',
        'object instance has properties which are not allowed by the schema: ["version"]',
    ),
    (
        "rules not array",
        '{"rules": {}}',
        'instance type (object) does not match any allowed primitive type (allowed: ["array"])',
    ),
    ("no rules", '{"rules": []}', "array is too short: must have at least 1 elements but instance has 0 elements"),
    (
        "rule not object",
        '{"rules": ["x"]}',
        'instance type (string) does not match any allowed primitive type (allowed: ["object"])',
    ),
    (
        "NaN",
        '{"rules": [{"rulePriority": NaN}]}',
        "Could not map policyString into LifecyclePolicy.",
    ),
    (
        "duplicate key",
        '{"rules": [], "rules": []}',
        'Could not map policyString into LifecyclePolicy. Duplicate field "rules"',
    ),
    ("too long integer", '{"rules": [' + "9" * 5000 + "]}", "Could not map policyString into LifecyclePolicy."),
    ("deep nesting", "[" * 20000 + "]" * 10000, "Could not map policyString into LifecyclePolicy."),
    ("overflowing float", '{"rules": [1e999]}', "Could not map policyString into LifecyclePolicy."),
    (
        "unknown rule key",
        _with(R, "priority", 1),
        'object instance has properties which are not allowed by the schema: ["priority"]',
    ),
    (
        "unknown selection key",
        _with(R, "selection.tagPrefix", ["x"]),
        'object instance has properties which are not allowed by the schema: ["tagPrefix"]',
    ),
    (
        "unknown action key",
        _with(R, "action.force", True),
        'object instance has properties which are not allowed by the schema: ["force"]',
    ),
    ("missing priority", _with(R, "rulePriority", ...), 'object has missing required properties (["rulePriority"])'),
    ("missing action", _with(R, "action", ...), 'object has missing required properties (["action"])'),
    ("missing action type", _with(R, "action.type", ...), 'object has missing required properties (["type"])'),
    (
        "missing countNumber",
        _with(R, "selection.countNumber", ...),
        'object has missing required properties (["countNumber"])',
    ),
    (
        "float priority",
        _with(R, "rulePriority", 1.0),
        'instance type (number) does not match any allowed primitive type (allowed: ["integer"])',
    ),
    (
        "boolean priority",
        _with(R, "rulePriority", True),
        'instance type (boolean) does not match any allowed primitive type (allowed: ["integer"])',
    ),
    (
        "string countNumber",
        _with(R, "selection.countNumber", "3"),
        'instance type (string) does not match any allowed primitive type (allowed: ["integer"])',
    ),
    (
        "null countNumber",
        _with(R, "selection.countNumber", None),
        'instance type (null) does not match any allowed primitive type (allowed: ["integer"])',
    ),
    (
        "zero countNumber",
        _with(R, "selection.countNumber", 0),
        "countNumber must be at least 1: numeric instance is lower than the required minimum (minimum: 1, found: 0)",
    ),
    (
        "negative priority",
        _with(R, "rulePriority", -1),
        "numeric instance is lower than the required minimum (minimum: 1, found: -1)",
    ),
    (
        "huge countNumber",
        _with(R, "selection.countNumber", 10**20),
        "numeric instance is greater than the required maximum (maximum: 2147483647, found: 100000000000000000000)",
    ),
    (
        "description not string",
        _with(R, "description", 5),
        'instance type (integer) does not match any allowed primitive type (allowed: ["string"])',
    ),
    (
        "bad tagStatus",
        _with(R, "selection.tagStatus", "TAGGED"),
        'instance value ("TAGGED") not found in enum (possible values: ["tagged","untagged","any"])',
    ),
    (
        "bad countType",
        _with(R, "selection.countType", "imageCountLessThan"),
        'instance value ("imageCountLessThan") not found in enum (possible values: '
        '["imageCountMoreThan","sinceImagePushed","sinceImagePulled","sinceImageTransitioned"])',
    ),
    (
        "bad countUnit",
        _with(UNTAGGED_14, "selection.countUnit", "hours"),
        'instance value ("hours") not found in enum (possible values: ["days"])',
    ),
    (
        "bad action type",
        _with(R, "action.type", "delete"),
        'instance value ("delete") not found in enum (possible values: ["expire","transition"])',
    ),
    (
        "list as tagStatus",
        _with(R, "selection.tagStatus", ["tagged"]),
        'instance value (array) not found in enum (possible values: ["tagged","untagged","any"])',
    ),
    (
        "countUnit with imageCountMoreThan",
        _with(R, "selection.countUnit", "days"),
        'countUnit must not be specified when countType is "imageCountMoreThan"',
    ),
    (
        "missing countUnit",
        _with(UNTAGGED_14, "selection.countUnit", ...),
        'countUnit is required when countType is "sinceImagePushed"',
    ),
    (
        "tagged without lists",
        _with(R, "selection.tagPrefixList", ...),
        'A rule with tagStatus "tagged" requires a tagPrefixList or a tagPatternList',
    ),
    (
        "both lists",
        _with(R, "selection.tagPatternList", ["prod*"]),
        "A rule may specify either tagPatternList or tagPrefixList, but not both",
    ),
    (
        "untagged with prefix",
        _with(UNTAGGED_14, "selection.tagPrefixList", ["x"]),
        'tagPrefixList and tagPatternList may only be used when tagStatus is "tagged"',
    ),
    (
        "empty prefix list",
        _with(R, "selection.tagPrefixList", []),
        "array is too short: must have at least 1 elements but instance has 0 elements",
    ),
    (
        "empty prefix",
        _with(R, "selection.tagPrefixList", [""]),
        'string "" is too short (length: 0, required minimum: 1)',
    ),
    (
        "non-string prefix",
        _with(R, "selection.tagPrefixList", [1]),
        'instance type (integer) does not match any allowed primitive type (allowed: ["string"])',
    ),
    (
        "duplicate prefix in list",
        _with(R, "selection.tagPrefixList", ["a", "a"]),
        "array must not contain duplicate elements",
    ),
    (
        "too many wildcards",
        _with(R, "selection.tagPrefixList", ...).replace(
            '"countType"', '"tagPatternList": ["test*1*2*3*4*5*6"], "countType"'
        ),
        'tagPatternList entry "test*1*2*3*4*5*6" has 6 wildcards; at most 4 are allowed per pattern',
    ),
    (
        "transition without target",
        _with(R, "action.type", "transition"),
        'targetStorageClass is required when the action type is "transition"',
    ),
    (
        "expire with target",
        _with(R, "action.targetStorageClass", "archive"),
        'targetStorageClass may only be specified when the action type is "transition"',
    ),
    (
        "bad target",
        _with(R, "action.targetStorageClass", "glacier"),
        'instance value ("glacier") not found in enum (possible values: ["archive"])',
    ),
    (
        "bad storage class",
        _with(R, "selection.storageClass", "cold"),
        'instance value ("cold") not found in enum (possible values: ["standard","archive"])',
    ),
    (
        "archive with count rule",
        _with(R, "selection.storageClass", "archive"),
        'storageClass "archive" may only be used with countType "sinceImageTransitioned"',
    ),
    (
        "transitioned without archive",
        json.dumps({"rules": [rule(1, "any", "sinceImageTransitioned", 90)]}),
        'countType "sinceImageTransitioned" requires storageClass "archive"',
    ),
    (
        "transitioned under 90 days",
        json.dumps({"rules": [rule(1, "any", "sinceImageTransitioned", 30, storage_class="archive")]}),
        'countNumber must be at least 90 with countType "sinceImageTransitioned" (archived images are kept at least '
        "90 days): numeric instance is lower than the required minimum (minimum: 90, found: 30)",
    ),
    (
        "transitioned with transition",
        json.dumps(
            {"rules": [rule(1, "any", "sinceImageTransitioned", 90, storage_class="archive", action="transition")]}
        ),
        'countType "sinceImageTransitioned" may only be used with action type "expire"',
    ),
    (
        "duplicate priorities",
        policy_text(R, rule(1, "untagged", "sinceImagePushed", 1)),
        "rulePriority 1 is used by more than one rule",
    ),
    (
        "any not last",
        policy_text(rule(1, "any", "imageCountMoreThan", 5), rule(2, "untagged", "sinceImagePushed", 1)),
        'The rule with tagStatus "any" must have the highest rulePriority',
    ),
    (
        "two any rules",
        policy_text(rule(1, "any", "imageCountMoreThan", 5), rule(2, "any", "sinceImagePushed", 1)),
        'The rule with tagStatus "any" must have the highest rulePriority',
    ),
    (
        "two untagged rules",
        policy_text(rule(1, "untagged", "imageCountMoreThan", 5), rule(2, "untagged", "sinceImagePushed", 1)),
        'Only one rule selecting storageClass "standard" may have tagStatus "untagged"',
    ),
    (
        "same prefixes twice",
        policy_text(
            rule(1, "tagged", "imageCountMoreThan", 5, prefixes=["b", "a"]),
            rule(2, "tagged", "sinceImagePushed", 9, prefixes=["a", "b"]),
        ),
        'Rules selecting storageClass "standard" must use unique tag prefixes: ["a","b"] appears in more than one rule',
    ),
    (
        "51 rules",
        policy_text(*[rule(i + 1, "tagged", "imageCountMoreThan", 1, prefixes=[f"p{i}"]) for i in range(51)]),
        "array is too long: must have at most 50 elements but instance has 51 elements",
    ),
    (
        "huge policy",
        '{"rules": [' + " " * 30720 + "]}",
        "string is too long (length: 30733, maximum allowed: 30720)",
    ),
]


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rejects_with_exact_message(text: str, message: str) -> None:
    assert _reject(text) == message


def test_not_a_string() -> None:
    with pytest.raises(LifecyclePolicyError, match="Could not map"):
        parse_lifecycle_policy(b"{}")  # type: ignore[arg-type]


def test_exactly_max_length_is_checked_not_refused() -> None:
    text = policy_text(R)
    padded = text[:-1] + " " * (30720 - len(text)) + "}"
    assert len(padded) == 30720
    parse_lifecycle_policy(padded)


def test_full_ecr_message() -> None:
    with pytest.raises(LifecyclePolicyError) as info:
        parse_lifecycle_policy(_with(R, "selection.countUnit", "days"))
    expected = (
        "Invalid parameter at 'LifecyclePolicyText' failed to satisfy constraint: "
        "'Lifecycle policy validation failure: countUnit must not be specified when countType is "
        '"imageCountMoreThan"\''
    )
    assert info.value.ecr_message == expected
    assert invalid_parameter_message(info.value.message) == expected
