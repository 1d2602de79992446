"""Which destinations an image of a repository goes to under an account's replication rules (ECR's semantics):
a rule without filters takes every repository, else a repository whose name starts with one of its PREFIX_MATCH
filters; destinations of every matching rule, each once, in rule order."""

from __future__ import annotations

from typing import NamedTuple


class Destination(NamedTuple):
    region: str
    registry_id: str


def matches(rule: dict, repository: str) -> bool:
    filters = rule.get("repositoryFilters")
    if not filters:
        return True
    return any(f["filterType"] == "PREFIX_MATCH" and repository.startswith(f["filter"]) for f in filters)


def destinations_for(rules: list[dict], repository: str) -> list[Destination]:
    found: dict[Destination, None] = {}
    for rule in rules:
        if matches(rule, repository):
            for d in rule["destinations"]:
                found.setdefault(Destination(d["region"], d["registryId"]), None)
    return list(found)
