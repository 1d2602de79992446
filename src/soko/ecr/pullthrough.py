"""Pull-through cache rules: Create/Describe/Update/Delete/ValidatePullThroughCacheRule (wire format only; the room
``soko.pullthrough`` holds the rules and the cache)."""

from __future__ import annotations

import re

from soko.aws.errors import ServiceError
from soko.ecr.api import Call
from soko.ecr.repositories import decode_token, encode_token
from soko.pullthrough.cache import CredentialsUnusable
from soko.pullthrough.rules import ROOT, Rule, check_url, refuse_roles

DEFAULT_PAGE = 100
# botocore's CredentialArn pattern; the secret must be of the rule's account and this region
_CREDENTIAL_ARN = re.compile(
    r"arn:aws(-\w+)*:secretsmanager:(?P<region>[a-zA-Z0-9-]+):(?P<account>\d{12}):secret:ecr\-pullthroughcache/[a-zA-Z0-9/_+=.@-]+"
)


def rule_json(rule: Rule, *, created: bool = True, updated: bool = True) -> dict:
    out: dict = {
        "ecrRepositoryPrefix": rule.prefix,
        "upstreamRegistryUrl": rule.upstream_registry_url,
        "registryId": rule.account_id,
        "upstreamRepositoryPrefix": rule.upstream_repository_prefix,
    }
    if created:
        out["createdAt"] = rule.created_at
    if updated:
        out["updatedAt"] = rule.updated_at
    if rule.upstream_registry:
        out["upstreamRegistry"] = rule.upstream_registry
    if rule.credential_arn:
        out["credentialArn"] = rule.credential_arn
    return out


def _check_credential(call: Call, account: str, arn: str | None, prefix: str) -> None:
    """The secret must match ECR's pattern, be of this account and region, and hold usable credentials."""
    if arn is None:
        return
    match = _CREDENTIAL_ARN.fullmatch(arn)
    if match is None or match["account"] != account or match["region"] != call.api.settings.region:
        raise ServiceError(
            "InvalidParameterException",
            f"Invalid parameter at 'credentialArn' failed to satisfy constraint: the secret must be named "
            f"ecr-pullthroughcache/… in account {account} and region {call.api.settings.region}",
        )
    probe = Rule(account, prefix, "localhost", None, ROOT, arn, 0, 0.0, 0.0)
    try:
        call.api.pull_through.credentials(probe)
    except CredentialsUnusable as exc:
        raise ServiceError(f"{exc.code}Exception", exc.message) from None


def create_rule(call: Call) -> dict:
    call.authorize("ecr:CreatePullThroughCacheRule")
    account = call.registry_id
    params = call.params
    refuse_roles(params.get("customRoleArn"), params.get("upstreamRoleArn"))
    url = check_url(params["upstreamRegistryUrl"], params.get("upstreamRegistry"))
    prefix = params["ecrRepositoryPrefix"].rstrip("/") if params["ecrRepositoryPrefix"] != ROOT else ROOT
    upstream_prefix = params.get("upstreamRepositoryPrefix") or ROOT
    if upstream_prefix != ROOT:
        upstream_prefix = upstream_prefix.rstrip("/")
    _check_credential(call, account, params.get("credentialArn"), prefix)
    now = call.api.registry.ctx.clock()
    rule = Rule(
        account, prefix, url, params.get("upstreamRegistry"), upstream_prefix, params.get("credentialArn"), 1, now, now
    )
    stored = call.api.pull_through.rules.create(rule)
    return rule_json(stored, updated=False)


def describe_rules(call: Call) -> dict:
    call.authorize("ecr:DescribePullThroughCacheRules")
    account = call.registry_id
    prefixes = call.params.get("ecrRepositoryPrefixes")
    if prefixes and call.params.get("nextToken"):
        raise ServiceError("InvalidParameterException", "nextToken cannot be combined with ecrRepositoryPrefixes")
    page, more = call.api.pull_through.rules.page(
        account,
        [p.rstrip("/") if p != ROOT else p for p in prefixes] if prefixes else None,
        after=decode_token(call.params.get("nextToken")),
        limit=call.params.get("maxResults") or DEFAULT_PAGE,
    )
    result: dict = {"pullThroughCacheRules": [rule_json(rule) for rule in page]}
    if more and page:
        result["nextToken"] = encode_token(page[-1].prefix)
    return result


def update_rule(call: Call) -> dict:
    call.authorize("ecr:UpdatePullThroughCacheRule")
    account = call.registry_id
    params = call.params
    refuse_roles(params.get("customRoleArn"), params.get("upstreamRoleArn"))
    prefix = params["ecrRepositoryPrefix"].rstrip("/") if params["ecrRepositoryPrefix"] != ROOT else ROOT
    cache = call.api.pull_through
    cache.rules.get(account, prefix)  # RuleNotFound before the secret is looked at
    _check_credential(call, account, params.get("credentialArn"), prefix)
    stored = cache.update_rule(account, prefix, params.get("credentialArn"), call.api.registry.ctx.clock())
    out = rule_json(stored, created=False)
    out.pop("upstreamRegistryUrl", None)
    out.pop("upstreamRegistry", None)
    return out


def delete_rule(call: Call) -> dict:
    call.authorize("ecr:DeletePullThroughCacheRule")
    account = call.registry_id
    prefix = call.params["ecrRepositoryPrefix"]
    deleted = call.api.pull_through.delete_rule(account, prefix.rstrip("/") if prefix != ROOT else prefix)
    return rule_json(deleted, updated=False)


def validate_rule(call: Call) -> dict:
    call.authorize("ecr:ValidatePullThroughCacheRule")
    account = call.registry_id
    prefix = call.params["ecrRepositoryPrefix"]
    cache = call.api.pull_through
    rule = cache.rules.get(account, prefix.rstrip("/") if prefix != ROOT else prefix)
    failure = cache.validate(rule)
    out = rule_json(rule, created=False, updated=False)
    out["isValid"] = failure is None
    if failure is not None:
        out["failure"] = failure
    return out


OPERATIONS = {
    "CreatePullThroughCacheRule": create_rule,
    "DescribePullThroughCacheRules": describe_rules,
    "UpdatePullThroughCacheRule": update_rule,
    "DeletePullThroughCacheRule": delete_rule,
    "ValidatePullThroughCacheRule": validate_rule,
}
