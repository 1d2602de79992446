"""Which repositories are scanned, and how: the account's registry scanning configuration (scan type BASIC or
ENHANCED, rules of scanFrequency SCAN_ON_PUSH or CONTINUOUS_SCAN with WILDCARD repository filters) and the
repository's own scanOnPush flag, combined as ECR does. In the kernel (it imports only the schema) because the push
path asks it in its unit of work, and ``registry`` (BatchGetRepositoryScanningConfiguration) and ``scan`` (continuous
rescans) ask it too: one reading of the rules for all three.

ECR's rules: BASIC honours SCAN_ON_PUSH rules and, for a repository no rule matches, the repository's scanOnPush;
ENHANCED (Inspector in AWS) takes the rules alone — a repository's scanOnPush is ignored, a repository no rule
matches is not scanned (MANUAL). A CONTINUOUS_SCAN rule also scans on push, and wins over a SCAN_ON_PUSH rule that
matches the same repository.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fnmatch import fnmatchcase

import sqlalchemy as sa

from soko.meta.schema import repositories, scanning_configurations

BASIC, ENHANCED = "BASIC", "ENHANCED"
MANUAL, SCAN_ON_PUSH, CONTINUOUS_SCAN = "MANUAL", "SCAN_ON_PUSH", "CONTINUOUS_SCAN"


@dataclass(frozen=True, slots=True)
class Applied:
    """What applies to one repository (BatchGetRepositoryScanningConfiguration's answer, plus the scan type)."""

    scan_type: str
    frequency: str  # MANUAL | SCAN_ON_PUSH | CONTINUOUS_SCAN
    filters: list[dict]  # the rule's filters that matched the name

    @property
    def on_push(self) -> bool:
        return self.frequency != MANUAL

    @property
    def continuous(self) -> bool:
        return self.scan_type == ENHANCED and self.frequency == CONTINUOUS_SCAN


def filter_matches(name: str, value: str) -> bool:
    """A filter without '*' matches names that contain it; '*' is zero or more characters over the whole name. The
    model's pattern allows only ``[a-z0-9._/*-]`` in a filter, so fnmatch's other wildcards never occur."""
    return value in name if "*" not in value else fnmatchcase(name, value)


def applied(name: str, scan_on_push: bool, scan_type: str, rules: list[dict]) -> Applied:
    for rule in sorted(rules, key=lambda r: r["scanFrequency"] != CONTINUOUS_SCAN):
        matched = [f for f in rule["repositoryFilters"] if filter_matches(name, f["filter"])]
        if matched:
            return Applied(scan_type, rule["scanFrequency"], matched)
    if scan_type == BASIC and scan_on_push:
        return Applied(scan_type, SCAN_ON_PUSH, [])
    return Applied(scan_type, MANUAL, [])


def configuration(conn: sa.Connection, account_id: str) -> tuple[str, list[dict]]:
    """The account's scan type and rules (BASIC with no rules when never set)."""
    t = scanning_configurations.c
    row = conn.execute(sa.select(t.scan_type, t.rules).where(t.account_id == account_id)).first()
    return (BASIC, []) if row is None else (row.scan_type, json.loads(row.rules))


def for_repository(conn: sa.Connection, repo_id: int) -> Applied:
    """What applies to repository ``repo_id`` now (two primary-key reads)."""
    r = repositories.c
    repo = conn.execute(sa.select(r.account_id, r.name, r.scan_on_push).where(r.id == repo_id)).one()
    return applied(repo.name, bool(repo.scan_on_push), *configuration(conn, repo.account_id))
