"""Domain errors → OCI error JSON and status codes: the one table for /v2/."""

from __future__ import annotations

from soko import errors as e
from soko.http.messages import Response
from soko.http.messages import error_response as http_error
from soko.pullthrough import cache as ptc
from soko.registry.encryption import KeyUnusable

# error class → (HTTP status, OCI error code)
_TABLE: list[tuple[type[e.SokoError], int, str]] = [
    # a pull-through cache's upstream failed (soko.pullthrough): the message says which upstream and why
    (ptc.UpstreamAccessDenied, 403, "DENIED"),
    (ptc.UpstreamTooManyRequests, 429, "TOOMANYREQUESTS"),
    (ptc.UpstreamFailed, 503, "UNAVAILABLE"),
    (ptc.CredentialsUnusable, 403, "DENIED"),
    (KeyUnusable, 403, "DENIED"),  # the repository's KMS key: the message names it and the fix
    (e.NameInvalid, 400, "NAME_INVALID"),
    (e.RepositoryNotFound, 404, "NAME_UNKNOWN"),
    (e.TagInvalid, 400, "TAG_INVALID"),
    (e.DigestInvalid, 400, "DIGEST_INVALID"),
    (e.SizeInvalid, 400, "SIZE_INVALID"),
    (e.BlobUnknown, 404, "BLOB_UNKNOWN"),
    (e.UploadUnknown, 404, "BLOB_UPLOAD_UNKNOWN"),
    (e.UploadInvalid, 400, "BLOB_UPLOAD_INVALID"),
    (e.RangeNotSatisfiable, 416, "BLOB_UPLOAD_INVALID"),
    (e.ManifestInvalid, 400, "MANIFEST_INVALID"),
    (e.ManifestUnknown, 404, "MANIFEST_UNKNOWN"),
    (e.ManifestBlobUnknown, 400, "MANIFEST_BLOB_UNKNOWN"),
    (e.ReferencedManifestUnknown, 400, "MANIFEST_BLOB_UNKNOWN"),
    (e.ManifestReferenced, 409, "DENIED"),
    (e.TagImmutable, 403, "DENIED"),
    (e.TooLarge, 413, "SIZE_INVALID"),
    (e.UploadLimitExceeded, 429, "TOOMANYREQUESTS"),
    (e.StorageUnavailable, 503, "UNAVAILABLE"),
    (e.ContentUnreadable, 500, "UNKNOWN"),
    (e.LimitExceeded, 403, "DENIED"),
    (e.Unsupported, 405, "UNSUPPORTED"),
    (e.Unauthenticated, 401, "UNAUTHORIZED"),
    (e.AccessDenied, 403, "DENIED"),
    (e.TooManyRequests, 429, "TOOMANYREQUESTS"),
    (e.RepositoryAlreadyExists, 409, "DENIED"),
    (e.RepositoryNotEmpty, 409, "DENIED"),
]

API_VERSION_HEADER = {"Docker-Distribution-API-Version": "registry/2.0"}


def status_and_code(error: e.SokoError) -> tuple[int, str]:
    for cls, status, code in _TABLE:
        if isinstance(error, cls):
            return status, code
    return 500, "UNKNOWN"


def error_response(
    status: int,
    code: str,
    message: str,
    detail: object | None = None,
    headers: dict[str, str] | None = None,
    head: bool = False,
) -> Response:
    return http_error(status, code, message, detail, {**API_VERSION_HEADER, **(headers or {})}, head)


def from_domain(error: e.SokoError, headers: dict[str, str] | None = None, head: bool = False) -> Response:
    status, code = status_and_code(error)
    return error_response(status, code, error.message, error.detail, headers, head)
