"""ECR tag immutability, including the *_WITH_EXCLUSION modes and their wildcard filters."""

from __future__ import annotations

import re
from functools import lru_cache


@lru_cache(maxsize=1024)
def _wildcard(pattern: str) -> re.Pattern[str]:
    # ECR filters: '*' matches zero or more characters, everything else is literal.
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def matches_any(tag: str, filters: list[dict]) -> bool:
    return any(_wildcard(f.get("filter", "")).fullmatch(tag) for f in filters)


def tag_is_immutable(tag: str, mutability: str, filters: list[dict]) -> bool:
    if mutability == "IMMUTABLE":
        return True
    if mutability == "IMMUTABLE_WITH_EXCLUSION":
        return not matches_any(tag, filters)
    if mutability == "MUTABLE_WITH_EXCLUSION":
        return matches_any(tag, filters)
    return False
