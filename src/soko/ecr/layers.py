"""ECR's layer API: BatchCheckLayerAvailability, InitiateLayerUpload, UploadLayerPart, CompleteLayerUpload,
GetDownloadUrlForLayer — on the same upload sessions and blob store as /v2/ (an image pushed one way pulls the
other).

Part rules. A part must start where the upload ends (``partFirstByte`` = bytes held, else
InvalidLayerPartException with ``lastValidByteReceived`` = bytes held - 1, so -1 means "nothing yet") and carry
exactly ``partLastByte - partFirstByte + 1`` bytes. Every part but the last must hold at least 5 MiB, as on ECR
(whose parts become S3 multipart parts, as Soko's do on an object store): UploadLayerPart accepts a shorter part, as
it may be the last, and records where the first one ended; CompleteLayerUpload refuses the upload with
LayerPartTooSmallException when that part was not the last. (The /v2/ API has no such rule: chunks of any size.)
"""

from __future__ import annotations

from soko.aws.errors import ServiceError
from soko.digest import Digest
from soko.ecr.api import Call
from soko.errors import BlobUnknown, DigestInvalid, RangeNotSatisfiable, SizeInvalid, TooLarge
from soko.iam.layer_urls import layer_url
from soko.pullthrough.cache import BlobFetch, CredentialsUnusable, UpstreamFailed
from soko.registry.models import RepoRef

PART_SIZE = 10 * 1024 * 1024  # what ECR advertises
MIN_PART_SIZE = 5 * 1024 * 1024  # ECR's (and S3 multipart's) minimum for every part but the last


def _layer_failure(digest: str, code: str, reason: str) -> dict:
    return {"layerDigest": digest, "failureCode": code, "failureReason": reason}


def batch_check_layer_availability(call: Call) -> dict:
    ref = call.repo()
    call.authorize("ecr:BatchCheckLayerAvailability", ref.name)
    requested: list[str] = call.params["layerDigests"]
    failures: list[dict] = []
    valid: list[str] = []
    for digest in requested:
        if not digest:
            failures.append(_layer_failure(digest, "MissingLayerDigest", "Missing layer digest"))
            continue
        try:
            Digest.parse(digest)
        except DigestInvalid as exc:
            failures.append(_layer_failure(digest, "InvalidLayerDigest", f"Invalid layer digest: {exc.message}"))
            continue
        if digest not in valid:
            valid.append(digest)
    sizes = call.api.registry.images.linked_blobs(ref, valid)
    archived = call.api.registry.images.linked_blobs(ref, [d for d in valid if d not in sizes], archived=True)
    layers = []
    for digest in valid:
        if digest in sizes:
            layers.append({"layerDigest": digest, "layerAvailability": "AVAILABLE", "layerSize": sizes[digest]})
        elif digest in archived:  # with archived images: upload it again to use it in a new one
            layers.append({"layerDigest": digest, "layerAvailability": "ARCHIVED", "layerSize": archived[digest]})
        else:
            layers.append({"layerDigest": digest, "layerAvailability": "UNAVAILABLE"})
    return {"layers": layers, "failures": failures}


def initiate_layer_upload(call: Call) -> dict:
    ref = call.repo()
    call.authorize("ecr:InitiateLayerUpload", ref.name)
    state = call.api.registry.uploads.start(ref, call.caller.arn)
    return {"uploadId": state.id, "partSize": PART_SIZE}


def _invalid_part(call: Call, upload_id: str, held: int, message: str) -> ServiceError:
    ref = call.repo()
    return ServiceError(
        "InvalidLayerPartException",
        message,
        registryId=ref.account_id,
        repositoryName=ref.name,
        uploadId=upload_id,
        lastValidByteReceived=held - 1,
    )


def upload_layer_part(call: Call) -> dict:
    ref = call.repo()
    call.authorize("ecr:UploadLayerPart", ref.name)
    uploads = call.api.registry.uploads
    upload_id: str = call.params["uploadId"]
    first: int = call.params["partFirstByte"]
    last: int = call.params["partLastByte"]
    data: bytes = call.params["layerPartBlob"]
    held = uploads.status(ref, upload_id).size  # UploadNotFoundException
    if first != held:
        raise _invalid_part(
            call,
            upload_id,
            held,
            f"The part's first byte {first} is not the next byte of upload '{upload_id}', which holds {held} bytes; "
            f"send the part starting at byte {held}",
        )
    if not data or last - first + 1 != len(data):
        raise _invalid_part(
            call,
            upload_id,
            held,
            f"The part covers bytes {first}-{last} ({last - first + 1} bytes, partLastByte is inclusive) but "
            f"layerPartBlob has {len(data)} bytes",
        )
    try:
        writer = uploads.begin_chunk(ref, upload_id, first)
    except RangeNotSatisfiable as exc:
        raise _invalid_part(call, upload_id, exc.current_size, exc.message) from None
    try:
        writer.write(data)
        state = writer.finish()
    except TooLarge:
        writer.abort()
        uploads.cancel(ref, upload_id)  # refused past the image size limit: nothing is left behind
        raise
    except RangeNotSatisfiable as exc:
        writer.abort()
        raise _invalid_part(call, upload_id, exc.current_size, exc.message) from None
    except BaseException:
        writer.abort()
        raise
    if len(data) < MIN_PART_SIZE:  # fine if it is the last part, which only CompleteLayerUpload knows
        uploads.note_short_part(upload_id, state.size)
    return {
        "registryId": ref.account_id,
        "repositoryName": ref.name,
        "uploadId": upload_id,
        "lastByteReceived": state.size - 1,
    }


def complete_layer_upload(call: Call) -> dict:
    ref = call.repo()
    call.authorize("ecr:CompleteLayerUpload", ref.name)
    uploads = call.api.registry.uploads
    upload_id: str = call.params["uploadId"]
    digests: list[str] = call.params["layerDigests"]
    if len(digests) != 1:
        raise ServiceError(
            "InvalidParameterException",
            f"Invalid parameter at 'layerDigests': an upload is one layer; pass exactly one digest, not {len(digests)}",
        )
    digest = digests[0]
    try:
        Digest.parse(digest)
    except DigestInvalid as exc:
        raise ServiceError("InvalidLayerException", f"Invalid layer digest '{digest}': {exc.message}") from None
    state = uploads.status(ref, upload_id)  # UploadNotFoundException
    if state.size == 0:
        raise ServiceError(
            "EmptyUploadException",
            f"The upload with id '{upload_id}' has no layer parts; upload at least one part before completing it",
        )
    if call.api.registry.images.linked_blobs(ref, [digest]):
        uploads.cancel(ref, upload_id)
        raise ServiceError(
            "LayerAlreadyExistsException",
            f"The layer with digest '{digest}' already exists in the repository with name '{ref.name}' in the "
            f"registry with id '{ref.account_id}'",
        )
    if state.short_part_end is not None and state.short_part_end < state.size:
        raise ServiceError(
            "LayerPartTooSmallException",
            f"Layer parts must be at least {MIN_PART_SIZE} bytes (5 MiB) except the last one; the part of upload "
            f"'{upload_id}' ending at byte {state.short_part_end - 1} is smaller and is not the last. Upload the "
            "layer again with larger parts",
        )
    try:
        info = uploads.complete(ref, upload_id, digest)
    except (DigestInvalid, SizeInvalid) as exc:
        raise ServiceError("InvalidLayerException", exc.message) from None
    return {
        "registryId": ref.account_id,
        "repositoryName": ref.name,
        "uploadId": upload_id,
        "layerDigest": info.digest,
    }


def get_download_url_for_layer(call: Call) -> dict:
    ref = call.repo()
    call.authorize("ecr:GetDownloadUrlForLayer", ref.name)
    digest: str = call.params["layerDigest"]
    try:
        Digest.parse(digest)
    except DigestInvalid as exc:
        raise ServiceError(
            "InvalidParameterException",
            f"Invalid parameter at 'layerDigest' failed to satisfy constraint: '{exc.message}'",
        ) from None
    service = call.api.registry.images
    if service.linked_blobs(ref, [digest], archived=True):
        raise ServiceError(
            "LayerInaccessibleException",
            f"The layer with digest '{digest}' is in the archive storage class with the archived images that use it; "
            "restore them (update-image-storage-class --target-storage-class STANDARD) to download it",
        )
    through_cache = _through_cache(call, ref, digest)
    if through_cache:
        pass  # fetched (or being fetched) from the upstream: the URL serves it through the cache
    elif not service.linked_blobs(ref, [digest]):
        raise ServiceError(
            "LayersNotFoundException",
            f"The layer with digest '{digest}' does not exist in the repository with name '{ref.name}' in the "
            f"registry with id '{ref.account_id}'",
        )
    elif not service.blob_in_use(ref, digest):
        raise ServiceError(
            "LayerInaccessibleException",
            "The specified layer is not available because it is not associated with an image. Unassociated image "
            "layers may be cleaned up at any time.",
        )
    scheme = call.context.scheme or "http"
    # On the data listener (sent with sendfile) when there is one, but for a layer the cache is still fetching:
    # that one is streamed as it arrives, by the main listener.
    # (the endpoint asked on goes into the URL: its downloads are metered as that endpoint's, soko.oci.presigned)
    endpoint, host = call.context.endpoint, call.context.host
    url = None if through_cache else call.api.data_urls.url(scheme, host, ref.account_id, ref.name, digest, endpoint)
    if url is None:
        url = layer_url(call.api.identity, scheme, host, ref.account_id, ref.name, digest, endpoint)
    return {"downloadUrl": url, "layerDigest": digest}


def _through_cache(call: Call, ref: RepoRef, digest: str) -> bool:
    """A layer of an image a pull-through cache knows (BatchGetImage first, as ECR's clients do) that the cache
    lacks: its fetch from the upstream starts now, as ECR's does (UnableToGetUpstreamLayerException when the
    upstream refuses it), and goes on whether or not the URL is used. False: not such a layer."""
    cache = call.api.pull_through
    rule = cache.rule_for(ref)
    if rule is None or not cache.references(ref, digest):
        return False

    def authorize(action: str) -> None:
        call.authorize(action, ref.name)

    try:
        found = cache.blob(ref, rule, digest, authorize)
    except (UpstreamFailed, CredentialsUnusable, BlobUnknown) as exc:
        raise ServiceError(
            "UnableToGetUpstreamLayerException",
            f"The layer {digest} could not be fetched from the upstream registry of pull-through cache rule "
            f"'{rule.prefix}': {exc.message}",
        ) from None
    if isinstance(found, BlobFetch):
        found.close()  # this pull only; the fetch goes on into the cache
    return True


OPERATIONS = {
    "BatchCheckLayerAvailability": batch_check_layer_availability,
    "InitiateLayerUpload": initiate_layer_upload,
    "UploadLayerPart": upload_layer_part,
    "CompleteLayerUpload": complete_layer_upload,
    "GetDownloadUrlForLayer": get_download_url_for_layer,
}
