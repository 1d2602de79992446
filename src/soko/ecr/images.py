"""ECR image operations: PutImage, BatchGetImage, BatchDeleteImage, ListImages, DescribeImages,
ListImageReferrers (DescribeImages carries each image's scan status: ``ecr/scanning.py``).

Every write and every manifest read goes through the domain's ``Manifests`` service (the one /v2/ uses); the
listing queries live in :mod:`soko.registry.images`.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from soko.aws.errors import ServiceError
from soko.digest import Digest, compute
from soko.ecr.api import Call
from soko.errors import DigestInvalid
from soko.names import validate_tag
from soko.pullthrough.cache import CachedManifest, CredentialsUnusable, UpstreamFailed
from soko.registry.images import ImageDetail, ImageFailed, ImageFailure, decode_token, encode_token
from soko.registry.models import RepoRef
from soko.signing.config import sign_payload_check


def _failure(f: ImageFailure) -> dict:
    return {"imageId": f.image_id, "failureCode": f.code, "failureReason": f.reason}


def _manifest_text(payload: bytes) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:  # not pushable through PutImage, but /v2/ stores bytes; never fail a read on it
        return payload.decode("utf-8", errors="replace")


def _no_pagination_with_ids(call: Call) -> None:
    if call.params.get("imageIds") and any(k in call.params for k in ("nextToken", "maxResults", "filter")):
        raise ServiceError(
            "InvalidParameterException",
            "Invalid parameter: nextToken, maxResults and filter cannot be used together with imageIds",
        )


# ---- PutImage -------------------------------------------------------------------------------------------------
def _declares_media_type(text: str) -> bool:
    """Whether the manifest names its own mediaType (text that is not a JSON object is left to the domain's checks)."""
    try:
        doc = json.loads(text)
    except ValueError:
        return True
    return not isinstance(doc, dict) or isinstance(doc.get("mediaType"), str)


def put_image(call: Call) -> dict:
    ref = call.repo()
    call.authorize("ecr:PutImage", ref.name)
    text: str = call.params["imageManifest"]
    payload = text.encode("utf-8")
    tag: str | None = call.params.get("imageTag")
    claimed: str | None = call.params.get("imageDigest")
    if tag is not None:
        validate_tag(tag)
    digest = compute(payload)
    if claimed is not None:
        try:
            algorithm = Digest.parse(claimed).algorithm
        except DigestInvalid as exc:
            raise ServiceError(
                "InvalidParameterException",
                f"Invalid parameter at 'imageDigest' failed to satisfy constraint: '{exc.message}'",
            ) from None
        digest = compute(payload, algorithm)
        if digest != claimed:
            raise ServiceError(
                "ImageDigestDoesNotMatchException",
                f"Invalid parameter at 'imageDigest': the provided digest '{claimed}' does not match the digest "
                f"of the image manifest ('{digest}')",
            )
    media_type = call.params.get("imageManifestMediaType")
    if media_type is None and not _declares_media_type(text):
        # ECR does not guess (Distribution's PUT has its Content-Type; PutImage has only this parameter).
        raise ServiceError(
            "InvalidParameterException",
            "Invalid parameter at 'imageManifestMediaType' failed to satisfy constraint: 'the image manifest has no "
            "mediaType field, so imageManifestMediaType must name its media type'",
        )
    may_sign = sign_payload_check(call.api.identity.authorizer, call.caller, call.context)
    result = call.api.registry.manifests.put(ref, tag or digest, payload, media_type, may_sign=may_sign)
    if not result.created and not result.tag_moved:
        raise ServiceError(
            "ImageAlreadyExistsException",
            f"Image with digest '{result.digest}' and tag '{tag or 'null'}' already exists in the repository with "
            f"name '{ref.name}' in registry with id '{ref.account_id}'",
        )
    record = call.api.registry.manifests.get(ref, result.digest)
    image_id = {"imageDigest": result.digest, **({"imageTag": tag} if tag else {})}
    return {
        "image": {
            "registryId": ref.account_id,
            "repositoryName": ref.name,
            "imageId": image_id,
            "imageManifest": text,
            "imageManifestMediaType": record.media_type,
        }
    }


# ---- BatchGetImage / BatchDeleteImage -------------------------------------------------------------------------
def batch_get_image(call: Call) -> dict:
    ref = call.repo()
    call.authorize("ecr:BatchGetImage", ref.name)
    found, failures = call.api.registry.images.batch_get(
        ref, call.params["imageIds"], call.params.get("acceptedMediaTypes"), _through_cache(call, ref)
    )
    return {
        "images": [
            {
                "registryId": ref.account_id,
                "repositoryName": ref.name,
                "imageId": image.image_id,
                "imageManifest": _manifest_text(image.manifest),
                "imageManifestMediaType": image.media_type,
            }
            for image in found
        ],
        "failures": [_failure(f) for f in failures],
    }


def _through_cache(call: Call, ref: RepoRef) -> Callable[[str], CachedManifest] | None:
    """A repository under a pull-through cache rule is read through the cache as ECR does: what it lacks is fetched
    from the upstream (creating the repository; ecr:BatchImportUpstreamImage), an upstream failure is the image's
    failure (UpstreamAccessDenied, UpstreamTooManyRequests, UpstreamUnavailable), and unusable credentials fail
    the call (UnableToGetUpstreamImageException)."""
    cache = call.api.pull_through
    rule = cache.rule_for(ref)
    if rule is None:
        return None

    def authorize(action: str) -> None:
        call.authorize(action, ref.name)

    def fetch(reference: str) -> CachedManifest:
        try:
            return cache.manifest(ref, rule, reference, authorize, record_pull=True)
        except UpstreamFailed as exc:
            raise ImageFailed(exc.code, exc.message) from None
        except CredentialsUnusable as exc:
            raise ServiceError("UnableToGetUpstreamImageException", f"{exc.code}: {exc.message}") from None

    return fetch


def batch_delete_image(call: Call) -> dict:
    ref = call.repo()
    call.authorize("ecr:BatchDeleteImage", ref.name)
    deleted, failures = call.api.registry.images.batch_delete(ref, call.params["imageIds"])
    return {"imageIds": deleted, "failures": [_failure(f) for f in failures]}


# ---- ListImages / DescribeImages ------------------------------------------------------------------------------
def list_images(call: Call) -> dict:
    ref = call.repo()
    call.authorize("ecr:ListImages", ref.name)
    tag_status = (call.params.get("filter") or {}).get("tagStatus", "ANY")
    image_status = (call.params.get("filter") or {}).get("imageStatus", "ACTIVE")
    ids, next_token = call.api.registry.images.list_ids(
        ref,
        tag_status,
        token=call.params.get("nextToken"),
        limit=call.params.get("maxResults"),
        image_status=image_status,
    )
    return {"imageIds": ids, **({"nextToken": next_token} if next_token else {})}


def _details(call: Call, details: list[ImageDetail]) -> list[dict]:
    from soko.ecr.scanning import scan_summary
    from soko.scan.scans import Scans

    scans = Scans(call.api.registry).summaries(call.repo(), [d.digest for d in details]) if details else {}
    out = []
    for d in details:
        entry = _detail(call, d)
        if d.digest in scans:
            entry.update(scan_summary(scans[d.digest]))
        out.append(entry)
    return out


def _detail(call: Call, d: ImageDetail) -> dict:
    ref = call.repo()
    out: dict = {"registryId": ref.account_id, "repositoryName": ref.name, "imageDigest": d.digest}
    if d.tags:
        out["imageTags"] = list(d.tags)
    out["imageSizeInBytes"] = d.size
    out["imagePushedAt"] = d.pushed_at
    out["imageManifestMediaType"] = d.media_type
    if d.artifact_type:
        out["artifactMediaType"] = d.artifact_type
    if d.last_pulled_at is not None:
        out["lastRecordedPullTime"] = d.last_pulled_at
    if d.subject_digest:
        out["subjectManifestDigest"] = d.subject_digest
    out["imageStatus"] = d.status
    if d.last_archived_at is not None:
        out["lastArchivedAt"] = d.last_archived_at
    if d.last_activated_at is not None:
        out["lastActivatedAt"] = d.last_activated_at
    return out


def describe_images(call: Call) -> dict:
    ref = call.repo()
    call.authorize("ecr:DescribeImages", ref.name)
    _no_pagination_with_ids(call)
    service = call.api.registry.images
    if call.params.get("imageIds"):
        return {"imageDetails": _details(call, service.describe_ids(ref, call.params["imageIds"]))}
    filter_ = call.params.get("filter") or {}
    details, next_token = service.describe_page(
        ref,
        filter_.get("tagStatus", "ANY"),
        token=call.params.get("nextToken"),
        limit=call.params.get("maxResults"),
        image_status=filter_.get("imageStatus", "ACTIVE"),
    )
    return {"imageDetails": _details(call, details), **({"nextToken": next_token} if next_token else {})}


# ---- ListImageReferrers ---------------------------------------------------------------------------------------
def list_image_referrers(call: Call) -> dict:
    ref = call.repo()
    call.authorize("ecr:ListImageReferrers", ref.name)
    subject = call.params["subjectId"]["imageDigest"]
    try:
        Digest.parse(subject)
    except DigestInvalid as exc:
        raise ServiceError(
            "InvalidParameterException",
            f"Invalid parameter at 'subjectId.imageDigest' failed to satisfy constraint: '{exc.message}'",
        ) from None
    filter_ = call.params.get("filter") or {}
    status_filter = filter_.get("artifactStatus", "ACTIVE")
    wanted = set(filter_.get("artifactTypes") or [])
    referrers = [
        r for r in call.api.registry.manifests.referrers(ref, subject) if not wanted or r.get("artifactType") in wanted
    ]
    statuses = call.api.registry.images.statuses(ref, [r["digest"] for r in referrers])
    referrers = [
        {**r, "artifactStatus": statuses.get(r["digest"], "ACTIVE")}
        for r in referrers
        if status_filter == "ANY" or statuses.get(r["digest"], "ACTIVE") == status_filter
    ]
    position = decode_token(call.params.get("nextToken"), ("offset",))
    start = position["offset"] if position else 0
    if not isinstance(start, int) or start < 0:
        start = 0
    limit = call.params.get("maxResults") or 50
    page = referrers[start : start + limit]
    out: dict = {"referrers": page}
    if start + limit < len(referrers):
        out["nextToken"] = encode_token({"offset": start + limit})
    return out


# ---- UpdateImageStorageClass ----------------------------------------------------------------------------------
def update_image_storage_class(call: Call) -> dict:
    ref = call.repo()
    call.authorize("ecr:UpdateImageStorageClass", ref.name)
    image_id, status = call.api.registry.storage_classes.update(
        ref, call.params["imageId"], call.params["targetStorageClass"]
    )
    return {"registryId": ref.account_id, "repositoryName": ref.name, "imageId": image_id, "imageStatus": status}


OPERATIONS = {
    "UpdateImageStorageClass": update_image_storage_class,
    "PutImage": put_image,
    "BatchGetImage": batch_get_image,
    "BatchDeleteImage": batch_delete_image,
    "ListImages": list_images,
    "DescribeImages": describe_images,
    "ListImageReferrers": list_image_referrers,
}
