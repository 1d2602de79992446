"""The KMS API (``TrentService``, AWS JSON 1.1, SigV4 service ``kms``) on the AWS endpoint: a dispatch table from
operation to handler over ``KeyService``.

Requests are validated against botocore's ``kms`` model first (``ValidationException`` in Coral's words). What
Soko does not carry out is refused, never accepted and ignored: operations outside the table, and parameters such
as asymmetric/HMAC key specs, imported or external key material, custom key stores, multi-Region keys, grants
(``GrantTokens``), ``DryRun`` and ``Recipient`` (Nitro enclaves) answer ``UnsupportedOperationException`` naming
what was asked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from soko.access import Principal, RequestContext
from soko.aws.errors import ServiceError
from soko.aws.service_model import get_service_model, validate_params
from soko.iam.policy.keys import request_tag_keys
from soko.kms.errors import (
    InvalidMarkerException,
    KmsError,
    NotFoundException,
    UnsupportedOperationException,
    ValidationException,
)
from soko.kms.service import KeyInfo, KeyService

TARGET_PREFIX = "TrentService"
ALGORITHM = "SYMMETRIC_DEFAULT"


@dataclass
class Call:
    kms: KeyService
    params: dict
    caller: Principal
    context: RequestContext

    def get(self, name: str, default=None):
        return self.params.get(name, default)


def _refuse(operation: str, what: str) -> UnsupportedOperationException:
    return UnsupportedOperationException(f"{operation}: {what} is not supported by this KMS")


def _only(call: Call, operation: str, name: str, allowed: tuple, what: str | None = None) -> None:
    value = call.get(name)
    if value is not None and value not in allowed:
        raise _refuse(operation, what or f"{name} {value!r} (only {', '.join(map(str, allowed))})")


def _refuse_present(call: Call, operation: str, *names: str) -> None:
    """Parameters for what Soko has not built (grants, dry runs, enclaves): refused when given."""
    for name in names:
        value = call.get(name)
        if value is None or value == [] or value is False:
            continue
        raise _refuse(operation, f"{name} ({_WHY.get(name, 'not built')})")


_WHY = {
    "GrantTokens": "grants are not implemented",
    "DryRun": "dry runs are not implemented",
    "DryRunModifiers": "dry runs are not implemented",
    "Recipient": "Nitro Enclaves attestation is not implemented",
    "CustomKeyStoreId": "custom key stores are not implemented",
    "XksKeyId": "external key stores are not implemented",
    "MultiRegion": "multi-Region keys are not implemented",
    "ResourceOwners": "only the caller's own keys are listed",
}


def key_metadata(kms: KeyService, key: KeyInfo) -> dict:
    meta: dict = {
        "AWSAccountId": key.account_id,
        "KeyId": key.key_id,
        "Arn": key.arn,
        "CreationDate": key.created_at,
        "Enabled": key.state == "Enabled",
        "Description": key.description,
        "KeyUsage": "ENCRYPT_DECRYPT",
        "KeyState": key.state,
        "Origin": "AWS_KMS",
        "KeyManager": key.manager,
        "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT",
        "KeySpec": "SYMMETRIC_DEFAULT",
        "EncryptionAlgorithms": [ALGORITHM],
        "MultiRegion": False,
    }
    if key.deletion_date is not None:
        meta["DeletionDate"] = key.deletion_date
        meta["PendingDeletionWindowInDays"] = key.pending_window_days
    return meta


def _page(call: Call, items: list, key: str, default_limit: int = 100) -> dict:
    """Marker pagination over a list already in order: the marker is the position of the next item."""
    marker = call.get("Marker")
    start = 0
    if marker is not None:
        # isascii too: str.isdigit accepts superscripts ('²') that int() refuses
        if not (marker.isascii() and marker.isdigit()) or int(marker) > len(items):
            raise InvalidMarkerException("The marker is not one this KMS handed out")
        start = int(marker)
    limit = call.get("Limit") or default_limit
    page = items[start : start + limit]
    out: dict = {key: page, "Truncated": start + limit < len(items)}
    if out["Truncated"]:
        out["NextMarker"] = str(start + limit)
    return out


def _tags(call: Call) -> dict[str, str]:
    tags: dict[str, str] = {}
    for tag in call.get("Tags") or []:
        tags[tag["TagKey"]] = tag["TagValue"]
    return tags


def create_key(call: Call) -> dict:
    _refuse_present(call, "CreateKey", "CustomKeyStoreId", "XksKeyId", "MultiRegion")
    _only(call, "CreateKey", "KeyUsage", ("ENCRYPT_DECRYPT",), "KeyUsage other than ENCRYPT_DECRYPT")
    for name in ("KeySpec", "CustomerMasterKeySpec"):
        _only(
            call, "CreateKey", name, ("SYMMETRIC_DEFAULT",), f"{name} {call.get(name)!r} (only SYMMETRIC_DEFAULT keys)"
        )
    _only(call, "CreateKey", "Origin", ("AWS_KMS",), f"Origin {call.get('Origin')!r} (only AWS_KMS key material)")
    key = call.kms.create_key(
        call.caller,
        call.get("Description", ""),
        call.get("Policy"),
        _tags(call),
        bool(call.get("BypassPolicyLockoutSafetyCheck")),
        call.context,
    )
    return {"KeyMetadata": key_metadata(call.kms, key)}


def describe_key(call: Call) -> dict:
    _refuse_present(call, "DescribeKey", "GrantTokens")
    return {
        "KeyMetadata": key_metadata(call.kms, call.kms.describe_key(call.caller, call.params["KeyId"], call.context))
    }


def list_keys(call: Call) -> dict:
    _refuse_present(call, "ListKeys", "ResourceOwners")
    keys = [{"KeyId": k.key_id, "KeyArn": k.arn} for k in call.kms.list_keys(call.caller, call.context)]
    return _page(call, keys, "Keys")


def list_aliases(call: Call) -> dict:
    aliases = [
        {
            "AliasName": a.name,
            "AliasArn": a.arn,
            "TargetKeyId": a.key_id,
            "CreationDate": a.created_at,
            "LastUpdatedDate": a.updated_at,
        }
        for a in call.kms.list_aliases(call.caller, call.get("KeyId"), call.context)
    ]
    return _page(call, aliases, "Aliases", 50)


def create_alias(call: Call) -> dict:
    call.kms.create_alias(call.caller, call.params["AliasName"], call.params["TargetKeyId"], call.context)
    return {}


def update_alias(call: Call) -> dict:
    call.kms.update_alias(call.caller, call.params["AliasName"], call.params["TargetKeyId"], call.context)
    return {}


def delete_alias(call: Call) -> dict:
    call.kms.delete_alias(call.caller, call.params["AliasName"], call.context)
    return {}


def enable_key(call: Call) -> dict:
    call.kms.enable_key(call.caller, call.params["KeyId"], call.context)
    return {}


def disable_key(call: Call) -> dict:
    call.kms.disable_key(call.caller, call.params["KeyId"], call.context)
    return {}


def schedule_key_deletion(call: Call) -> dict:
    key = call.kms.schedule_key_deletion(
        call.caller, call.params["KeyId"], call.get("PendingWindowInDays") or 30, call.context
    )
    return {
        "KeyId": key.arn,
        "DeletionDate": key.deletion_date,
        "KeyState": key.state,
        "PendingWindowInDays": key.pending_window_days,
    }


def cancel_key_deletion(call: Call) -> dict:
    return {"KeyId": call.kms.cancel_key_deletion(call.caller, call.params["KeyId"], call.context).arn}


def enable_key_rotation(call: Call) -> dict:
    call.kms.enable_key_rotation(call.caller, call.params["KeyId"], call.get("RotationPeriodInDays"), call.context)
    return {}


def disable_key_rotation(call: Call) -> dict:
    call.kms.disable_key_rotation(call.caller, call.params["KeyId"], call.context)
    return {}


def get_key_rotation_status(call: Call) -> dict:
    key, status = call.kms.get_key_rotation_status(call.caller, call.params["KeyId"], call.context)
    out: dict = {"KeyRotationEnabled": status.enabled, "KeyId": key.arn}
    if status.period_days is not None:
        out["RotationPeriodInDays"] = status.period_days
    if status.enabled and status.next_rotation_at is not None:
        out["NextRotationDate"] = status.next_rotation_at
    if status.on_demand_started_at is not None:
        out["OnDemandRotationStartDate"] = status.on_demand_started_at
    return out


def rotate_key_on_demand(call: Call) -> dict:
    return {"KeyId": call.kms.rotate_key_on_demand(call.caller, call.params["KeyId"], call.context).key_id}


def _algorithm(call: Call, operation: str, *names: str) -> None:
    for name in names:
        _only(call, operation, name, (ALGORITHM,), f"{name} {call.get(name)!r} (symmetric keys use SYMMETRIC_DEFAULT)")


def encrypt(call: Call) -> dict:
    _refuse_present(call, "Encrypt", "GrantTokens", "DryRun")
    _algorithm(call, "Encrypt", "EncryptionAlgorithm")
    blob, arn = call.kms.encrypt(
        call.caller, call.params["KeyId"], call.params["Plaintext"], call.get("EncryptionContext"), None, call.context
    )
    return {"CiphertextBlob": blob, "KeyId": arn, "EncryptionAlgorithm": ALGORITHM}


def decrypt(call: Call) -> dict:
    _refuse_present(call, "Decrypt", "GrantTokens", "DryRun", "DryRunModifiers", "Recipient")
    _algorithm(call, "Decrypt", "EncryptionAlgorithm")
    plaintext, arn = call.kms.decrypt(
        call.caller,
        call.params["CiphertextBlob"],
        call.get("EncryptionContext"),
        None,
        call.context,
        key_ref=call.get("KeyId"),
    )
    return {"KeyId": arn, "Plaintext": plaintext, "EncryptionAlgorithm": ALGORITHM}


def _data_key(call: Call, operation: str) -> tuple[bytes, bytes, str]:
    _refuse_present(call, operation, "GrantTokens", "DryRun", "Recipient")
    spec, size = call.get("KeySpec"), call.get("NumberOfBytes")
    if (spec is None) == (size is None):
        raise ValidationException("Please specify either number of bytes or key spec.")
    number = size if size is not None else (32 if spec == "AES_256" else 16)
    return call.kms.generate_data_key(
        call.caller,
        call.params["KeyId"],
        call.get("EncryptionContext"),
        None,
        call.context,
        number_of_bytes=number,
        operation=operation,
    )


def generate_data_key(call: Call) -> dict:
    plaintext, blob, arn = _data_key(call, "GenerateDataKey")
    return {"CiphertextBlob": blob, "Plaintext": plaintext, "KeyId": arn}


def generate_data_key_without_plaintext(call: Call) -> dict:
    _, blob, arn = _data_key(call, "GenerateDataKeyWithoutPlaintext")
    return {"CiphertextBlob": blob, "KeyId": arn}


def re_encrypt(call: Call) -> dict:
    _refuse_present(call, "ReEncrypt", "GrantTokens", "DryRun", "DryRunModifiers")
    _algorithm(call, "ReEncrypt", "SourceEncryptionAlgorithm", "DestinationEncryptionAlgorithm")
    blob, source_arn, dest_arn = call.kms.re_encrypt(
        call.caller,
        call.params["CiphertextBlob"],
        call.get("SourceEncryptionContext"),
        call.params["DestinationKeyId"],
        call.get("DestinationEncryptionContext"),
        call.context,
        source_key_ref=call.get("SourceKeyId"),
    )
    return {
        "CiphertextBlob": blob,
        "SourceKeyId": source_arn,
        "KeyId": dest_arn,
        "SourceEncryptionAlgorithm": ALGORITHM,
        "DestinationEncryptionAlgorithm": ALGORITHM,
    }


def update_key_description(call: Call) -> dict:
    call.kms.update_key_description(call.caller, call.params["KeyId"], call.params["Description"], call.context)
    return {}


def _policy_name(call: Call) -> str:
    name = call.get("PolicyName") or "default"
    if name != "default":
        raise NotFoundException(f"No such policy exists: {name!r} (a key has one policy, named 'default')")
    return name


def get_key_policy(call: Call) -> dict:
    name = _policy_name(call)
    return {"Policy": call.kms.get_key_policy(call.caller, call.params["KeyId"], call.context), "PolicyName": name}


def put_key_policy(call: Call) -> dict:
    _policy_name(call)
    call.kms.put_key_policy(
        call.caller,
        call.params["KeyId"],
        call.params["Policy"],
        bool(call.get("BypassPolicyLockoutSafetyCheck")),
        call.context,
    )
    return {}


def tag_resource(call: Call) -> dict:
    tags = _tags(call)
    call.kms.tag_resource(
        call.caller,
        call.params["KeyId"],
        tags,
        call.context,
        request_tag_keys([{"Key": k, "Value": v} for k, v in tags.items()]),
    )
    return {}


def untag_resource(call: Call) -> dict:
    keys = list(call.params["TagKeys"])
    call.kms.untag_resource(call.caller, call.params["KeyId"], keys, call.context, request_tag_keys(keys=keys))
    return {}


def list_resource_tags(call: Call) -> dict:
    tags = call.kms.list_resource_tags(call.caller, call.params["KeyId"], call.context)
    return _page(call, [{"TagKey": k, "TagValue": v} for k, v in tags.items()], "Tags", 50)


OPERATIONS: dict[str, Callable[[Call], dict]] = {
    "CreateKey": create_key,
    "DescribeKey": describe_key,
    "ListKeys": list_keys,
    "ListAliases": list_aliases,
    "CreateAlias": create_alias,
    "UpdateAlias": update_alias,
    "DeleteAlias": delete_alias,
    "EnableKey": enable_key,
    "DisableKey": disable_key,
    "ScheduleKeyDeletion": schedule_key_deletion,
    "CancelKeyDeletion": cancel_key_deletion,
    "EnableKeyRotation": enable_key_rotation,
    "DisableKeyRotation": disable_key_rotation,
    "GetKeyRotationStatus": get_key_rotation_status,
    "RotateKeyOnDemand": rotate_key_on_demand,
    "Encrypt": encrypt,
    "Decrypt": decrypt,
    "GenerateDataKey": generate_data_key,
    "GenerateDataKeyWithoutPlaintext": generate_data_key_without_plaintext,
    "ReEncrypt": re_encrypt,
    "UpdateKeyDescription": update_key_description,
    "GetKeyPolicy": get_key_policy,
    "PutKeyPolicy": put_key_policy,
    "TagResource": tag_resource,
    "UntagResource": untag_resource,
    "ListResourceTags": list_resource_tags,
}


class KmsApi:
    """The JSON service the AWS front door dispatches ``TrentService.*`` requests to."""

    service = "kms"
    target_prefix = TARGET_PREFIX
    internal_error = "KMSInternalException"

    def __init__(self, kms: KeyService) -> None:
        self.kms = kms

    def check_supported(self, operation: str) -> None:
        model = get_service_model("kms")
        if operation not in OPERATIONS and operation in model.operation_names:
            raise ServiceError(
                "UnsupportedOperationException",
                f"The KMS operation {operation} is not supported by this KMS (Soko implements {len(OPERATIONS)} of "
                f"KMS's {len(model.operation_names)} operations: symmetric keys, aliases, rotation, deletion, "
                "key policies and tags)",
            )

    def validate(self, operation: str, params: object) -> dict:
        return validate_params("kms", operation, params, json_wire=True, error_type="ValidationException")

    def call(self, operation: str, params: dict, caller: Principal, context: RequestContext) -> dict:
        handler = OPERATIONS.get(operation)
        if handler is None:
            self.check_supported(operation)
            raise ServiceError("UnknownOperationException", f"Unknown operation {operation!r}")
        try:
            return handler(Call(self.kms, params, caller, context))
        except KmsError as exc:
            raise ServiceError(exc.code, exc.message) from None
