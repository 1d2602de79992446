"""Every example in AWS's "Examples of lifecycle policies in Amazon ECR", with the documented outcome.

Policies are the documentation's own JSON. The multiple-rule and multiple-tag examples appear there twice over
time: first with tagPrefixList (["prod"]), now with tagPatternList (["prod*"]); both must give the same result.
"Pushed: N days ago" becomes ``ago(N)``; where the documented result depends on an order the text leaves
implicit, the test says so.
"""

from __future__ import annotations

import json

import pytest

from soko.lifecycle import parse_lifecycle_policy

from ._helpers import acted, ago, expired, image, run


def _doc(rules: list[dict]) -> str:
    return json.dumps({"rules": rules}, indent=4)


def _tagged(priority: int, description: str, mode: str, values: list[str], count_type: str, number: int) -> dict:
    key = "tagPrefixList" if mode == "prefix" else "tagPatternList"
    if mode == "pattern":
        values = [v + "*" for v in values]
    selection: dict = {"tagStatus": "tagged", key: values, "countType": count_type, "countNumber": number}
    if count_type != "imageCountMoreThan":
        selection["countUnit"] = "days"
    return {"rulePriority": priority, "description": description, "selection": selection, "action": {"type": "expire"}}


# --- syntax examples (no worked repository in the docs; exercised on a small one) ---------------------------

AGE_POLICY = """{
    "rules": [
        {
            "rulePriority": 1,
            "description": "Expire images older than 14 days",
            "selection": {
                "tagStatus": "tagged",
                "tagPatternList": ["prod*"],
                "countType": "sinceImagePushed",
                "countUnit": "days",
                "countNumber": 14
            },
            "action": {
                "type": "expire"
            }
        }
    ]
}"""

AGE_POLICY_UNTAGGED = """{
    "rules": [
        {
            "rulePriority": 1,
            "description": "Expire images older than 14 days",
            "selection": {
                "tagStatus": "untagged",
                "countType": "sinceImagePushed",
                "countUnit": "days",
                "countNumber": 14
            },
            "action": {
                "type": "expire"
            }
        }
    ]
}"""

PULLED_POLICY = """{
    "rules": [
        {
            "rulePriority": 1,
            "description": "Archive images not pulled in 90 days",
            "selection": {
                "tagStatus": "any",
                "countType": "sinceImagePulled",
                "countUnit": "days",
                "countNumber": 90
            },
            "action": {
                "type": "transition",
                "targetStorageClass": "archive"
            }
        }
    ]
}"""

TRANSITIONED_POLICY = """{
    "rules": [
        {
            "rulePriority": 1,
            "description": "Expire images archived for more than 365 days",
            "selection": {
                "tagStatus": "any",
                "storageClass": "archive",
                "countType": "sinceImageTransitioned",
                "countUnit": "days",
                "countNumber": 365
            },
            "action": {
                "type": "expire"
            }
        }
    ]
}"""

COUNT_POLICY = """{
    "rules": [
        {
            "rulePriority": 1,
            "description": "Keep only one untagged image, expire all others",
            "selection": {
                "tagStatus": "untagged",
                "countType": "imageCountMoreThan",
                "countNumber": 1
            },
            "action": {
                "type": "expire"
            }
        }
    ]
}"""

ARCHIVE_PROD_POLICY = """{
    "rules": [
        {
            "rulePriority": 1,
            "description": "Archive production images older than 30 days",
            "selection": {
                "tagStatus": "tagged",
                "tagPatternList": ["prod*"],
                "countType": "sinceImagePushed",
                "countUnit": "days",
                "countNumber": 30
            },
            "action": {
                "type": "transition",
                "targetStorageClass": "archive"
            }
        }
    ]
}"""

ARCHIVE_THEN_EXPIRE_POLICY = """{
    "rules": [
        {
            "rulePriority": 1,
            "description": "Archive images older than 30 days",
            "selection": {
                "tagStatus": "any",
                "countType": "sinceImagePushed",
                "countUnit": "days",
                "countNumber": 30
            },
            "action": {
                "type": "transition",
                "targetStorageClass": "archive"
            }
        },
        {
            "rulePriority": 2,
            "description": "Expire images archived for more than 365 days",
            "selection": {
                "tagStatus": "any",
                "storageClass": "archive",
                "countType": "sinceImageTransitioned",
                "countUnit": "days",
                "countNumber": 365
            },
            "action": {
                "type": "expire"
            }
        }
    ]
}"""


def test_filtering_on_image_age_with_pattern() -> None:
    images = [
        image("A", ["prod-1"], ago(15)),
        image("B", ["production"], ago(30)),
        image("C", ["prod-2"], ago(13)),
        image("D", ["dev-1"], ago(40)),
        image("E", [], ago(40)),
    ]
    assert expired(AGE_POLICY, images) == ["B", "A"]


def test_filtering_on_image_age_untagged_earlier_doc_version() -> None:
    images = [image("A", [], ago(15)), image("B", [], ago(14)), image("C", ["v1"], ago(90))]
    # Exactly 14 days old is not "older than 14 days".
    assert expired(AGE_POLICY_UNTAGGED, images) == ["A"]


def test_filtering_on_last_pulled_time_archives_unpulled_images() -> None:
    images = [
        image("A", ["v1"], ago(200), pulled=ago(100)),
        image("B", ["v2"], ago(200), pulled=ago(10)),
        image("C", [], ago(91)),  # never pulled: push time counts
        image("D", [], ago(60)),
        image("E", ["v0"], ago(400), storage_class="archive", transitioned=ago(300)),
    ]
    actions = run(PULLED_POLICY, images)
    assert acted(actions) == ["A", "C"]
    assert {(a.action, a.target_storage_class, a.storage_class) for a in actions} == {
        ("TRANSITION", "ARCHIVE", "STANDARD")
    }


def test_filtering_on_archive_transition_time() -> None:
    images = [
        image("A", ["v1"], ago(900), storage_class="archive", transitioned=ago(400)),
        image("B", ["v2"], ago(900), storage_class="archive", transitioned=ago(100)),
        image("C", ["v3"], ago(900)),  # standard: not selected by an archive rule
    ]
    actions = run(TRANSITIONED_POLICY, images)
    assert acted(actions, "EXPIRE") == ["A"]
    assert actions[0].storage_class == "ARCHIVE"


def test_filtering_on_image_count() -> None:
    images = [image("A", [], ago(3)), image("B", [], ago(2)), image("C", [], ago(1)), image("T", ["v"], ago(9))]
    assert expired(COUNT_POLICY, images) == ["A", "B"]


# --- filtering on multiple rules -------------------------------------------------------------------------

MULTI_RULE_REPO = [
    ("A", ["beta-1", "prod-1"], 10),
    ("B", ["beta-2", "prod-2"], 9),
    ("C", ["beta-3"], 8),
]


def _repo(spec: list[tuple[str, list[str], float]]) -> list:
    return [image(name, tags, ago(days)) for name, tags, days in spec]


@pytest.mark.parametrize("mode", ["prefix", "pattern"])
def test_multiple_rules_example_a(mode: str) -> None:
    text = _doc(
        [
            _tagged(1, "Rule 1", mode, ["prod"], "imageCountMoreThan", 1),
            _tagged(2, "Rule 2", mode, ["beta"], "imageCountMoreThan", 1),
        ]
    )
    # Rule 2 would mark A and B (it still counts A, already marked by Rule 1), but B matched Rule 1.
    assert expired(text, _repo(MULTI_RULE_REPO)) == ["A"]


@pytest.mark.parametrize("mode", ["prefix", "pattern"])
def test_multiple_rules_example_b(mode: str) -> None:
    text = _doc(
        [
            _tagged(1, "Rule 1", mode, ["beta"], "imageCountMoreThan", 1),
            _tagged(2, "Rule 2", mode, ["prod"], "imageCountMoreThan", 1),
        ]
    )
    actions = run(text, _repo(MULTI_RULE_REPO))
    assert acted(actions, "EXPIRE") == ["A", "B"]
    assert {a.rule_priority for a in actions} == {1}


# --- filtering on multiple tags in a single rule ------------------------------------------------------------


@pytest.mark.parametrize("mode", ["prefix", "pattern"])
def test_multiple_tags_example_a(mode: str) -> None:
    repo = [
        ("A", ["alpha-1"], 12),
        ("B", ["beta-1"], 11),
        ("C", ["alpha-2", "beta-2"], 10),
        ("D", ["alpha-3"], 4),
        ("E", ["beta-3"], 3),
        ("F", ["alpha-4", "beta-4"], 2),
    ]
    text = _doc([_tagged(1, "Rule 1", mode, ["alpha", "beta"], "sinceImagePushed", 5)])
    assert expired(text, _repo(repo)) == ["C"]


@pytest.mark.parametrize("mode", ["prefix", "pattern"])
def test_multiple_tags_example_b_tags_are_not_exclusive(mode: str) -> None:
    repo = [
        ("A", ["alpha-1", "beta-1", "gamma-1"], 10),
        ("B", ["alpha-2", "beta-2"], 9),
        ("C", ["alpha-3", "beta-3", "gamma-2"], 8),
    ]
    text = _doc([_tagged(1, "Rule 1", mode, ["alpha", "beta"], "imageCountMoreThan", 1)])
    assert expired(text, _repo(repo)) == ["A", "B"]


# --- filtering on all images ---------------------------------------------------------------------------------


def test_all_images_example_a() -> None:
    repo = [("A", ["alpha-1"], 4), ("B", ["beta-1"], 3), ("C", [], 2), ("D", ["alpha-2"], 1)]
    text = _doc(
        [
            {
                "rulePriority": 1,
                "description": "Rule 1",
                "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1},
                "action": {"type": "expire"},
            }
        ]
    )
    assert expired(text, _repo(repo)) == ["A", "B", "C"]


@pytest.mark.parametrize("mode", ["prefix", "pattern"])
def test_all_images_example_b(mode: str) -> None:
    # D and E are both "Pushed: 1 day ago". The documented result (Rule 3 keeps E, marks D) needs E to be the
    # newer of the two, and Rule 2 must not expire E, so E is not *older* than one day: E is pushed exactly
    # one day ago and D an hour before it.
    images = [
        image("A", ["alpha-1", "beta-1"], ago(4)),
        image("B", [], ago(3)),
        image("C", ["alpha-2"], ago(2)),
        image("D", ["git hash"], ago(1, hours=1)),
        image("E", [], ago(1)),
    ]
    text = _doc(
        [
            _tagged(1, "Rule 1", mode, ["alpha"], "imageCountMoreThan", 1),
            {
                "rulePriority": 2,
                "description": "Rule 2",
                "selection": {
                    "tagStatus": "untagged",
                    "countType": "sinceImagePushed",
                    "countUnit": "days",
                    "countNumber": 1,
                },
                "action": {"type": "expire"},
            },
            {
                "rulePriority": 3,
                "description": "Rule 3",
                "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1},
                "action": {"type": "expire"},
            },
        ]
    )
    actions = run(text, images)
    assert acted(actions, "EXPIRE") == ["A", "B", "D"]
    assert [a.rule_priority for a in actions] == [1, 2, 3]


# --- archive examples ----------------------------------------------------------------------------------------


def test_archive_production_images_older_than_30_days() -> None:
    images = [image("A", ["prod-1"], ago(31)), image("B", ["prod-2"], ago(29)), image("C", ["dev"], ago(90))]
    assert acted(run(ARCHIVE_PROD_POLICY, images), "TRANSITION") == ["A"]


def test_archive_then_expire_uses_one_any_rule_per_storage_class() -> None:
    # Two "any" rules are valid because each is the last rule for its storage class.
    assert len(parse_lifecycle_policy(ARCHIVE_THEN_EXPIRE_POLICY).rules) == 2
    images = [
        image("A", ["v1"], ago(31)),
        image("B", ["v2"], ago(5)),
        image("C", ["v0"], ago(800), storage_class="archive", transitioned=ago(366)),
        image("D", [], ago(800), storage_class="archive", transitioned=ago(200)),
    ]
    actions = run(ARCHIVE_THEN_EXPIRE_POLICY, images)
    assert [(n, a.action, a.rule_priority) for n, a in zip(acted(actions), actions, strict=True)] == [
        ("C", "EXPIRE", 2),
        ("A", "TRANSITION", 1),
    ]


@pytest.mark.parametrize(
    "text",
    [AGE_POLICY, AGE_POLICY_UNTAGGED, PULLED_POLICY, TRANSITIONED_POLICY, COUNT_POLICY, ARCHIVE_PROD_POLICY],
)
def test_documented_policies_are_valid(text: str) -> None:
    parse_lifecycle_policy(text)
