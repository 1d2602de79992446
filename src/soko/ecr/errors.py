"""Domain errors → ECR exception names: the one table for the ECR API."""

from __future__ import annotations

from soko import errors as e
from soko.aws.errors import ServiceError
from soko.pullthrough import rules as ptc
from soko.registry import capabilities as c
from soko.registry import encryption as enc
from soko.registry import policies as p
from soko.registry import repositories as r
from soko.registry import settings_store as s
from soko.registry import templates as t
from soko.replication import backfills as bf
from soko.signing import config as sc

_TABLE: list[tuple[type[e.SokoError], str]] = [
    (c.NotCarriedOut, "UnsupportedOperationException"),
    (p.RepositoryPolicyNotFound, "RepositoryPolicyNotFoundException"),
    (p.RegistryPolicyNotFound, "RegistryPolicyNotFoundException"),
    (p.PolicyInvalid, "InvalidParameterException"),
    (r.ParameterInvalid, "InvalidParameterException"),
    (r.TagParameterInvalid, "InvalidTagParameterException"),
    (r.TooManyTags, "TooManyTagsException"),
    (s.ReplicationToSource, "InvalidParameterException"),
    (s.ConfigurationInvalid, "ValidationException"),
    (t.TemplateAlreadyExists, "TemplateAlreadyExistsException"),
    (ptc.RuleAlreadyExists, "PullThroughCacheRuleAlreadyExistsException"),
    (ptc.RuleNotFound, "PullThroughCacheRuleNotFoundException"),
    (ptc.UnsupportedUpstream, "UnsupportedUpstreamRegistryException"),
    (ptc.RuleInvalid, "InvalidParameterException"),
    (t.TemplateNotFound, "TemplateNotFoundException"),
    (bf.BackfillNotFound, "ReplicationBackfillNotFoundException"),
    (bf.BackfillInProgress, "ReplicationBackfillInProgressException"),
    (bf.BackfillInvalidStatus, "ReplicationBackfillInvalidStatusException"),
    (bf.DestinationNotConfigured, "InvalidParameterException"),
    (sc.SigningConfigurationNotFound, "SigningConfigurationNotFoundException"),
    (e.RepositoryNotFound, "RepositoryNotFoundException"),
    (e.RepositoryAlreadyExists, "RepositoryAlreadyExistsException"),
    (e.RepositoryNotEmpty, "RepositoryNotEmptyException"),
    (e.NameInvalid, "InvalidParameterException"),
    (e.TagInvalid, "InvalidParameterException"),
    (e.DigestInvalid, "InvalidParameterException"),
    (e.ManifestInvalid, "InvalidParameterException"),
    (e.StorageClassUpdateNotSupported, "ImageStorageClassUpdateNotSupportedException"),
    (e.ImageArchived, "ImageArchivedException"),
    (e.ManifestBlobUnknown, "LayersNotFoundException"),
    (e.ReferencedManifestUnknown, "ReferencedImagesNotFoundException"),
    (e.ManifestUnknown, "ImageNotFoundException"),
    (e.TagImmutable, "ImageTagAlreadyExistsException"),
    (e.UploadUnknown, "UploadNotFoundException"),
    (e.BlobUnknown, "LayersNotFoundException"),
    (e.TooLarge, "LimitExceededException"),
    (e.LimitExceeded, "LimitExceededException"),
    (e.AccessDenied, "AccessDeniedException"),
    (e.TooManyRequests, "ThrottlingException"),
    (e.Unsupported, "UnsupportedImageTypeException"),
    (e.SokoError, "InvalidParameterException"),
]


def from_domain(error: e.SokoError) -> ServiceError:
    if isinstance(error, enc.KeyUnusable):  # the repository's KMS key: ECR's KmsException names KMS's error
        return ServiceError("KmsException", error.message, kmsError=error.kms_error)
    if isinstance(error, e.StorageUnavailable):  # retryable: botocore retries 503s
        return ServiceError("ServiceUnavailableException", error.message, 503)
    for cls, name in _TABLE:
        if isinstance(error, cls):
            return ServiceError(name, error.message)
    return ServiceError("ServerException", error.message, 500)
