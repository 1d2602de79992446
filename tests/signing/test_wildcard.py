"""ECR's ``*`` filters (signing rules' repository filters, tag-mutability exclusions): exact, and linear on hostile
filters — a regex of a 128-star filter backtracked for minutes inside a push's transaction."""

import time

from soko.kernel.signing_queue import matching_profiles
from soko.kernel.wildcard import wildcard_match
from soko.registry.immutability import tag_is_immutable

PROFILE = "arn:aws:signer:us-east-1:123456789012:/signing-profiles/p1"


def test_wildcard_semantics() -> None:
    cases = [
        ("prod/app", "prod/*", True),
        ("prod", "prod/*", False),
        ("prod/a/b", "*/b", True),
        ("abc", "abc", True),
        ("abcd", "abc", False),
        ("abc", "*", True),
        ("", "*", True),
        ("aXbXc", "a*b*c", True),
        ("ab", "a*b*c", False),
        ("aba", "ab*ba", False),
        ("abba", "ab*ba", True),
        ("a", "a**", True),
        ("release-1", "*-*", True),
    ]
    for value, pattern, expected in cases:
        assert wildcard_match(value, pattern) is expected, (value, pattern)


def test_hostile_filters_answer_at_once() -> None:
    # The longest filters the model allows, all stars, against the longest names: no catastrophic backtracking.
    # Timed: without a bound a backtracking matcher still gives these answers, only minutes later.
    started = time.perf_counter()
    repository = "a" * 256
    rules = [
        {
            "signingProfileArn": PROFILE,
            "repositoryFilters": [{"filter": "a*" * 127 + "b", "filterType": "WILDCARD_MATCH"}],
        }
    ]
    assert matching_profiles(rules, repository) == []
    assert matching_profiles(rules, repository[:-1] + "b") == [PROFILE]
    tag_filter = [{"filterType": "WILDCARD", "filter": "a*" * 63 + "b"}]
    assert tag_is_immutable("a" * 128, "IMMUTABLE_WITH_EXCLUSION", tag_filter)
    assert not tag_is_immutable("a" * 127 + "b", "IMMUTABLE_WITH_EXCLUSION", tag_filter)
    assert time.perf_counter() - started < 1.0
