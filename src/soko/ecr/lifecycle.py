"""ECR lifecycle-policy operations: Put/Get/DeleteLifecyclePolicy, StartLifecyclePolicyPreview,
GetLifecyclePolicyPreview. Storage and the asynchronous preview live in :mod:`soko.registry.lifecycle_store`."""

from __future__ import annotations

from collections.abc import Callable

from soko.aws.errors import ServiceError
from soko.ecr.api import Call
from soko.registry.images import decode_token, encode_token
from soko.registry.lifecycle_store import (
    COMPLETE,
    LifecyclePolicyInvalid,
    LifecyclePolicyNotFound,
    LifecyclePolicyPreviewInProgress,
    LifecyclePolicyPreviewNotFound,
    StoredPolicy,
)

_ERRORS = {
    LifecyclePolicyInvalid: "InvalidParameterException",
    LifecyclePolicyNotFound: "LifecyclePolicyNotFoundException",
    LifecyclePolicyPreviewInProgress: "LifecyclePolicyPreviewInProgressException",
    LifecyclePolicyPreviewNotFound: "LifecyclePolicyPreviewNotFoundException",
}


def _mapped(handler: Callable[[Call], dict]) -> Callable[[Call], dict]:
    def run(call: Call) -> dict:
        try:
            return handler(call)
        except tuple(_ERRORS) as exc:
            raise ServiceError(_ERRORS[type(exc)], exc.message) from None

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run


def _base(call: Call) -> dict:
    ref = call.repo()
    return {"registryId": ref.account_id, "repositoryName": ref.name}


def _last_evaluated(stored: StoredPolicy) -> float:
    """ECR always answers lastEvaluatedAt; a policy never evaluated yet shows the epoch (0), as ECR's does."""
    return stored.last_evaluated_at if stored.last_evaluated_at is not None else 0.0


@_mapped
def put_lifecycle_policy(call: Call) -> dict:
    ref = call.repo()
    call.authorize("ecr:PutLifecyclePolicy", ref.name)
    stored = call.api.registry.lifecycle.put(ref, call.params["lifecyclePolicyText"])
    return {**_base(call), "lifecyclePolicyText": stored.text}


@_mapped
def get_lifecycle_policy(call: Call) -> dict:
    ref = call.repo()
    call.authorize("ecr:GetLifecyclePolicy", ref.name)
    stored = call.api.registry.lifecycle.get(ref)
    return {**_base(call), "lifecyclePolicyText": stored.text, "lastEvaluatedAt": _last_evaluated(stored)}


@_mapped
def delete_lifecycle_policy(call: Call) -> dict:
    ref = call.repo()
    call.authorize("ecr:DeleteLifecyclePolicy", ref.name)
    stored = call.api.registry.lifecycle.delete(ref)
    return {**_base(call), "lifecyclePolicyText": stored.text, "lastEvaluatedAt": _last_evaluated(stored)}


@_mapped
def start_lifecycle_policy_preview(call: Call) -> dict:
    ref = call.repo()
    call.authorize("ecr:StartLifecyclePolicyPreview", ref.name)
    text = call.api.registry.lifecycle.start_preview(ref, call.params.get("lifecyclePolicyText"))
    return {**_base(call), "lifecyclePolicyText": text, "status": "IN_PROGRESS"}


def _selected(result: dict, tag_status: str, image_ids: list[dict] | None) -> bool:
    tagged = bool(result["imageTags"])
    if (tag_status == "TAGGED" and not tagged) or (tag_status == "UNTAGGED" and tagged):
        return False
    if image_ids:
        return any(
            (not i.get("imageDigest") or i["imageDigest"] == result["imageDigest"])
            and (not i.get("imageTag") or i["imageTag"] in result["imageTags"])
            and (i.get("imageDigest") or i.get("imageTag"))
            for i in image_ids
        )
    return True


@_mapped
def get_lifecycle_policy_preview(call: Call) -> dict:
    ref = call.repo()
    call.authorize("ecr:GetLifecyclePolicyPreview", ref.name)
    image_ids = call.params.get("imageIds")
    if image_ids and any(k in call.params for k in ("nextToken", "maxResults")):
        raise ServiceError(
            "InvalidParameterException",
            "Invalid parameter: nextToken and maxResults cannot be used together with imageIds",
        )
    state = call.api.registry.lifecycle.get_preview(ref)
    out: dict = {**_base(call), "lifecyclePolicyText": state.policy_text, "status": state.status}
    if state.status != COMPLETE:
        out["previewResults"] = []
        return out
    tag_status = (call.params.get("filter") or {}).get("tagStatus", "ANY")
    results = [r for r in state.results if _selected(r, tag_status, image_ids)]
    position = decode_token(call.params.get("nextToken"), ("offset",))
    start = position["offset"] if position and isinstance(position["offset"], int) and position["offset"] >= 0 else 0
    limit = call.params.get("maxResults") or (len(results) if image_ids else 100)
    page = results[start : start + limit]
    out["previewResults"] = page
    out["summary"] = state.summary or {"expiringImageTotalCount": 0}
    if start + limit < len(results):
        out["nextToken"] = encode_token({"offset": start + limit})
    return out


OPERATIONS = {
    "PutLifecyclePolicy": put_lifecycle_policy,
    "GetLifecyclePolicy": get_lifecycle_policy,
    "DeleteLifecyclePolicy": delete_lifecycle_policy,
    "StartLifecyclePolicyPreview": start_lifecycle_policy_preview,
    "GetLifecyclePolicyPreview": get_lifecycle_policy_preview,
}
