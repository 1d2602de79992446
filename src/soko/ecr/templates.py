"""Repository creation templates: Create/Describe/Update/DeleteRepositoryCreationTemplate (wire format only: the
domain, ``soko.registry.templates``, validates them)."""

from __future__ import annotations

import dataclasses

from soko.access import Principal
from soko.ecr.api import Call
from soko.ecr.repositories import decode_token, encode_token
from soko.iam import ids
from soko.iam.directory import Directory, IamError, parse_role_arn
from soko.registry.repositories import ParameterInvalid
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


def _key_user(call: Call, template: Template) -> Principal:
    """Who must be allowed to use the template's KMS key through ECR: its ``customRoleArn`` (the role ECR uses to
    create repositories from a template with a KMS key: a role of this account that exists; its policies and the key
    policy decide), else the caller."""
    if not template.custom_role_arn or (template.encryption or {}).get("encryptionType", "AES256") == "AES256":
        return call.caller
    arn, account = template.custom_role_arn, template.account_id
    try:
        role_account, _, name = parse_role_arn(arn)
        if role_account != account:
            raise ParameterInvalid(
                f"Invalid parameter at 'customRoleArn' failed to satisfy constraint: 'the role {arn[:300]} must be in "
                f"the registry's account {account}'"
            )
        identity = call.api.identity
        role = Directory(identity.ctx, identity.master, identity.credentials).get_role(account, name)
    except IamError as exc:
        raise ParameterInvalid(
            f"Invalid parameter at 'customRoleArn' failed to satisfy constraint: '{str(exc)[:300]}'"
        ) from None
    role_arn = ids.role_arn(account, role["name"], role["path"])
    # As ECR: the caller must be allowed to pass the role (else any role of the account that may use a key would
    # lend it to a caller who may not).
    extra = dict(call.context.extra)
    extra["condition_keys"] = {**extra.get("condition_keys", {}), "iam:PassedToService": "ecr.amazonaws.com"}
    identity.authorizer.authorize(call.caller, "iam:PassRole", role_arn, None, call.context.with_extra(extra))
    session = ids.assumed_role_arn(account, role["name"], "ecr-repository-creation-template")
    return Principal(session, account, "AssumedRole", role_arn=role_arn)


def create_template(call: Call) -> dict:
    call.authorize("ecr:CreateRepositoryCreationTemplate")
    account = call.caller.account_id
    template = Template(account_id=account, prefix=call.params["prefix"], applied_for=[])
    template = dataclasses.replace(template, **_changes(call.params))
    stored = call.api.registry.templates.create(template, _key_user(call, template))
    return {"registryId": account, "repositoryCreationTemplate": template_json(stored)}


def describe_templates(call: Call) -> dict:
    call.authorize("ecr:DescribeRepositoryCreationTemplates")
    account = call.caller.account_id
    after = decode_token(call.params.get("nextToken"))
    page, more = call.api.registry.templates.page(
        account, call.params.get("prefixes"), after=after, limit=call.params.get("maxResults") or DEFAULT_PAGE
    )
    result: dict = {"registryId": account, "repositoryCreationTemplates": [template_json(t) for t in page]}
    if more and page:
        result["nextToken"] = encode_token(page[-1].prefix)
    return result


def update_template(call: Call) -> dict:
    call.authorize("ecr:UpdateRepositoryCreationTemplate")
    account = call.caller.account_id
    templates = call.api.registry.templates
    current = templates.get(account, call.params["prefix"])
    changes = _changes(call.params)
    if "imageTagMutability" in changes and "tag_mutability_filters" not in changes:
        changes["tag_mutability_filters"] = []
    updated = dataclasses.replace(current, **changes)
    key_changed = "encryption" in changes or "custom_role_arn" in changes
    stored = templates.replace(updated, _key_user(call, updated) if key_changed else None, key_changed=key_changed)
    return {"registryId": account, "repositoryCreationTemplate": template_json(stored)}


def delete_template(call: Call) -> dict:
    call.authorize("ecr:DeleteRepositoryCreationTemplate")
    account = call.caller.account_id
    deleted = call.api.registry.templates.delete(account, call.params["prefix"])
    return {"registryId": account, "repositoryCreationTemplate": template_json(deleted)}


OPERATIONS = {
    "CreateRepositoryCreationTemplate": create_template,
    "DescribeRepositoryCreationTemplates": describe_templates,
    "UpdateRepositoryCreationTemplate": update_template,
    "DeleteRepositoryCreationTemplate": delete_template,
}
