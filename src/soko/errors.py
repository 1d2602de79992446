"""The domain's one error hierarchy.

Front ends map these to their protocol (OCI error JSON on /v2/, {"__type","message"} on the ECR API) with one table
each; the domain never knows about status codes. Messages are for people: name the repository or digest and say what
to do.
"""

from __future__ import annotations


class SokoError(Exception):
    """Base of every error the domain raises on purpose."""

    def __init__(self, message: str, *, detail: object | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class NameInvalid(SokoError):
    """A repository name does not follow the naming rules."""


class RepositoryNotFound(SokoError):
    """The repository does not exist in this registry."""


class RepositoryAlreadyExists(SokoError):
    pass


class RepositoryNotEmpty(SokoError):
    pass


class TagInvalid(SokoError):
    pass


class DigestInvalid(SokoError):
    """A digest is malformed, uses an unsupported algorithm, or does not match the content."""


class SizeInvalid(SokoError):
    """The content's length does not match what the client declared."""


class BlobUnknown(SokoError):
    pass


class UploadUnknown(SokoError):
    pass


class UploadInvalid(SokoError):
    """An upload request is malformed (bad Content-Range, truncated body, ...)."""


class RangeNotSatisfiable(SokoError):
    """A chunk does not start where the upload ends, or a read range lies outside the blob.

    ``current_size`` is what the server holds, so the client can resume.
    """

    def __init__(self, message: str, *, current_size: int, detail: object | None = None) -> None:
        super().__init__(message, detail=detail)
        self.current_size = current_size


class ManifestInvalid(SokoError):
    pass


class ManifestUnknown(SokoError):
    pass


class ManifestBlobUnknown(SokoError):
    """A manifest references blobs that are not in the repository (ECR: LayersNotFoundException)."""

    def __init__(self, message: str, *, digests: list[str]) -> None:
        super().__init__(message, detail={"digests": digests})
        self.digests = digests


class ReferencedManifestUnknown(SokoError):
    """An index references manifests that are not in the repository (ECR: ReferencedImagesNotFound)."""

    def __init__(self, message: str, *, digests: list[str]) -> None:
        super().__init__(message, detail={"digests": digests})
        self.digests = digests


class ImageArchived(ManifestUnknown):
    """The image is in the archive storage class (or being restored from it): not pullable (ECR: a 404)."""


class BlobArchived(BlobUnknown):
    """The blob's content is in the archive tier with the archived images that use it: not served."""


class StorageClassUpdateNotSupported(SokoError):
    """UpdateImageStorageClass cannot move this image (ECR: ImageStorageClassUpdateNotSupportedException)."""


class ImageChanged(SokoError):
    """The image changed (tags moved) since a decision about it was made, e.g. a lifecycle evaluation."""


class ManifestReferenced(SokoError):
    """The manifest is a child of an index and cannot be deleted before it (ImageReferencedByManifestList)."""


class TagImmutable(SokoError):
    """The tag is immutable and already points at another image (ImageTagAlreadyExistsException)."""


class TooLarge(SokoError):
    """Content exceeds a size limit (manifest 4 MiB, image size quota, ...)."""


class LimitExceeded(SokoError):
    """A quota was reached (repositories per region, tags per image, ...)."""


class UploadLimitExceeded(LimitExceeded):
    """Too many unfinished upload sessions (ECR's LimitExceededException; 429 TOOMANYREQUESTS on /v2/)."""


class ContentUnreadable(SokoError):
    """Stored content failed decryption: tampered with, cut, swapped for another object's, or its key is gone."""


class StorageUnavailable(SokoError):
    """Blob storage or the database cannot take the request now (503, retryable; see soko.storage_full)."""


class StorageFull(StorageUnavailable):
    """Blob storage or the database has no space left."""


class Unsupported(SokoError):
    pass


class Unauthenticated(SokoError):
    """No or invalid credentials."""


class AccessDenied(SokoError):
    """The principal may not perform the action on the resource."""


class TokenExpired(AccessDenied):
    """An ECR authorization token that was genuine but is past its expiry (ECR: 403 DENIED, its own message)."""


class TooManyRequests(SokoError):
    pass
