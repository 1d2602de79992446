"""EventBridge event patterns: the documented subset matches as EventBridge does; the rest is refused."""

from __future__ import annotations

import json

import pytest

from soko.events.patterns import InvalidPattern, matches, parse

PUSH = {
    "version": "0",
    "id": "13cde686-328b-6117-af20-0e5566167482",
    "detail-type": "ECR Image Action",
    "source": "aws.ecr",
    "account": "123456789012",
    "time": "2019-11-16T01:54:34Z",
    "region": "us-west-2",
    "resources": [],
    "detail": {
        "result": "SUCCESS",
        "repository-name": "team/app",
        "image-digest": "sha256:7f5b",
        "action-type": "PUSH",
        "image-tag": "latest",
    },
}
SCAN = {
    "source": "aws.ecr",
    "detail-type": "ECR Image Scan",
    "resources": ["arn:aws:ecr:us-east-1:1:repository/a"],
    "detail": {
        "scan-status": "COMPLETE",
        "repository-name": "a",
        "finding-severity-counts": {"CRITICAL": 10, "MEDIUM": 9},
        "image-digest": "sha256:7f5b",
        "image-tags": ["v1", "prod"],
    },
}


def m(pattern: dict, event: dict) -> bool:
    return matches(parse(json.dumps(pattern)), event)


@pytest.mark.parametrize(
    ("pattern", "event", "expected"),
    [
        ({"source": ["aws.ecr"]}, PUSH, True),
        ({"source": ["aws.s3"]}, PUSH, False),
        ({"source": ["aws.ecr"], "detail-type": ["ECR Image Action"], "detail": {"action-type": ["PUSH"]}}, PUSH, True),
        ({"detail": {"action-type": ["DELETE", "PUSH"]}}, PUSH, True),  # any value
        ({"detail": {"action-type": ["push"]}}, PUSH, False),  # case-sensitive
        ({"detail": {"action-type": [{"equals-ignore-case": "push"}]}}, PUSH, True),
        ({"detail": {"repository-name": [{"prefix": "team/"}]}}, PUSH, True),
        ({"detail": {"repository-name": [{"prefix": "other/"}]}}, PUSH, False),
        ({"detail": {"repository-name": [{"suffix": "/app"}]}}, PUSH, True),
        ({"detail": {"image-tag": [{"anything-but": "latest"}]}}, PUSH, False),
        ({"detail": {"image-tag": [{"anything-but": ["dev", "test"]}]}}, PUSH, True),
        ({"detail": {"image-tag": [{"anything-but": {"prefix": "lat"}}]}}, PUSH, False),
        ({"detail": {"image-tag": [{"anything-but": "x"}]}}, SCAN, False),  # no such field: no match
        ({"detail": {"image-tag": [{"exists": True}]}}, PUSH, True),
        ({"detail": {"image-tag": [{"exists": False}]}}, PUSH, False),
        ({"detail": {"image-tag": [{"exists": False}]}}, SCAN, True),
        ({"detail": {"finding-severity-counts": {"CRITICAL": [{"numeric": [">", 0]}]}}}, SCAN, True),
        ({"detail": {"finding-severity-counts": {"CRITICAL": [{"numeric": [">", 0, "<=", 5]}]}}}, SCAN, False),
        ({"detail": {"finding-severity-counts": {"HIGH": [{"numeric": [">", 0]}]}}}, SCAN, False),
        ({"detail": {"finding-severity-counts": {"CRITICAL": ["10"]}}}, SCAN, False),  # typed: "10" is not 10
        ({"detail": {"finding-severity-counts": {"CRITICAL": [10.0]}}}, SCAN, True),
        ({"detail": {"image-tags": ["prod"]}}, SCAN, True),  # an event array: any element
        ({"detail": {"image-tags": [{"prefix": "v"}]}}, SCAN, True),
        ({"resources": [{"prefix": "arn:aws:ecr:us-east-1:"}]}, SCAN, True),
        ({"detail": {"nothing": {"deeper": [{"exists": False}]}}}, PUSH, True),
        ({"detail": {"nothing": {"deeper": ["x"]}}}, PUSH, False),
        ({"detail": {"repository-name": [{"numeric": [">", 0]}]}}, PUSH, False),  # numeric skips strings
        ({"detail": {"result": [{"prefix": ""}]}}, PUSH, True),
    ],
)
def test_matching(pattern: dict, event: dict, expected: bool) -> None:
    assert m(pattern, event) is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not valid JSON"),
        ("[]", "non-empty JSON object"),
        ("{}", "non-empty JSON object"),
        ('{"source": "aws.ecr"}', "in an array"),
        ('{"source": []}', "must not be empty"),
        ('{"source": [{"wildcard": "aws.*"}]}', "'wildcard' is not supported"),
        ('{"source": [{"cidr": "10.0.0.0/8"}]}', "'cidr' is not supported"),
        ('{"$or": [{"source": ["a"]}]}', "'$or' is not supported"),
        ('{"source": [{"prefix": 5}]}', "takes a string"),
        ('{"source": [{"prefix": "a", "suffix": "b"}]}', "one operator"),
        ('{"n": [{"numeric": [">"]}]}', "numeric takes"),
        ('{"n": [{"numeric": ["!=", 1]}]}', "numeric takes operators"),
        ('{"n": [{"numeric": [">", 1e10]}]}', "5e9"),
        ('{"n": [{"exists": "yes"}]}', "true or false"),
        ('{"n": [{"anything-but": {"wildcard": "x"}}]}', "anything-but takes"),
        ('{"n": [[1]]}', "one operator object"),
        ('{"a": {}}', "empty object"),
        ('{"a":' * 10 + '["x"]' + "}" * 10, "deeper"),
        ('{"a": ["' + "x" * 5000 + '"]}', "longer than"),
    ],
)
def test_patterns_soko_cannot_match_are_refused(text: str, message: str) -> None:
    with pytest.raises(InvalidPattern) as info:
        parse(text)
    assert message in info.value.message
