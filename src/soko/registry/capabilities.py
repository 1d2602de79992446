"""Settings Soko accepts only when it can carry them out.

ECR lets a caller ask for registry scanning rules and enhanced scanning, replication to other regions, KMS
encryption, archive transitions and templates for pull-through caches. A registry that stores such a setting and then
ignores it misleads the user who chose it (for compliance, say). Until the capability exists, the request is refused
here, in one place, with a message that says what is missing and what the caller can do instead. Each check is
called by the domain write that stores the setting, so the ECR API, templates and every later front end share it.
"""

from __future__ import annotations

from soko.errors import SokoError


class NotCarriedOut(SokoError):
    """A valid ECR setting that this Soko cannot carry out yet (ECR API: UnsupportedOperationException)."""


def require_basic_scanning_without_rules(scan_type: str, rules: list[dict]) -> None:
    if scan_type != "BASIC" or rules:
        raise NotCarriedOut(
            f"Registry scanning configuration (scanType {scan_type}, {len(rules)} rule(s)) cannot be carried out: "
            "this Soko scans with BASIC scanning on demand and on push per repository (scanOnPush), but does not yet "
            "apply registry scanning rules or ENHANCED scanning. Use scanType BASIC with no rules, and set scanOnPush "
            "on the repositories to scan on push (put-image-scanning-configuration)."
        )


def require_reachable_destinations(rules: list[dict], region: str) -> None:
    """Replication copies within this deployment (any account of this region); other regions are not reachable
    yet, so a rule naming one would copy nothing."""
    others = sorted({d["region"] for rule in rules for d in rule["destinations"] if d["region"] != region})
    if others:
        raise NotCarriedOut(
            f"Replication to region(s) {', '.join(others)} cannot be carried out: this Soko serves region {region} "
            "and replicates only to registries (accounts) of that region; no other region is reachable from it. "
            f"Use destinations in {region}, or copy images to other regions with skopeo sync."
        )


def require_aes256(encryption_type: str) -> None:
    if encryption_type != "AES256":
        raise NotCarriedOut(
            f"encryptionType {encryption_type} cannot be carried out: this Soko has no KMS keys yet, so the images "
            "would not be encrypted with the key you chose. Use encryptionType AES256 (the default)."
        )


def require_expire_actions_only(action_types: set[str]) -> None:
    if action_types - {"expire"}:
        raise NotCarriedOut(
            "Lifecycle rules with a transition action cannot be carried out: this Soko has no archive storage class "
            "yet, so no image would be archived. Use expire actions only."
        )


def require_create_on_push_only(applied_for: list[str]) -> None:
    supported = ("CREATE_ON_PUSH", "REPLICATION", "PULL_THROUGH_CACHE")
    unsupported = [purpose for purpose in applied_for if purpose not in supported]
    if unsupported:
        raise NotCarriedOut(
            f"Repository creation templates for {', '.join(unsupported)} cannot be carried out. Use appliedFor "
            "CREATE_ON_PUSH, REPLICATION or PULL_THROUGH_CACHE."
        )
