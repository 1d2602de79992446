"""Wildcard matching: exactness against a reference matcher, and no catastrophic backtracking."""

from __future__ import annotations

import json
import re
from functools import cache

from hypothesis import given, settings
from hypothesis import strategies as st

from soko.iam.policy import AuthzRequest, PolicyKind, Principal, evaluate, parse_policy
from soko.iam.policy.matching import WildcardSet, arn_regex, glob_regex


def reference_glob(pattern: str, value: str, any_char: str = "") -> bool:
    """Textbook recursive glob; `any_char` lists characters `*` and `?` may not match."""

    @cache
    def match(i: int, j: int) -> bool:
        if i == len(pattern):
            return j == len(value)
        if pattern[i] == "*":
            return match(i + 1, j) or (j < len(value) and value[j] not in any_char and match(i, j + 1))
        if j == len(value):
            return False
        if pattern[i] == "?":
            return value[j] not in any_char and match(i + 1, j + 1)
        return pattern[i] == value[j] and match(i + 1, j + 1)

    return match(0, 0)


@settings(max_examples=1000)
@given(st.text("ab*?.", max_size=10), st.text("ab.", max_size=12))
def test_glob_regex_agrees_with_reference(pattern: str, value: str) -> None:
    got = re.fullmatch(glob_regex(pattern), value, re.DOTALL) is not None
    assert got == reference_glob(pattern, value)


@settings(max_examples=500)
@given(st.text("ab*?:", max_size=10), st.text("ab:", max_size=12))
def test_segment_glob_agrees_with_reference(pattern: str, value: str) -> None:
    got = re.fullmatch(glob_regex(pattern, "[^:]"), value, re.DOTALL) is not None
    assert got == reference_glob(pattern, value, ":")


def test_arn_regex_checks_segments_separately() -> None:
    source = arn_regex("arn:aws:iam::*:role/*")
    assert source is not None
    assert re.fullmatch(source, "arn:aws:iam::111122223333:role/a:b")
    assert not re.fullmatch(source, "arn:aws:iam::1:2:role/x")  # `*` in the account part cannot span a colon
    assert arn_regex("arn:aws:iam") is None


def test_wildcard_set() -> None:
    ws = WildcardSet(["ecr:BatchGetImage", "ecr:Get*"], fold_case=True)
    assert ws.matches("ecr:batchgetimage") and ws.matches("ecr:getauthorizationtoken")
    assert not ws.matches("ecr:putimage")
    assert WildcardSet(["*"]).matches("anything") and not WildcardSet([]).matches("x")


def test_hostile_patterns_do_not_backtrack_catastrophically() -> None:
    # A naive `.*a.*a…b` regex takes over a minute on this input.
    hostile = "arn:aws:ecr:us-east-1:111122223333:repository/" + "a*" * 40 + "b"
    text = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "ecr:" + "*G" * 40 + "x", "Resource": hostile},
                {
                    "Effect": "Allow",
                    "Action": "ecr:*",
                    "Resource": "*",
                    "Condition": {
                        "StringLike": {"k": "a*" * 40 + "b"},
                        "ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:user/" + "a*" * 40 + "b"},
                    },
                },
            ],
        }
    )
    policy = parse_policy(text, PolicyKind.IDENTITY)
    alice = Principal("arn:aws:iam::111122223333:user/" + "a" * 200, "111122223333", "User", "AIDA1", "a" * 200)
    request = AuthzRequest(
        alice,
        "ecr:" + "G" * 200,
        "arn:aws:ecr:us-east-1:111122223333:repository/" + "a" * 250,
        "111122223333",
        {"k": "a" * 1000},
    )
    # A backtracking matcher would hang here (minutes); the linear one answers at once. No clock is asserted.
    assert not evaluate(request, identity_policies=[policy]).allowed
