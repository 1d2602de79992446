"""ECR basic scanning: StartImageScan and DescribeImageScanFindings (the scans themselves: ``soko.scan.scans``)."""

from __future__ import annotations

from soko.aws.errors import ServiceError
from soko.ecr.api import Call
from soko.errors import DigestInvalid, TagInvalid
from soko.registry.images import InvalidToken, decode_token, encode_token
from soko.scan.scans import Scan, Scans


def render_image_id(image_id: dict) -> str:
    """An imageId as ECR's messages show the request's one: ``{imageDigest:'sha256:…', imageTag:'null'}``."""
    digest, tag = image_id.get("imageDigest") or "null", image_id.get("imageTag") or "null"
    return f"{{imageDigest:'{digest}', imageTag:'{tag}'}}"


def _image_id(call: Call) -> dict:
    image_id = call.params["imageId"]
    if not image_id.get("imageDigest") and not image_id.get("imageTag"):
        raise ServiceError(
            "InvalidParameterException", "Invalid parameter: imageId needs an imageDigest or an imageTag"
        )
    return image_id


def _resolve(call: Call, image_id: dict) -> str:
    try:
        [detail] = call.api.registry.images.describe_ids(call.repo(), [image_id])  # ImageNotFound first
    except (DigestInvalid, TagInvalid) as exc:
        raise ServiceError("InvalidParameterException", f"Invalid parameter at 'imageId': {exc.message}") from None
    return detail.digest


def _out_id(digest: str, image_id: dict) -> dict:
    """The answer's imageId: the resolved digest, with the tag the caller named (if any)."""
    return {"imageDigest": digest, **({"imageTag": image_id["imageTag"]} if image_id.get("imageTag") else {})}


def _status(scan: Scan) -> dict:
    return {"status": scan.status, "description": scan.description}


FINISHED = ("COMPLETE", "ACTIVE")  # ACTIVE: an ENHANCED scan's result in a continuously scanned repository


def scan_summary(scan: Scan) -> dict:
    """DescribeImages' imageScanStatus, and imageScanFindingsSummary once the scan has completed."""
    out: dict = {"imageScanStatus": _status(scan)}
    if scan.status in FINISHED:
        out["imageScanFindingsSummary"] = {
            "imageScanCompletedAt": scan.completed_at,
            "vulnerabilitySourceUpdatedAt": scan.source_updated_at,
            "findingSeverityCounts": scan.counts,
        }
    return out


def start_image_scan(call: Call) -> dict:
    ref = call.repo()
    call.authorize("ecr:StartImageScan", ref.name)
    image_id = _image_id(call)
    try:
        digest, scan = Scans(call.api.registry).start(ref, image_id)
    except (DigestInvalid, TagInvalid) as exc:
        raise ServiceError("InvalidParameterException", f"Invalid parameter at 'imageId': {exc.message}") from None
    return {
        "registryId": ref.account_id,
        "repositoryName": ref.name,
        "imageId": _out_id(digest, image_id),
        "imageScanStatus": _status(scan),
    }


def describe_image_scan_findings(call: Call) -> dict:
    ref = call.repo()
    call.authorize("ecr:DescribeImageScanFindings", ref.name)
    image_id = _image_id(call)
    digest = _resolve(call, image_id)
    scan = Scans(call.api.registry).get(ref, digest)
    if scan is None:
        raise ServiceError(
            "ScanNotFoundException",
            f"Image scan does not exist for the image with '{render_image_id(image_id)}' in the repository with name "
            f"'{ref.name}' in the registry with id '{ref.account_id}'",
        )
    out: dict = {
        "registryId": ref.account_id,
        "repositoryName": ref.name,
        "imageId": _out_id(digest, image_id),
        "imageScanStatus": _status(scan),
    }
    if scan.status not in FINISHED:
        return out
    position = decode_token(call.params.get("nextToken"), ("offset",))
    start = position["offset"] if position else 0
    if type(start) is not int or start < 0:  # a token this registry did not issue: refused, not read as page one
        raise InvalidToken("Invalid parameter at 'nextToken' failed to satisfy constraint: 'Invalid NextToken'")
    limit = call.params.get("maxResults") or 100
    page = scan.findings[start : start + limit]
    out["imageScanFindings"] = {
        "imageScanCompletedAt": scan.completed_at,
        "vulnerabilitySourceUpdatedAt": scan.source_updated_at,
        "findingSeverityCounts": scan.counts,
        ("enhancedFindings" if scan.scan_type == "ENHANCED" else "findings"): page,
    }
    if start + limit < len(scan.findings):
        out["nextToken"] = encode_token({"offset": start + limit})
    return out


OPERATIONS = {
    "StartImageScan": start_image_scan,
    "DescribeImageScanFindings": describe_image_scan_findings,
}
