"""OSV range evaluation with each ecosystem's ordering."""

from __future__ import annotations

import pytest

from soko.scan.vulndb.versions import affected


def entry(*events: tuple[str, str], versions: list[str] | None = None, kind: str = "ECOSYSTEM") -> dict:
    return {"ranges": [{"type": kind, "events": [{k: v} for k, v in events]}], "versions": versions or []}


@pytest.mark.parametrize(("ecosystem", "version", "rng", "expected"), [
    # PyPI (PEP 440, packaging)
    ("PyPI", "2.19.1", entry(("introduced", "0"), ("fixed", "2.20.0")), True),
    ("PyPI", "2.20", entry(("introduced", "0"), ("fixed", "2.20.0")), False),  # 2.20 == 2.20.0
    ("PyPI", "2.20.0rc1", entry(("introduced", "0"), ("fixed", "2.20.0")), True),  # pre-release sorts before
    ("PyPI", "1.11.0", entry(("introduced", "0"), ("last_affected", "1.11.0")), True),  # inclusive
    ("PyPI", "1.11.0.post1", entry(("introduced", "0"), ("last_affected", "1.11.0")), False),
    ("PyPI", "4.1", entry(("introduced", "4.0"), ("fixed", "4.3"), ("introduced", "5.0"), ("fixed", "5.2")), True),
    ("PyPI", "4.5", entry(("introduced", "4.0"), ("fixed", "4.3"), ("introduced", "5.0"), ("fixed", "5.2")), False),
    ("PyPI", "5.1", entry(("fixed", "5.2"), ("introduced", "5.0"), ("fixed", "4.3"), ("introduced", "4.0")), True),
    ("PyPI", "3.0", entry(("introduced", "1.0"), ("limit", "2.0")), False),  # limit bounds the range
    ("PyPI", "1.5", entry(("introduced", "1.0"), ("limit", "2.0")), True),
    ("PyPI", "1.0.0", entry(versions=["1.0"]), True),  # PEP 440 equality in a versions list
    ("PyPI", "not a version", entry(("introduced", "0")), False),
    ("PyPI", "not a version", entry(versions=["not a version"]), True),  # listed verbatim still matches
    ("PyPI", "1.0", entry(("introduced", "0"), ("fixed", "abc123"), kind="GIT"), False),  # commits: ignored
    # Debian (dpkg ordering: epochs, tildes, +debNuM)
    ("Debian:12", "5.36.0-7+deb12u1", entry(("introduced", "0"), ("fixed", "5.36.0-7+deb12u2")), True),
    ("Debian:12", "5.36.0-7+deb12u2", entry(("introduced", "0"), ("fixed", "5.36.0-7+deb12u2")), False),
    ("Debian:12", "1:1.0", entry(("introduced", "0"), ("fixed", "2.0")), False),  # the epoch wins
    ("Debian:12", "2.0~rc1", entry(("introduced", "0"), ("fixed", "2.0")), True),  # ~ sorts before
    # Alpine (apk ordering: suffixes, -rN)
    ("Alpine:v3.11", "1.1.1d-r2", entry(("introduced", "0"), ("fixed", "1.1.1d-r3")), True),
    ("Alpine:v3.11", "1.1.1d-r10", entry(("introduced", "0"), ("fixed", "1.1.1d-r3")), False),
    ("Alpine:v3.11", "1.2.3_rc1-r0", entry(("introduced", "0"), ("fixed", "1.2.3-r0")), True),
    # Go and npm (semver; Go's leading v dropped)
    ("Go", "v0.3.7", entry(("introduced", "0"), ("fixed", "0.3.8"), kind="SEMVER"), True),
    ("Go", "0.7.0", entry(("introduced", "0"), ("fixed", "0.3.8"), kind="SEMVER"), False),
    ("Go", "1.20.0-rc.1", entry(("introduced", "1.20.0-0"), ("fixed", "1.20.1"), kind="SEMVER"), True),
    ("npm", "4.17.15", entry(("introduced", "0"), ("fixed", "4.17.19"), kind="SEMVER"), True),
    ("npm", "4.17.21", entry(("introduced", "0"), ("fixed", "4.17.19"), kind="SEMVER"), False),
    # an ecosystem Soko has no ordering for: only explicit versions
    ("Maven", "2.11.0", entry(("introduced", "0"), ("fixed", "2.14.0")), True),
    ("Maven", "2.14.0", entry(("introduced", "0"), ("fixed", "2.14.0")), False),
    ("Maven", "1.0-SNAPSHOT", entry(("introduced", "0"), ("fixed", "1.0")), True),
    ("Hackage", "1.0", entry(("introduced", "0")), False),
    ("Hackage", "1.0", entry(versions=["1.0"]), True),
    ("RubyGems", "1.0", entry(("introduced", "0")), True),
    ("RubyGems", "1.0.0.pre", entry(("introduced", "0"), ("fixed", "1.0.0")), True),
    ("crates.io", "1.6.1", entry(("introduced", "1.6.0"), ("fixed", "1.6.1")), False),
    ("Rocky Linux:9", "1:1.0-1.el9", entry(("introduced", "0"), ("fixed", "2:0.1-1.el9")), True),
])
def test_affected(ecosystem, version, rng, expected):
    assert affected(ecosystem, version, rng) is expected
