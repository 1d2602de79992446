"""Errors raised by the AWS wire layer; front ends turn them into protocol responses."""

from __future__ import annotations

# JSON-protocol auth code -> (Query-protocol code, Query HTTP status). IAM and STS spell the same failures
# differently and answer 403 where the JSON services answer 400.
_QUERY_AUTH_CODES: dict[str, tuple[str, int]] = {
    "MissingAuthenticationTokenException": ("MissingAuthenticationToken", 403),
    "IncompleteSignatureException": ("IncompleteSignature", 400),
    "UnrecognizedClientException": ("InvalidClientTokenId", 403),
    "InvalidSignatureException": ("SignatureDoesNotMatch", 403),
    "ExpiredTokenException": ("ExpiredToken", 403),
}


class AwsAuthError(Exception):
    """A request failed SigV4 authentication. `code`/`status` are the JSON-protocol (ECR) values."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.access_key_id: str | None = None  # the key the request named, when it named one

    @property
    def audit_reason(self) -> str:
        """What the audit log keeps: the failure and the access key id tried — never the header, signature or token
        that `message` may echo back to the client."""
        return f"{self.code} (access key {self.access_key_id or 'none'})"

    @property
    def query_code(self) -> str:
        """The error code IAM/STS (AWS Query protocol) use for the same failure."""
        return _QUERY_AUTH_CODES.get(self.code, (self.code, self.status))[0]

    @property
    def query_status(self) -> int:
        return _QUERY_AUTH_CODES.get(self.code, (self.code, self.status))[1]

    @property
    def query_message(self) -> str:
        # IAM/STS word the missing-token case differently from the JSON services.
        if self.code == "MissingAuthenticationTokenException":
            return "Request is missing Authentication Token"
        return self.message


class ServiceError(Exception):
    """An exception an AWS service operation (ECR, IAM, STS…) answers with (``type_name`` is the JSON ``__type`` or
    the Query error code).

    ``status`` None means the protocol's default: 400 for ECR's JSON errors, the service model's status for Query.
    """

    def __init__(self, type_name: str, message: str, status: int | None = None, **extra: object) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.message = message
        self.status = status
        self.extra = extra


class InvalidRequest(ServiceError):
    """A request is malformed or violates the service model (always a client error: 400 unless told otherwise)."""

    def __init__(self, type_name: str, message: str, status: int = 400) -> None:
        super().__init__(type_name, message, status)

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}"
