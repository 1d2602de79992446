"""Account-level ECR configuration: account settings (BLOB_MOUNTING, REGISTRY_POLICY_SCOPE, …), the replication
configuration and the registry scanning configuration."""

from __future__ import annotations

import json

import sqlalchemy as sa

from soko.errors import SokoError
from soko.kernel import scan_queue, scan_rules
from soko.kernel.context import DomainContext
from soko.kernel.events import scan_resource_change
from soko.kernel.job_queue import enqueue
from soko.kernel.unit_of_work import UnitOfWork
from soko.meta.schema import account_settings, replication_configurations, repositories, scanning_configurations
from soko.registry.capabilities import (
    require_account_setting_carried_out,
    require_no_delete_replication,
    require_reachable_destinations,
)

# name → (default, accepted values). BLOB_MOUNTING defaults to ENABLED: Soko mounted blobs before the setting
# existed (Distribution behaviour), and clients fall back to uploading when a mount is refused.
ACCOUNT_SETTINGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "BASIC_SCAN_TYPE_VERSION": ("AWS_NATIVE", ("AWS_NATIVE", "CLAIR")),
    "REGISTRY_POLICY_SCOPE": ("V2", ("V1", "V2")),
    "BLOB_MOUNTING": ("ENABLED", ("ENABLED", "DISABLED")),
}
MAX_REPLICATION_RULES = 10
MAX_REPLICATION_DESTINATIONS = 25
MAX_REPLICATION_FILTERS = 100


class ConfigurationInvalid(SokoError):
    """An account-level configuration breaks ECR's rules (ECR: ValidationException)."""


def account_setting(conn: sa.Connection, account_id: str, name: str) -> str:
    """The effective value of a setting (its default when never put): a cheap lookup for other domain code."""
    value = conn.execute(
        sa.select(account_settings.c.value).where(
            account_settings.c.account_id == account_id, account_settings.c.name == name
        )
    ).scalar()
    return value or ACCOUNT_SETTINGS[name][0]


class ReplicationToSource(SokoError):
    """A replication rule names the source registry itself (ECR: InvalidParameterException, not validation)."""


class AccountSettings:
    def __init__(self, ctx: DomainContext) -> None:
        self.ctx = ctx

    @staticmethod
    def _check_name(name: str) -> None:
        if name not in ACCOUNT_SETTINGS:
            raise ConfigurationInvalid(
                f"Account setting name '{name}' is not valid; valid names are: {', '.join(ACCOUNT_SETTINGS)}"
            )

    def get(self, account_id: str, name: str) -> str:
        self._check_name(name)
        with self.ctx.db.read() as conn:
            return account_setting(conn, account_id, name)

    def put(self, account_id: str, name: str, value: str) -> str:
        self._check_name(name)
        accepted = ACCOUNT_SETTINGS[name][1]
        if value not in accepted:
            raise ConfigurationInvalid(
                f"Account setting value '{value}' is not valid for '{name}'; valid values are: {', '.join(accepted)}"
            )
        require_account_setting_carried_out(name, value)
        with self.ctx.write(invalidates=True) as conn:
            conn.execute(
                self.ctx.db.upsert(account_settings, ["account_id", "name"], {"value": None}).values(
                    account_id=account_id, name=name, value=value
                )
            )
        return value


# ---- replication ---------------------------------------------------------------------------------------------------
def validate_replication(rules: list[dict], region: str, account_id: str) -> list[dict]:
    if len(rules) > MAX_REPLICATION_RULES:
        raise ConfigurationInvalid(
            f"Invalid replication configuration: at most {MAX_REPLICATION_RULES} rules are allowed, got {len(rules)}"
        )
    destinations: set[tuple[str, str]] = set()
    clean: list[dict] = []
    for number, rule in enumerate(rules, 1):
        dests = rule.get("destinations") or []
        if not dests:
            raise ConfigurationInvalid(f"Invalid replication configuration: rule {number} has no destinations")
        for d in dests:
            if (d["region"], d["registryId"]) == (region, account_id):
                raise ReplicationToSource("Replication destination cannot be the same as the source registry")
            destinations.add((d["region"], d["registryId"]))
        filters = rule.get("repositoryFilters")
        if filters is not None and not 1 <= len(filters) <= MAX_REPLICATION_FILTERS:
            raise ConfigurationInvalid(
                f"Invalid replication configuration: rule {number} must have 1-{MAX_REPLICATION_FILTERS} "
                "repository filters"
            )
        out: dict = {"destinations": [{"region": d["region"], "registryId": d["registryId"]} for d in dests]}
        if filters:
            out["repositoryFilters"] = [{"filter": f["filter"], "filterType": f["filterType"]} for f in filters]
        clean.append(out)
    if len(destinations) > MAX_REPLICATION_DESTINATIONS:
        raise ConfigurationInvalid(
            f"Invalid replication configuration: at most {MAX_REPLICATION_DESTINATIONS} unique destinations are "
            f"allowed, got {len(destinations)}"
        )
    return clean


class Replication:
    def __init__(self, ctx: DomainContext) -> None:
        self.ctx = ctx

    def get(self, account_id: str) -> list[dict]:
        return self.get_with_time(account_id)[0]

    def get_with_time(self, account_id: str) -> tuple[list[dict], float]:
        """The rules and when they were put (0 when never): pushes from before then are not replicated."""
        with self.ctx.db.read() as conn:
            row = conn.execute(
                sa.select(replication_configurations.c.rules, replication_configurations.c.updated_at).where(
                    replication_configurations.c.account_id == account_id
                )
            ).first()
        return (json.loads(row.rules), row.updated_at or 0.0) if row is not None else ([], 0.0)

    def put(self, account_id: str, rules: list[dict]) -> list[dict]:
        require_no_delete_replication(rules)
        rules = validate_replication(rules, self.ctx.settings.region, account_id)
        require_reachable_destinations(rules, self.ctx.settings.region, self.ctx.settings.regions)
        with self.ctx.write() as conn:
            conn.execute(
                self.ctx.db.upsert(
                    replication_configurations, ["account_id"], {"rules": None, "updated_at": None}
                ).values(account_id=account_id, rules=json.dumps(rules), updated_at=self.ctx.clock())
            )
        return rules


# ---- scanning --------------------------------------------------------------------------------------------------------
def validate_scanning(scan_type: str, rules: list[dict]) -> list[dict]:
    allowed = ("SCAN_ON_PUSH", "CONTINUOUS_SCAN") if scan_type == "ENHANCED" else ("SCAN_ON_PUSH",)
    clean = []
    seen: set[str] = set()
    for rule in rules:
        frequency = rule["scanFrequency"]
        if frequency not in allowed:
            raise ConfigurationInvalid(
                f"Invalid scanning configuration: scanFrequency {frequency} is not supported with scan type "
                f"{scan_type}; use {' or '.join(allowed)}"
            )
        if frequency in seen:
            raise ConfigurationInvalid(
                f"Invalid scanning configuration: more than one rule has scanFrequency {frequency}"
            )
        seen.add(frequency)
        filters = rule.get("repositoryFilters") or []
        if not filters:
            raise ConfigurationInvalid(
                "Invalid scanning configuration: every rule needs at least one repository filter"
            )
        clean.append(
            {
                "scanFrequency": frequency,
                "repositoryFilters": [{"filter": f["filter"], "filterType": f["filterType"]} for f in filters],
            }
        )
    return clean


class Scanning:
    def __init__(self, ctx: DomainContext) -> None:
        self.ctx = ctx

    def get(self, account_id: str) -> tuple[str, list[dict]]:
        with self.ctx.db.read() as conn:
            return scan_rules.configuration(conn, account_id)

    def put(self, account_id: str, scan_type: str, rules: list[dict]) -> tuple[str, list[dict]]:
        """Store the configuration and, in the same transaction, queue the one-shot ``scan_rules`` job that applies
        it to the images already stored (soko.scan.scans.Scans.apply_rules): ENHANCED scans for the images of
        repositories that become continuously scanned, statuses ACTIVE or COMPLETE as the frequency now says."""
        rules = validate_scanning(scan_type, rules)
        with self.ctx.transaction() as tx:
            before = scan_rules.configuration(tx.conn, account_id)
            tx.conn.execute(
                self.ctx.db.upsert(
                    scanning_configurations, ["account_id"], {"scan_type": None, "rules": None, "updated_at": None}
                ).values(account_id=account_id, scan_type=scan_type, rules=json.dumps(rules), updated_at=tx.now)
            )
            enqueue(self.ctx.db, tx.conn, scan_queue.RULES_KIND, account_id, tx.now)
            if scan_type == scan_rules.ENHANCED:
                self._announce_changes(tx, account_id, before, rules)
        return scan_type, rules

    def _announce_changes(
        self, tx: UnitOfWork, account_id: str, before: tuple[str, list[dict]], rules: list[dict]
    ) -> None:
        """ECR's ``ECR Scan Resource Change`` events (enhanced scanning): the repositories whose scan frequency the
        new rules change, at most 100 per event so an event stays small."""
        changed = []
        for repo in tx.conn.execute(sa.select(repositories.c.name, repositories.c.scan_on_push)
                                    .where(repositories.c.account_id == account_id).order_by(repositories.c.name)):
            old = scan_rules.applied(repo.name, bool(repo.scan_on_push), *before).frequency
            new = scan_rules.applied(repo.name, bool(repo.scan_on_push), scan_rules.ENHANCED, rules).frequency
            if old != new:
                changed.append((repo.name, new, old))
        for i in range(0, len(changed), 100):
            tx.emit(scan_resource_change(account_id, self.ctx.settings.region, changed[i:i + 100]))

    @staticmethod
    def effective(name: str, scan_on_push: bool, scan_type: str, rules: list[dict]) -> dict:
        """What applies to one repository, as BatchGetRepositoryScanningConfiguration answers it."""
        applied = scan_rules.applied(name, scan_on_push, scan_type, rules)
        return {"scanOnPush": applied.on_push, "scanFrequency": applied.frequency,
                "appliedScanFilters": applied.filters}
