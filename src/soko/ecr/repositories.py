"""Repositories over the ECR API: Create/Describe/DeleteRepository, PutImageTagMutability,
PutImageScanningConfiguration, and resource tags (Tag/Untag/ListTagsForResource).

Every handler authorizes before it looks anything up, so a caller without access learns nothing about whether a
repository exists (AccessDenied, never RepositoryNotFound).
"""

from __future__ import annotations

import base64
import binascii
import json
import re

from soko.access import repository_arn
from soko.aws.errors import ServiceError
from soko.ecr.api import Call
from soko.ecr.auth import proxy_endpoint
from soko.iam.policy.keys import request_tag_keys
from soko.registry.models import RepoRef, Repository
from soko.registry.repositories import normalize_encryption

DEFAULT_PAGE = 100
_ARN = re.compile(r"arn:aws[a-z-]*:ecr:([a-z0-9-]+):([0-9]{12}):repository/(.+)")


def invalid(member: str, constraint: str) -> ServiceError:
    return ServiceError(
        "InvalidParameterException", f"Invalid parameter at '{member}' failed to satisfy constraint: '{constraint}'"
    )


# ---- pagination ------------------------------------------------------------------------------------------------------
def encode_token(after: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode()


def decode_token(token: str | None) -> str | None:
    if not token:
        return None
    try:
        after = json.loads(base64.urlsafe_b64decode(token.encode()))["after"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise invalid("nextToken", "Invalid pagination token") from None
    if not isinstance(after, str):
        raise invalid("nextToken", "Invalid pagination token")
    return after


# ---- rendering -------------------------------------------------------------------------------------------------------
def repository_uri(call: Call, repo: Repository) -> str:
    # ECR's form, <account>.dkr.ecr.<region>.<domain>/<name>, which any principal with access can use once that name
    # resolves (README: DNS set-up). Only the default account's own principals get the bare host they addressed.
    endpoint = proxy_endpoint(call, repo.account_id, bare_host_ok=repo.account_id == call.api.settings.account_id)
    return f"{endpoint.split('://', 1)[1]}/{repo.name}"


def repository_json(call: Call, repo: Repository) -> dict:
    encryption: dict = {"encryptionType": repo.encryption_type}
    if repo.kms_key:
        encryption["kmsKey"] = repo.kms_key
    out: dict = {
        "repositoryArn": repository_arn(call.api.settings.region, repo.account_id, repo.name),
        "registryId": repo.account_id,
        "repositoryName": repo.name,
        "repositoryUri": repository_uri(call, repo),
        "createdAt": repo.created_at,
        "imageTagMutability": repo.tag_mutability,
        "imageScanningConfiguration": {"scanOnPush": repo.scan_on_push},
        "encryptionConfiguration": encryption,
    }
    if repo.tag_mutability_filters:
        out["imageTagMutabilityExclusionFilters"] = repo.tag_mutability_filters
    return out


# ---- repositories ----------------------------------------------------------------------------------------------------
def create_repository(call: Call) -> dict:
    p = call.params
    ref = call.repo()
    request_tags = request_tag_keys(p.get("tags"))
    call.authorize("ecr:CreateRepository", ref.name, condition_keys=request_tags)
    if p.get("tags"):
        call.authorize("ecr:TagResource", ref.name, condition_keys=request_tags)
    kind, key = normalize_encryption(p.get("encryptionConfiguration"), call.api.settings.region, ref.account_id)
    repo = call.api.registry.repositories.create(
        ref,
        tag_mutability=p.get("imageTagMutability") or "MUTABLE",
        tag_mutability_filters=p.get("imageTagMutabilityExclusionFilters"),
        scan_on_push=bool((p.get("imageScanningConfiguration") or {}).get("scanOnPush", False)),
        encryption_type=kind,
        kms_key=key,
        tags=p.get("tags"),
        key_user=call.caller,
    )
    return {"repository": repository_json(call, repo)}


def describe_repositories(call: Call) -> dict:
    p = call.params
    repositories = call.api.registry.repositories
    names = p.get("repositoryNames")
    if names:
        if p.get("nextToken") or p.get("maxResults"):
            raise invalid("repositoryNames", "nextToken and maxResults cannot be used together with repositoryNames")
        out = []
        for name in dict.fromkeys(names):
            call.authorize("ecr:DescribeRepositories", name)
            out.append(repository_json(call, repositories.get(RepoRef(call.registry_id, name))))
        return {"repositories": out}
    call.authorize("ecr:DescribeRepositories", "*")
    after = decode_token(p.get("nextToken"))
    page, more = repositories.page(call.registry_id, after=after, limit=p.get("maxResults") or DEFAULT_PAGE)
    result: dict = {"repositories": [repository_json(call, r) for r in page]}
    if more and page:
        result["nextToken"] = encode_token(page[-1].name)
    return result


def delete_repository(call: Call) -> dict:
    ref = call.repo()
    call.authorize("ecr:DeleteRepository", ref.name)
    repo = call.api.registry.repositories.delete(ref, force=bool(call.params.get("force")))
    return {"repository": repository_json(call, repo)}


def put_image_tag_mutability(call: Call) -> dict:
    p = call.params
    ref = call.repo()
    call.authorize("ecr:PutImageTagMutability", ref.name)
    repo = call.api.registry.repositories.set_tag_mutability(
        ref, p["imageTagMutability"], p.get("imageTagMutabilityExclusionFilters")
    )
    out: dict[str, object] = {
        "registryId": repo.account_id,
        "repositoryName": repo.name,
        "imageTagMutability": repo.tag_mutability,
    }
    if repo.tag_mutability_filters:
        out["imageTagMutabilityExclusionFilters"] = repo.tag_mutability_filters
    return out


def put_image_scanning_configuration(call: Call) -> dict:
    ref = call.repo()
    call.authorize("ecr:PutImageScanningConfiguration", ref.name)
    scan_on_push = bool(call.params["imageScanningConfiguration"].get("scanOnPush", False))
    repo = call.api.registry.repositories.set_scan_on_push(ref, scan_on_push)
    return {
        "registryId": repo.account_id,
        "repositoryName": repo.name,
        "imageScanningConfiguration": {"scanOnPush": repo.scan_on_push},
    }


# ---- resource tags ---------------------------------------------------------------------------------------------------
def _arn_repo(call: Call) -> RepoRef:
    arn = call.params["resourceArn"]
    match = _ARN.fullmatch(arn)
    if match is None:
        raise invalid("resourceArn", "Invalid ARN")  # ECR's exact words (only repository ARNs are taggable)
    region, account, name = match.groups()
    if region != call.api.settings.region:
        raise invalid("resourceArn", f"Invalid ARN: region '{region}' is not this registry's region")
    return RepoRef(account, name)


def tag_resource(call: Call) -> dict:
    ref = _arn_repo(call)
    call.authorize("ecr:TagResource", ref.name, ref.account_id, request_tag_keys(call.params["tags"]))
    call.api.registry.repositories.tag(ref, call.params["tags"])
    return {}


def untag_resource(call: Call) -> dict:
    ref = _arn_repo(call)
    call.authorize("ecr:UntagResource", ref.name, ref.account_id, request_tag_keys(keys=call.params["tagKeys"]))
    call.api.registry.repositories.untag(ref, call.params["tagKeys"])
    return {}


def list_tags_for_resource(call: Call) -> dict:
    ref = _arn_repo(call)
    call.authorize("ecr:ListTagsForResource", ref.name, ref.account_id)
    return {"tags": call.api.registry.repositories.resource_tags(ref)}


OPERATIONS = {
    "CreateRepository": create_repository,
    "DescribeRepositories": describe_repositories,
    "DeleteRepository": delete_repository,
    "PutImageTagMutability": put_image_tag_mutability,
    "PutImageScanningConfiguration": put_image_scanning_configuration,
    "TagResource": tag_resource,
    "UntagResource": untag_resource,
    "ListTagsForResource": list_tags_for_resource,
}
