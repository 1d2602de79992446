"""Version ordering per ecosystem and OSV range evaluation.

Orderings come from well-kept libraries: ``packaging`` for PEP 440 (PyPI), ``univers`` for dpkg (Debian,
Ubuntu), apk (Alpine) and semver (npm, Go, whose advisories drop Go's leading ``v``). A version that its
ecosystem cannot parse is matched by an advisory's explicit ``versions`` list only.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import packaging.version
from univers.versions import (
    AlpineLinuxVersion,
    DebianVersion,
    MavenVersion,
    RpmVersion,
    RubygemsVersion,
    SemverVersion,
)


def _pypi(text: str):
    return packaging.version.Version(text)


def _semver(text: str):
    return SemverVersion(text.removeprefix("v"))


ORDERINGS: dict[str, Callable[[str], object]] = {
    "PyPI": _pypi, "Debian": DebianVersion, "Ubuntu": DebianVersion, "Alpine": AlpineLinuxVersion,
    "npm": _semver, "Go": _semver, "Maven": MavenVersion, "RubyGems": RubygemsVersion, "crates.io": _semver,
    "Rocky Linux": RpmVersion, "AlmaLinux": RpmVersion,
}


def ordering(ecosystem: str) -> Callable[[str], object] | None:
    """``Debian:12`` → Debian's ordering."""
    return ORDERINGS.get(ecosystem.split(":", 1)[0])


@lru_cache(maxsize=1 << 16)
def parse(ecosystem: str, text: str):
    """``text`` in the ecosystem's ordering, or None. Cached: parsing (semver's above all) was most of a rescan's
    time, and the same versions recur in every image and advisory; the parsed values are immutable."""
    key = ordering(ecosystem)
    if key is None:
        return None
    try:
        return key(text)
    except Exception:  # each library has its own error types; an unparsable version just doesn't compare
        return None


def affected(ecosystem: str, version: str, entry: dict) -> bool:
    """Whether ``version`` is affected per one OSV ``affected[]`` entry (its ``versions`` and its ECOSYSTEM and
    SEMVER ``ranges``; GIT ranges name commits, which an installed package does not carry)."""
    listed = entry.get("versions") or []
    if version in listed:
        return True
    current = parse(ecosystem, version)
    if current is None:
        return False
    if ecosystem == "PyPI" and any(parse(ecosystem, v) == current for v in listed):
        return True  # PEP 440 equality: 1.0 == 1.0.0
    for rng in entry.get("ranges") or []:
        if isinstance(rng, dict) and rng.get("type") in ("ECOSYSTEM", "SEMVER") and _in_range(ecosystem, current, rng):
            return True
    return False


def fixed_in(ecosystem: str, version: str, entry: dict) -> str:
    """The lowest ``fixed`` version above ``version`` in the entry's ranges that contain it ("" when none does:
    no fix is known). ENHANCED findings show it as fixedInVersion and remediation."""
    current = parse(ecosystem, version)
    if current is None:
        return ""
    fixes: list[tuple[object, str]] = []
    for rng in entry.get("ranges") or []:
        if not (isinstance(rng, dict) and rng.get("type") in ("ECOSYSTEM", "SEMVER")
                and _in_range(ecosystem, current, rng)):
            continue
        for event in rng.get("events") or []:
            value = event.get("fixed") if isinstance(event, dict) else None
            if not isinstance(value, str):
                continue
            parsed = parse(ecosystem, value)
            if parsed is not None and current < parsed:
                fixes.append((parsed, value))
    return min(fixes, key=lambda f: _SortKey(f[0]))[1] if fixes else ""


def highest(ecosystem: str, values: list[str]) -> str:
    """The highest of versions this ecosystem can parse (each of ``values`` is one ``fixed_in`` returned)."""
    return max(values, key=lambda v: _SortKey(parse(ecosystem, v)))


def _in_range(ecosystem: str, current, rng: dict) -> bool:
    """OSV's evaluation: walk the events in version order; ``introduced`` opens, ``fixed`` (exclusive) and
    ``last_affected`` (inclusive) close; ``limit`` events bound the whole range from above."""
    events = []
    limits = []
    for event in rng.get("events") or []:
        if not isinstance(event, dict) or len(event) != 1:
            continue
        (kind, value), = event.items()
        if not isinstance(value, str):
            continue
        if kind == "introduced" and value == "0":
            events.append((None, kind))
            continue
        parsed = parse(ecosystem, value)
        if parsed is None:
            return False  # a range this ecosystem cannot read: never guess
        if kind == "limit":
            limits.append(parsed)
        elif kind in ("introduced", "fixed", "last_affected"):
            events.append((parsed, kind))
    # only "<" is used: univers' AlpineLinuxVersion answers >= inconsistently with < (32.0.1: both true for
    # 1.2.3_rc1-r0 vs 1.2.3-r0), so a >= b is written not a < b, and a > b is b < a
    if limits and not any(current < limit for limit in limits):
        return False
    ordered = [e for e in events if e[0] is None] + sorted((e for e in events if e[0] is not None),
                                                          key=lambda e: _SortKey(e[0]))
    vulnerable = False
    for value, kind in ordered:
        if kind == "introduced" and (value is None or not current < value):
            vulnerable = True
        elif (kind == "fixed" and not current < value) or (kind == "last_affected" and value < current):
            vulnerable = False
    return vulnerable


class _SortKey:
    __slots__ = ("v",)

    def __init__(self, v) -> None:
        self.v = v

    def __lt__(self, other: _SortKey) -> bool:
        return self.v < other.v
