"""Settings Soko accepts only when it can carry them out.

ECR lets a caller ask for replication to other regions, KMS encryption, archiving and templates for pull-through
caches. A registry that stores such a setting and then ignores it misleads the user who chose it (for compliance,
say). Until the capability exists, the request is refused here, in one place, with a message that says what is
missing and what the caller can do instead. Each check is called by the domain write that stores the setting, so the
ECR API, templates and every later front end share it.
"""

from __future__ import annotations

from soko.errors import SokoError


class NotCarriedOut(SokoError):
    """A valid ECR setting that this Soko cannot carry out yet (ECR API: UnsupportedOperationException)."""


def require_account_setting_carried_out(name: str, value: str) -> None:
    """BASIC_SCAN_TYPE_VERSION CLAIR asks for ECR's other basic-scan engine; Soko's basic scans have one (soko.scan),
    so storing CLAIR would change nothing."""
    if name == "BASIC_SCAN_TYPE_VERSION" and value == "CLAIR":
        raise NotCarriedOut(
            "BASIC_SCAN_TYPE_VERSION CLAIR cannot be carried out: this Soko's basic scans use its own scanner, "
            "there is no Clair engine. Use AWS_NATIVE (the default)."
        )


def require_no_delete_replication(rules: list[dict]) -> None:
    if any((rule.get("deleteReplication") or {}).get("enabled") for rule in rules):
        raise NotCarriedOut(
            "deleteReplication cannot be carried out: this Soko replicates pushes only, never deletes, so deleted "
            "images would stay at the destinations. Leave deleteReplication out (or enabled=false)."
        )


def require_reachable_destinations(rules: list[dict], region: str, regions: dict) -> None:
    """Replication copies within this deployment (any account of this region) and to the registries of other
    regions listed in the ``regions`` setting; a rule naming any other would copy nothing."""
    unreachable = sorted(
        {
            f"{d['registryId']} in {d['region']}"
            for rule in rules
            for d in rule["destinations"]
            if d["region"] != region and d["registryId"] not in (regions.get(d["region"]) or {}).get("accounts", {})
        }
    )
    if unreachable:
        raise NotCarriedOut(
            f"Replication to {', '.join(unreachable)} cannot be carried out: this Soko serves region {region} and "
            "reaches other regions only through the deployments listed in its regions setting, with a key for each "
            f"destination account; none is configured for these. Use destinations in {region}, or configure the "
            "region (README, Replication)."
        )


def require_service_key_for_archive(encryption_type: str, repository: str) -> None:
    """The archive tier holds service-key (AES256) content; a KMS repository's blobs are stored per customer key."""
    if encryption_type != "AES256":
        raise NotCarriedOut(
            f"Archiving images of repository '{repository}' (encryptionType {encryption_type}) cannot be carried out: "
            "this Soko moves only content encrypted with the service key (AES256) to the archive storage class, and "
            "this repository's content is stored under its KMS key. Archive images of AES256 repositories, or keep "
            "these in standard storage (use expire actions)."
        )


def require_create_on_push_only(applied_for: list[str]) -> None:
    supported = ("CREATE_ON_PUSH", "REPLICATION", "PULL_THROUGH_CACHE")
    unsupported = [purpose for purpose in applied_for if purpose not in supported]
    if unsupported:
        raise NotCarriedOut(
            f"Repository creation templates for {', '.join(unsupported)} cannot be carried out. Use appliedFor "
            "CREATE_ON_PUSH, REPLICATION or PULL_THROUGH_CACHE."
        )
