"""ECR's ``*`` wildcards (signing repository filters, tag-mutability exclusion filters): ``*`` is any run of
characters, the rest literal, the whole value.

Matched without regular expressions on purpose: a filter such as ``a*a*a*…*b`` compiled to ``a.*a.*…b`` backtracks
polynomially in the number of stars (a 256-character filter against a long repository name ran for minutes, inside
a push's transaction). Leftmost matching of each literal part is exact for ``*``-only patterns and takes time
linear in the value per part.
"""

from __future__ import annotations


def wildcard_match(value: str, pattern: str) -> bool:
    parts = pattern.split("*")
    if len(parts) == 1:
        return value == pattern
    first, *middle, last = parts
    if len(value) < len(first) + len(last) or not value.startswith(first) or not value.endswith(last):
        return False
    position, end = len(first), len(value) - len(last)
    for part in middle:
        found = value.find(part, position, end)
        if found < 0:
            return False
        position = found + len(part)
    return True
