"""Secrets Manager's JSON 1.1 API (``X-Amz-Target: secretsmanager.<Op>``, SigV4 service ``secretsmanager``): the
subset Terraform (``aws_secretsmanager_secret``, ``_secret_version``) and the AWS CLI use for pull-through cache
credentials. Every other operation answers UnsupportedOperationException (nothing is accepted and ignored: no
rotation, no replication of secrets, no resource policies, no customer KMS keys)."""

from __future__ import annotations

import base64
import binascii
import json

from soko.access import Authorizer, Principal, RequestContext
from soko.aws.errors import ServiceError
from soko.aws.service_model import get_service_model, validate_request
from soko.errors import AccessDenied, SokoError
from soko.secrets import store as s

TARGET_PREFIX = "secretsmanager"
SERVICE = "secretsmanager"
DEFAULT_PAGE = 100

_ERRORS: list[tuple[type[SokoError], str]] = [
    (s.SecretNotFound, "ResourceNotFoundException"),
    (s.SecretExists, "ResourceExistsException"),
    (s.SecretInvalidRequest, "InvalidRequestException"),
    (s.SecretInvalidParameter, "InvalidParameterException"),
    (s.SecretDecryptionFailure, "DecryptionFailure"),
    (AccessDenied, "AccessDeniedException"),
]


def _value(params: dict) -> s.SecretValue | None:
    string, binary = params.get("SecretString"), params.get("SecretBinary")
    if string is None and binary is None:
        return None
    if isinstance(binary, str):  # (validation decodes blobs; keep to bytes either way)
        try:
            binary = base64.b64decode(binary, validate=True)
        except binascii.Error:
            raise s.SecretInvalidParameter("SecretBinary is not base64") from None
    return s.SecretValue(string, binary)


class SecretsManagerApi:
    service = SERVICE
    target_prefix = TARGET_PREFIX
    internal_error = "InternalServiceError"

    def __init__(self, store: s.SecretStore, authorizer: Authorizer) -> None:
        self.store = store
        self.authorizer = authorizer
        self.operations = {
            "CreateSecret": self.create_secret,
            "PutSecretValue": self.put_secret_value,
            "GetSecretValue": self.get_secret_value,
            "DescribeSecret": self.describe_secret,
            "ListSecrets": self.list_secrets,
            "DeleteSecret": self.delete_secret,
            "RestoreSecret": self.restore_secret,
            "GetResourcePolicy": self.get_resource_policy,
        }

    def check_supported(self, operation: str) -> None:
        if operation not in self.operations and operation in get_service_model(SERVICE).operation_names:
            raise ServiceError(
                "UnsupportedOperationException",
                f"The Secrets Manager operation {operation} is not supported by this registry (Soko implements "
                f"{', '.join(sorted(self.operations))}, for pull-through cache credentials)",
            )

    def validate(self, operation: str, params: object) -> dict:
        return validate_request(operation, params, service=SERVICE)

    def call(self, operation: str, params: dict, caller: Principal, context: RequestContext) -> dict:
        handler = self.operations.get(operation)
        if handler is None:
            self.check_supported(operation)
            raise ServiceError("UnknownOperationException", f"Unknown operation {operation!r}")
        try:
            return handler(params, caller, context)
        except SokoError as exc:
            for cls, name in _ERRORS:
                if isinstance(exc, cls):
                    raise ServiceError(name, exc.message) from None
            raise

    # --- helpers --------------------------------------------------------------------------------------------------

    def _authorize(self, caller: Principal, context: RequestContext, action: str, arn: str) -> None:
        self.authorizer.authorize(caller, f"secretsmanager:{action}", arn, None, context)

    def _secret(self, caller: Principal, context: RequestContext, action: str, secret_id: str) -> s.Secret:
        """The secret ``secret_id`` names, after the caller may ``action`` it (a missing one: the action on the
        name's would-be ARN, then ResourceNotFound)."""
        try:
            secret = self.store.describe(caller.account_id, secret_id)
        except s.SecretNotFound:
            guess = secret_id if secret_id.startswith("arn:") else self.store.arn_prefix(caller.account_id) + secret_id
            self._authorize(caller, context, action, guess)
            raise
        self._authorize(caller, context, action, secret.arn)
        return secret

    @staticmethod
    def _describe_json(secret: s.Secret) -> dict:
        out: dict = {
            "ARN": secret.arn,
            "Name": secret.name,
            "RotationEnabled": False,
            "LastChangedDate": secret.updated_at,
            "CreatedDate": secret.created_at,
            "VersionIdsToStages": secret.versions(),
            "Tags": [],
        }
        if secret.description:
            out["Description"] = secret.description
        if secret.deleted_at is not None:
            out["DeletedDate"] = secret.deleted_at
        return out

    # --- operations -----------------------------------------------------------------------------------------------

    def create_secret(self, params: dict, caller: Principal, context: RequestContext) -> dict:
        for unsupported in ("KmsKeyId", "AddReplicaRegions", "Tags"):
            if params.get(unsupported):
                raise ServiceError(
                    "UnsupportedOperationException",
                    f"{unsupported} cannot be carried out by this Soko: secrets are encrypted with its master key, "
                    "kept in this region only and carry no tags. Leave it out.",
                )
        name = params["Name"]
        self._authorize(caller, context, "CreateSecret", self.store.arn_prefix(caller.account_id) + name)
        secret = self.store.create(
            caller.account_id, name, _value(params), params.get("Description"), params.get("ClientRequestToken")
        )
        return {"ARN": secret.arn, "Name": secret.name, "VersionId": secret.version_id}

    def put_secret_value(self, params: dict, caller: Principal, context: RequestContext) -> dict:
        if params.get("VersionStages") not in (None, ["AWSCURRENT"]):
            raise ServiceError(
                "UnsupportedOperationException",
                "VersionStages other than AWSCURRENT cannot be carried out by this Soko (no rotation)",
            )
        secret = self._secret(caller, context, "PutSecretValue", params["SecretId"])
        value = _value(params)
        if value is None:
            raise s.SecretInvalidParameter("You must provide either SecretString or SecretBinary.")
        stored = self.store.put_value(caller.account_id, secret.arn, value, params.get("ClientRequestToken"))
        return {"ARN": stored.arn, "Name": stored.name, "VersionId": stored.version_id, "VersionStages": ["AWSCURRENT"]}

    def get_secret_value(self, params: dict, caller: Principal, context: RequestContext) -> dict:
        secret = self._secret(caller, context, "GetSecretValue", params["SecretId"])
        secret, version, value = self.store.value(
            caller.account_id, secret.arn, params.get("VersionId"), params.get("VersionStage")
        )
        out: dict = {
            "ARN": secret.arn,
            "Name": secret.name,
            "VersionId": version,
            "VersionStages": secret.versions()[version],
            "CreatedDate": secret.updated_at if version == secret.version_id else secret.created_at,
        }
        if value.string is not None:
            out["SecretString"] = value.string
        else:
            out["SecretBinary"] = base64.b64encode(value.binary or b"").decode()
        return out

    def describe_secret(self, params: dict, caller: Principal, context: RequestContext) -> dict:
        return self._describe_json(self._secret(caller, context, "DescribeSecret", params["SecretId"]))

    def list_secrets(self, params: dict, caller: Principal, context: RequestContext) -> dict:
        self._authorize(caller, context, "ListSecrets", "*")
        if params.get("Filters"):
            raise ServiceError(
                "UnsupportedOperationException", "ListSecrets Filters cannot be carried out by this Soko yet"
            )
        after = None
        if params.get("NextToken"):
            try:
                after = json.loads(base64.urlsafe_b64decode(params["NextToken"].encode()))["after"]
                if not isinstance(after, str):
                    raise TypeError
            except (binascii.Error, ValueError, KeyError, TypeError):
                raise ServiceError("InvalidNextTokenException", "The NextToken value is not valid.") from None
        page, more = self.store.page(
            caller.account_id,
            after=after,
            limit=params.get("MaxResults") or DEFAULT_PAGE,
            include_deleted=bool(params.get("IncludePlannedDeletion")),
        )
        out: dict = {"SecretList": [self._describe_json(secret) for secret in page]}
        for entry in out["SecretList"]:
            entry["SecretVersionsToStages"] = entry.pop("VersionIdsToStages")
        if more and page:
            out["NextToken"] = base64.urlsafe_b64encode(json.dumps({"after": page[-1].arn}).encode()).decode()
        return out

    def delete_secret(self, params: dict, caller: Principal, context: RequestContext) -> dict:
        force = bool(params.get("ForceDeleteWithoutRecovery"))
        try:
            secret = self._secret(caller, context, "DeleteSecret", params["SecretId"])
        except s.SecretNotFound:
            if force and params.get("RecoveryWindowInDays") is None:
                return {"Name": params["SecretId"], "DeletionDate": self.store.ctx.clock()}
            raise
        days = params.get("RecoveryWindowInDays")
        deleted, when = self.store.delete(caller.account_id, secret.arn, recovery_days=days, force=force)
        return {"ARN": deleted.arn, "Name": deleted.name, "DeletionDate": when}

    def restore_secret(self, params: dict, caller: Principal, context: RequestContext) -> dict:
        secret = self._secret(caller, context, "RestoreSecret", params["SecretId"])
        restored = self.store.restore(caller.account_id, secret.arn)
        return {"ARN": restored.arn, "Name": restored.name}

    def get_resource_policy(self, params: dict, caller: Principal, context: RequestContext) -> dict:
        """Terraform reads it after creating a secret: there are none (PutResourcePolicy stays unsupported)."""
        secret = self._secret(caller, context, "GetResourcePolicy", params["SecretId"])
        return {"ARN": secret.arn, "Name": secret.name}
