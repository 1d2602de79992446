"""Repository-name and tag rules (OCI distribution-spec, narrowed to ECR's where ECR is stricter)."""

from __future__ import annotations

import re

from soko.errors import NameInvalid, TagInvalid

# ECR's repository-name pattern (also a valid OCI name): lowercase components separated by '/'.
_NAME = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
NAME_MIN, NAME_MAX = 2, 256


def validate_repository_name(name: str) -> str:
    if not (NAME_MIN <= len(name) <= NAME_MAX) or not _NAME.fullmatch(name):
        shown = name if len(name) <= 80 else name[:77] + "..."
        raise NameInvalid(
            f"invalid repository name '{shown}': use 2-256 characters of lowercase letters, digits and "
            "separators ('.', '_', '__', '-', '/'), starting and ending each component with a letter or digit"
        )
    return name


def validate_tag(tag: str) -> str:
    if not _TAG.fullmatch(tag):
        shown = tag if len(tag) <= 80 else tag[:77] + "..."
        raise TagInvalid(
            f"invalid tag '{shown}': a tag is 1-128 characters of letters, digits, '_', '.' and '-', "
            "and must not start with '.' or '-'"
        )
    return tag
