"""ECR managed signing: Put/Get/DeleteSigningConfiguration and DescribeImageSigningStatus (the signing itself:
``soko.signing``)."""

from __future__ import annotations

from soko.ecr.api import Call
from soko.ecr.scanning import _image_id, _out_id, _resolve
from soko.signing.config import SigningConfigurations


def _configurations(call: Call) -> SigningConfigurations:
    return SigningConfigurations(call.api.registry.ctx, call.api.identity.master)


def put_signing_configuration(call: Call) -> dict:
    call.authorize("ecr:PutSigningConfiguration")
    rules = _configurations(call).put(call.caller.account_id, call.params["signingConfiguration"]["rules"])
    return {"signingConfiguration": {"rules": rules}}


def get_signing_configuration(call: Call) -> dict:
    call.authorize("ecr:GetSigningConfiguration")
    account = call.caller.account_id
    return {"registryId": account, "signingConfiguration": {"rules": _configurations(call).get(account)}}


def delete_signing_configuration(call: Call) -> dict:
    call.authorize("ecr:DeleteSigningConfiguration")
    account = call.caller.account_id
    return {"registryId": account, "signingConfiguration": {"rules": _configurations(call).delete(account)}}


def describe_image_signing_status(call: Call) -> dict:
    ref = call.repo()
    call.authorize("ecr:DescribeImageSigningStatus", ref.name)
    image_id = _image_id(call)
    digest = _resolve(call, image_id)  # ImageNotFound / RepositoryNotFound first
    repo_id = call.api.registry.repositories.get(ref).id
    statuses = []
    for status in _configurations(call).statuses(repo_id, digest):
        out = {"signingProfileArn": status.profile_arn, "status": status.status}
        if status.failure_code:
            out["failureCode"] = status.failure_code
        if status.failure_reason:
            out["failureReason"] = status.failure_reason
        statuses.append(out)
    return {
        "registryId": ref.account_id,
        "repositoryName": ref.name,
        "imageId": _out_id(digest, image_id),
        "signingStatuses": statuses,
    }


OPERATIONS = {
    "PutSigningConfiguration": put_signing_configuration,
    "GetSigningConfiguration": get_signing_configuration,
    "DeleteSigningConfiguration": delete_signing_configuration,
    "DescribeImageSigningStatus": describe_image_signing_status,
}
