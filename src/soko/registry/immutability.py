"""ECR tag immutability, including the *_WITH_EXCLUSION modes and their wildcard filters."""

from __future__ import annotations

from soko.kernel.wildcard import wildcard_match


def matches_any(tag: str, filters: list[dict]) -> bool:
    return any(wildcard_match(tag, f.get("filter", "")) for f in filters)


def tag_is_immutable(tag: str, mutability: str, filters: list[dict]) -> bool:
    if mutability == "IMMUTABLE":
        return True
    if mutability == "IMMUTABLE_WITH_EXCLUSION":
        return not matches_any(tag, filters)
    if mutability == "MUTABLE_WITH_EXCLUSION":
        return matches_any(tag, filters)
    return False
