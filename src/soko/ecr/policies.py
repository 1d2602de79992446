"""Repository policies (Set/Get/DeleteRepositoryPolicy) and the registry policy (Put/Get/DeleteRegistryPolicy)."""

from __future__ import annotations

from soko.access import Principal, RequestContext, repository_arn
from soko.ecr.api import Call
from soko.ecr.repositories import invalid
from soko.iam.authorizer import policy_principal
from soko.iam.policy import AuthzRequest, MalformedPolicy, Policy, PolicyKind, evaluate, parse_policy
from soko.iam.service import Identity
from soko.registry import Registry
from soko.registry.policies import RegistryPolicyNotFound, validate_registry_policy, validate_repository_policy

LOCKOUT = (
    "The repository policy would prevent the caller from setting a repository policy in the future; "
    "use the force flag to set it anyway"
)


def would_lock_out(
    identity: Identity,
    registry: Registry,
    caller: Principal,
    context: RequestContext,
    account: str,
    name: str,
    new_policy: Policy,
) -> bool:
    """Would the caller no longer be allowed ecr:SetRepositoryPolicy on the repository once ``new_policy`` applies?
    (SetRepositoryPolicy without force, and the console's policy editor, refuse such a policy.)"""
    identity_policies = []
    for text in identity.credentials.identity_policies(caller):
        try:
            identity_policies.append(parse_policy(text, PolicyKind.IDENTITY))
        except MalformedPolicy:
            continue
    resource = [new_policy]
    try:
        registry_text = registry.policies.registry_policy(account)
        resource.append(parse_policy(registry_text, PolicyKind.REGISTRY))
    except (RegistryPolicyNotFound, MalformedPolicy):
        pass
    arn = repository_arn(registry.settings.region, account, name)
    conditions = identity.authorizer.condition_keys(context, "ecr:SetRepositoryPolicy", arn, account)
    request = AuthzRequest(
        principal=policy_principal(caller),
        action="ecr:SetRepositoryPolicy",
        resource=arn,
        resource_account=account,
        context=conditions,
    )
    return not evaluate(request, identity_policies=identity_policies, resource_policies=resource).allowed


def set_repository_policy(call: Call) -> dict:
    ref = call.repo()
    call.authorize("ecr:SetRepositoryPolicy", ref.name)
    text = call.params["policyText"]
    policy = validate_repository_policy(text)
    call.api.registry.repositories.get(ref)  # RepositoryNotFound before the lock-out check
    api = call.api
    if not call.params.get("force") and would_lock_out(
        api.identity, api.registry, call.caller, call.context, call.registry_id, ref.name, policy
    ):
        raise invalid("PolicyText", LOCKOUT)
    call.api.registry.policies.set_repository_policy(ref, text)
    return {"registryId": ref.account_id, "repositoryName": ref.name, "policyText": text}


def get_repository_policy(call: Call) -> dict:
    ref = call.repo()
    call.authorize("ecr:GetRepositoryPolicy", ref.name)
    text = call.api.registry.policies.repository_policy(ref)
    return {"registryId": ref.account_id, "repositoryName": ref.name, "policyText": text}


def delete_repository_policy(call: Call) -> dict:
    ref = call.repo()
    call.authorize("ecr:DeleteRepositoryPolicy", ref.name)
    text = call.api.registry.policies.delete_repository_policy(ref)
    return {"registryId": ref.account_id, "repositoryName": ref.name, "policyText": text}


def put_registry_policy(call: Call) -> dict:
    call.authorize("ecr:PutRegistryPolicy")
    account = call.caller.account_id
    d = call.api.registry
    scope = d.account_settings.get(account, "REGISTRY_POLICY_SCOPE")
    text = call.params["policyText"]
    validate_registry_policy(text, scope)
    d.policies.put_registry_policy(account, text, scope)
    return {"registryId": account, "policyText": text}


def get_registry_policy(call: Call) -> dict:
    call.authorize("ecr:GetRegistryPolicy")
    account = call.caller.account_id
    return {"registryId": account, "policyText": call.api.registry.policies.registry_policy(account)}


def delete_registry_policy(call: Call) -> dict:
    call.authorize("ecr:DeleteRegistryPolicy")
    account = call.caller.account_id
    return {"registryId": account, "policyText": call.api.registry.policies.delete_registry_policy(account)}


OPERATIONS = {
    "SetRepositoryPolicy": set_repository_policy,
    "GetRepositoryPolicy": get_repository_policy,
    "DeleteRepositoryPolicy": delete_repository_policy,
    "PutRegistryPolicy": put_registry_policy,
    "GetRegistryPolicy": get_registry_policy,
    "DeleteRegistryPolicy": delete_registry_policy,
}
