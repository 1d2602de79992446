"""The AWS wire layer: SigV4 verification, AWS JSON 1.1 and Query protocols, service-model validation.

Pure functions over already-read requests; no HTTP framework and no database here.
"""

from soko.aws.errors import AwsAuthError, InvalidRequest
from soko.aws.sigv4 import Credentials, SignedRequest, Verified, verify

__all__ = ["AwsAuthError", "Credentials", "InvalidRequest", "SignedRequest", "Verified", "verify"]
