"""KMS errors, named as AWS KMS names them (``code`` is the KMS API's ``__type``).

Callers inside Soko (the encryption layer of ECR repositories) catch ``KmsError`` and turn it into their own
protocol's error (ECR's ``KmsException`` with ``kmsError`` = ``code``).
"""

from __future__ import annotations

from soko.errors import SokoError


class KmsError(SokoError):
    code = "KMSInternalException"


class NotFoundException(KmsError):
    code = "NotFoundException"


class KeyDeleted(NotFoundException):
    """The key's waiting period ended and its material was destroyed: what it encrypted is unreadable for good
    (crypto-shredded). Not corruption."""


class DisabledException(KmsError):
    code = "DisabledException"


class KMSInvalidStateException(KmsError):
    code = "KMSInvalidStateException"


class AccessDeniedException(KmsError):
    code = "AccessDeniedException"


class InvalidCiphertextException(KmsError):
    code = "InvalidCiphertextException"


class IncorrectKeyException(KmsError):
    code = "IncorrectKeyException"


class AlreadyExistsException(KmsError):
    code = "AlreadyExistsException"


class InvalidAliasNameException(KmsError):
    code = "InvalidAliasNameException"


class InvalidArnException(KmsError):
    code = "InvalidArnException"


class MalformedPolicyDocumentException(KmsError):
    code = "MalformedPolicyDocumentException"


class TagException(KmsError):
    code = "TagException"


class LimitExceededException(KmsError):
    code = "LimitExceededException"


class ValidationException(KmsError):
    code = "ValidationException"


class UnsupportedOperationException(KmsError):
    code = "UnsupportedOperationException"


class InvalidMarkerException(KmsError):
    code = "InvalidMarkerException"
