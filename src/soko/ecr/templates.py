"""Repository creation templates: Create/Describe/Update/DeleteRepositoryCreationTemplate.

A template's repository policy and lifecycle policy are validated here exactly as SetRepositoryPolicy and
PutLifecyclePolicy validate them, so a repository created from it never carries a document ECR would refuse.
"""

from __future__ import annotations

import dataclasses

from soko.ecr.api import Call
from soko.ecr.repositories import decode_token, domain, encode_token, invalid
from soko.iam.policy.keys import warn_unpopulated
from soko.registry.capabilities import require_create_on_push_only
from soko.registry.lifecycle_store import validate_policy as validate_lifecycle_policy
from soko.registry.policies import validate_repository_policy
from soko.registry.repositories import normalize_encryption, validate_mutability, validate_resource_tags
from soko.registry.templates import Template

DEFAULT_PAGE = 100


def template_json(template: Template) -> dict:
    out: dict = {
        "prefix": template.prefix,
        "appliedFor": template.applied_for,
        "encryptionConfiguration": template.encryption or {"encryptionType": "AES256"},
        "resourceTags": template.resource_tags,
        "imageTagMutability": template.tag_mutability,
        "createdAt": template.created_at,
        "updatedAt": template.updated_at,
    }
    if template.description:
        out["description"] = template.description
    if template.tag_mutability_filters:
        out["imageTagMutabilityExclusionFilters"] = template.tag_mutability_filters
    if template.repository_policy:
        out["repositoryPolicy"] = template.repository_policy
    if template.lifecycle_policy:
        out["lifecyclePolicy"] = template.lifecycle_policy
    if template.custom_role_arn:
        out["customRoleArn"] = template.custom_role_arn
    return out


def _validated(call: Call, template: Template) -> Template:
    if not template.applied_for:
        raise invalid(
            "appliedFor", "appliedFor must name at least one of REPLICATION, PULL_THROUGH_CACHE, CREATE_ON_PUSH"
        )
    require_create_on_push_only(template.applied_for)
    filters = validate_mutability(template.tag_mutability, template.tag_mutability_filters)
    tags = validate_resource_tags(template.resource_tags)
    normalize_encryption(template.encryption, call.api.settings.region, template.account_id)
    if template.repository_policy:
        policy = validate_repository_policy(template.repository_policy)
        warn_unpopulated(
            policy, f"the repository policy of creation template {template.prefix}", template.repository_policy
        )
    if template.lifecycle_policy:
        validate_lifecycle_policy(template.lifecycle_policy)
    return dataclasses.replace(
        template,
        applied_for=list(dict.fromkeys(template.applied_for)),
        tag_mutability_filters=filters,
        resource_tags=[{"Key": k, "Value": v} for k, v in tags.items()],
    )


_FIELDS = {
    "description": "description",
    "encryptionConfiguration": "encryption",
    "resourceTags": "resource_tags",
    "imageTagMutability": "tag_mutability",
    "imageTagMutabilityExclusionFilters": "tag_mutability_filters",
    "repositoryPolicy": "repository_policy",
    "lifecyclePolicy": "lifecycle_policy",
    "appliedFor": "applied_for",
    "customRoleArn": "custom_role_arn",
}


def _changes(params: dict) -> dict:
    return {attr: params[member] for member, attr in _FIELDS.items() if member in params}


def create_template(call: Call) -> dict:
    call.authorize("ecr:CreateRepositoryCreationTemplate")
    account = call.caller.account_id
    template = Template(account_id=account, prefix=call.params["prefix"], applied_for=[])
    template = dataclasses.replace(template, **_changes(call.params))
    stored = domain(call).templates.create(_validated(call, template))
    return {"registryId": account, "repositoryCreationTemplate": template_json(stored)}


def describe_templates(call: Call) -> dict:
    call.authorize("ecr:DescribeRepositoryCreationTemplates")
    account = call.caller.account_id
    after = decode_token(call.params.get("nextToken"))
    page, more = domain(call).templates.page(
        account, call.params.get("prefixes"), after=after, limit=call.params.get("maxResults") or DEFAULT_PAGE
    )
    result: dict = {"registryId": account, "repositoryCreationTemplates": [template_json(t) for t in page]}
    if more and page:
        result["nextToken"] = encode_token(page[-1].prefix)
    return result


def update_template(call: Call) -> dict:
    call.authorize("ecr:UpdateRepositoryCreationTemplate")
    account = call.caller.account_id
    templates = domain(call).templates
    current = templates.get(account, call.params["prefix"])
    changes = _changes(call.params)
    if "imageTagMutability" in changes and "tag_mutability_filters" not in changes:
        changes["tag_mutability_filters"] = []
    stored = templates.replace(_validated(call, dataclasses.replace(current, **changes)))
    return {"registryId": account, "repositoryCreationTemplate": template_json(stored)}


def delete_template(call: Call) -> dict:
    call.authorize("ecr:DeleteRepositoryCreationTemplate")
    account = call.caller.account_id
    deleted = domain(call).templates.delete(account, call.params["prefix"])
    return {"registryId": account, "repositoryCreationTemplate": template_json(deleted)}


OPERATIONS = {
    "CreateRepositoryCreationTemplate": create_template,
    "DescribeRepositoryCreationTemplates": describe_templates,
    "UpdateRepositoryCreationTemplate": update_template,
    "DeleteRepositoryCreationTemplate": delete_template,
}
