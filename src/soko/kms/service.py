"""KMS keys as a domain service: symmetric AES-256-GCM keys with states, rotation, deletion, aliases, tags and key
policies. The KMS API (``soko.kms.api``) and the encryption of repository content both use it.

Contract (what the encryption layer relies on)
----------------------------------------------
``KeyService(ctx, identity)``; every method is synchronous (call it from a thread) and raises only
``soko.kms.errors.KmsError`` subclasses on purpose, each with ``code`` = the KMS exception name:

- ``resolve_key(account_id, key_ref) -> KeyInfo``: ``key_ref`` is a key id, key ARN, ``alias/<name>`` or alias ARN
  in this region (an alias of ``account_id`` when not an ARN). ``NotFoundException`` for a missing key, alias or
  another region (``KeyDeleted``, a subclass, once its material is destroyed); it does not check the state:
  ``KeyInfo.state`` is ``Enabled`` | ``Disabled`` | ``PendingDeletion``, and ``KeyInfo.usable_error()`` gives the
  error a cryptographic use would raise.
- ``generate_data_key(principal, key_ref, encryption_context, via_service) -> (plaintext 32 bytes, ciphertext
  blob, key ARN)`` and ``decrypt(principal, blob, encryption_context, via_service) -> (plaintext, key ARN)``.
  ``principal`` is a ``soko.access.Principal`` (authorized by the key policy and its IAM policies, with
  ``kms:ViaService`` = ``via_service``, e.g. ``ecr.<region>.amazonaws.com``, and ``kms:CallerAccount``), or
  ``None`` for Soko's own use on behalf of ``via_service`` (ECR's grant on the keys of its repositories: no policy
  check, the key state is checked all the same). Resolve the key with the repository's account: pass
  ``account_id=`` (keyword) when the principal is ``None`` and the key reference is not an ARN.
  Errors: ``DisabledException`` (key disabled), ``KMSInvalidStateException`` (pending deletion),
  ``NotFoundException``/``KeyDeleted``, ``AccessDeniedException``, ``InvalidCiphertextException`` (corrupt blob,
  other encryption context). New data keys use the key's newest version; blobs of every older version stay
  decryptable (the version is inside the blob); after deletion nothing decrypts (``KeyDeleted``).
- ``aws_managed_key(account_id, "aws/ecr") -> key ARN``: created on first use with AWS's policy for managed keys
  (usable by the account only through ``ecr.<region>.amazonaws.com``), rotated yearly.

Every use is recorded in the audit log as event ``kms`` (action ``kms:<Operation>``, resource the key ARN, reason
a CloudTrail-like JSON summary: request parameters without plaintext or key material, ``invokedBy``, errors).

Key material is generated with ``secrets`` (32 bytes per key version) and stored wrapped by the master key
(``soko.kms.ciphertext``). Deletion: ScheduleKeyDeletion sets a date 7 to 30 days ahead (``ctx.clock``); once it has
passed the material rows are deleted (by the ``kms_upkeep`` job, or at the key's next use, whichever comes first)
and the key answers NotFound.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import sqlalchemy as sa

from soko.access import Principal, RequestContext
from soko.errors import AccessDenied
from soko.iam.policy import MalformedPolicy, PolicyKind, parse_policy
from soko.iam.policy.keys import KMS_POPULATED, request_tag_keys
from soko.iam.service import Identity
from soko.kernel.context import DomainContext
from soko.kms import ciphertext
from soko.kms.errors import (
    AccessDeniedException,
    AlreadyExistsException,
    DisabledException,
    IncorrectKeyException,
    InvalidAliasNameException,
    InvalidCiphertextException,
    KeyDeleted,
    KmsError,
    KMSInvalidStateException,
    LimitExceededException,
    MalformedPolicyDocumentException,
    NotFoundException,
    TagException,
    UnsupportedOperationException,
    ValidationException,
)
from soko.meta.schema import kms_aliases, kms_key_material, kms_key_tags, kms_keys

DAY = 86400.0
ENABLED, DISABLED, PENDING_DELETION, DELETED = "Enabled", "Disabled", "PendingDeletion", "Deleted"
DEFAULT_ROTATION_DAYS = 365
MAX_ON_DEMAND_ROTATIONS = 25  # per key, as AWS
MAX_TAGS = 50
MAX_POLICY_BYTES = 32768
AWS_MANAGED_ALIASES = ("aws/ecr",)
# The non-cryptographic operations another account may call on a key (when its policy allows); AWS refuses the rest
# of key management across accounts. (ListAliases with another account's key lists none of its aliases.)
CROSS_ACCOUNT_OPERATIONS = frozenset({"DescribeKey", "GetKeyRotationStatus", "ListAliases"})
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_KMS_ARN = re.compile(r"arn:aws:kms:([a-z0-9-]*):(\d{12}):(key/.*|alias/.*)", re.DOTALL)
_ALIAS_NAME = re.compile(r"alias/[a-zA-Z0-9/_-]+")
# kms: condition keys Soko evaluates: those it sets on KMS requests (lower case); a key policy testing any other
# kms: key is refused (kms:BypassPolicyLockoutSafetyCheck and kms:ReEncryptOnSameKey are not set, so refused).
SUPPORTED_KMS_CONDITION_KEYS = KMS_POPULATED
SUPPORTED_KMS_CONDITION_PREFIXES = ("kms:encryptioncontext:",)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    key_id: str
    account_id: str
    arn: str
    state: str  # Enabled | Disabled | PendingDeletion
    description: str
    manager: str  # CUSTOMER | AWS
    created_at: float
    deletion_date: float | None
    pending_window_days: int | None
    rotation_enabled: bool
    rotation_period_days: int | None
    next_rotation_at: float | None
    current_version: int
    policy_text: str = field(repr=False)

    def usable_error(self) -> KmsError | None:
        """The error a cryptographic operation with this key raises, or None when it may be used."""
        if self.state == DISABLED:
            return DisabledException(f"{self.arn} is disabled.")
        if self.state == PENDING_DELETION:
            return KMSInvalidStateException(f"{self.arn} is pending deletion.")
        return None


@dataclass(frozen=True, slots=True)
class AliasInfo:
    name: str
    arn: str
    key_id: str
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class RotationStatus:
    enabled: bool
    period_days: int | None
    next_rotation_at: float | None
    on_demand_started_at: float | None


def default_key_policy(account_id: str) -> str:
    """AWS's default key policy: the account root may do everything, so the account's IAM policies apply."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Id": "key-default-1",
            "Statement": [
                {
                    "Sid": "Enable IAM User Permissions",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            ],
        },
        indent=2,
    )


def aws_managed_key_policy(account_id: str, service: str) -> str:
    """The policy AWS gives an AWS-managed key: the account may use it only through ``service`` and read it."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Id": f"auto-{service.split('.')[0]}-1",
            "Statement": [
                {
                    "Sid": f"Allow access through {service.split('.')[0].upper()} for all principals in the account "
                    "that are authorized to use it",
                    "Effect": "Allow",
                    "Principal": {"AWS": "*"},
                    "Action": [
                        "kms:Encrypt",
                        "kms:Decrypt",
                        "kms:ReEncrypt*",
                        "kms:GenerateDataKey*",
                        "kms:CreateGrant",
                        "kms:DescribeKey",
                    ],
                    "Resource": "*",
                    "Condition": {"StringEquals": {"kms:CallerAccount": account_id, "kms:ViaService": service}},
                },
                {
                    "Sid": "Allow direct access to key metadata to the account",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
                    "Action": ["kms:Describe*", "kms:Get*", "kms:List*"],
                    "Resource": "*",
                },
            ],
        },
        indent=2,
    )


def check_key_policy(text: str) -> None:
    """A key policy must be valid IAM policy JSON with principals, at most 32 KB, and test only condition keys
    Soko evaluates (a kms: key it does not evaluate would silently never match)."""
    if len(text.encode()) > MAX_POLICY_BYTES:
        raise MalformedPolicyDocumentException(f"The key policy is larger than {MAX_POLICY_BYTES} bytes")
    try:
        policy = parse_policy(text, PolicyKind.KEY)
    except MalformedPolicy as exc:
        raise MalformedPolicyDocumentException(f"The new key policy is not valid: {exc.message}") from None
    for st in policy.statements:
        for clause in st.conditions:
            key = clause.key
            if key.startswith("kms:") and not (
                key in SUPPORTED_KMS_CONDITION_KEYS or key.startswith(SUPPORTED_KMS_CONDITION_PREFIXES)
            ):
                raise MalformedPolicyDocumentException(
                    f"The key policy tests condition key {key!r}, which this KMS does not evaluate (supported: "
                    f"kms:ViaService, kms:CallerAccount, kms:EncryptionContext:<key>, kms:EncryptionContextKeys, "
                    f"kms:EncryptionAlgorithm, kms:KeySpec, kms:KeyUsage, kms:KeyOrigin, kms:MultiRegion, "
                    f"kms:GrantIsForAWSResource, kms:RequestAlias and the aws: keys of docs/iam-conditions.md)"
                )


class KeyService:
    def __init__(self, ctx: DomainContext, identity: Identity) -> None:
        self.ctx = ctx
        self.identity = identity
        self.region = ctx.settings.region
        self._wrapping_key = identity.master.kms_wrapping_key
        # key id -> (generation, {version: material}); rewritten on any KMS write (they bump the generation)
        self._materials: dict[str, tuple[int, dict[int, bytes]]] = {}
        self._lock = threading.Lock()

    # ---- names ----------------------------------------------------------------------------------------------

    def key_arn(self, account_id: str, key_id: str) -> str:
        return f"arn:aws:kms:{self.region}:{account_id}:key/{key_id}"

    def alias_arn(self, account_id: str, alias_name: str) -> str:
        return f"arn:aws:kms:{self.region}:{account_id}:{alias_name}"

    # ---- reading keys ---------------------------------------------------------------------------------------

    def _info(self, row: sa.Row) -> KeyInfo:
        return KeyInfo(
            key_id=row.key_id,
            account_id=row.account_id,
            arn=self.key_arn(row.account_id, row.key_id),
            state=row.state,
            description=row.description,
            manager=row.manager,
            created_at=row.created_at,
            deletion_date=row.deletion_date,
            pending_window_days=row.pending_window_days,
            rotation_enabled=bool(row.rotation_enabled),
            rotation_period_days=row.rotation_period_days,
            next_rotation_at=row.next_rotation_at,
            current_version=row.current_version,
            policy_text=row.policy_text,
        )

    def _row(self, conn: sa.Connection, key_id: str) -> sa.Row | None:
        return conn.execute(sa.select(kms_keys).where(kms_keys.c.key_id == key_id)).first()

    def _parse_ref(self, account_id: str, key_ref: str) -> tuple[str, str, bool]:
        """(account, key id or alias name, is_alias) a reference names; NotFoundException for what names nothing
        here (another region, not a key id)."""
        if len(key_ref) > 2048:
            raise NotFoundException("Invalid keyId: longer than 2048 characters")
        m = _KMS_ARN.fullmatch(key_ref)
        if m is not None:
            region, account, resource = m.groups()
            if region != self.region:
                raise NotFoundException(
                    f"Invalid arn {key_ref!r}: the key is in region {region!r}; this endpoint serves {self.region!r}"
                )
            if resource.startswith("alias/"):
                return account, resource, True
            return account, resource[4:], False
        if key_ref.startswith("arn:"):
            raise NotFoundException(f"Invalid arn {key_ref[:200]!r}")
        if key_ref.startswith("alias/"):
            return account_id, key_ref, True
        return account_id, key_ref, False

    def _lookup(self, conn: sa.Connection, account_id: str, key_ref: str) -> tuple[KeyInfo, str | None]:
        """(key, alias name used) for a reference; the key in any state but Deleted."""
        account, name, is_alias = self._parse_ref(account_id, key_ref)
        alias = None
        if is_alias:
            key_id = conn.execute(
                sa.select(kms_aliases.c.key_id).where(
                    kms_aliases.c.account_id == account, kms_aliases.c.alias_name == name
                )
            ).scalar()
            if key_id is None:
                raise NotFoundException(f"Alias {self.alias_arn(account, name)} is not found.")
            alias = name
        else:
            if not _UUID.fullmatch(name):
                raise NotFoundException(f"Invalid keyId {key_ref[:200]!r}")
            key_id = name
        row = self._row(conn, key_id)
        if row is None or row.account_id != account:
            raise NotFoundException(f"Key '{self.key_arn(account, key_id)}' does not exist")
        info = self._info(row)
        if info.state == DELETED:
            raise KeyDeleted(
                f"Key '{info.arn}' does not exist: it was deleted after its waiting period and its key material "
                "destroyed (what it encrypted cannot be decrypted)"
            )
        return info, alias

    def _maintained(self, info: KeyInfo) -> KeyInfo:
        """The key after what its dates call for: a deletion whose date has passed, an automatic rotation due."""
        now = self.ctx.clock()
        if info.state == PENDING_DELETION and info.deletion_date is not None and info.deletion_date <= now:
            self._destroy(info.key_id, now)
            raise KeyDeleted(
                f"Key '{info.arn}' does not exist: it was deleted after its waiting period and its key material "
                "destroyed (what it encrypted cannot be decrypted)"
            )
        due = info.rotation_enabled and info.next_rotation_at is not None and info.next_rotation_at <= now
        if due and info.state == ENABLED:
            self._rotate(info, now, "AUTOMATIC")
            return self._get(info.key_id)
        return info

    def _get(self, key_id: str) -> KeyInfo:
        with self.ctx.db.read() as conn:
            row = self._row(conn, key_id)
        if row is None or row.state == DELETED:
            raise NotFoundException(f"Key '{key_id}' does not exist")
        return self._info(row)

    def resolve_key(self, account_id: str, key_ref: str) -> KeyInfo:
        """The key ``key_ref`` names for a caller in ``account_id`` (see the module docstring)."""
        return self._resolve(account_id, key_ref)[0]

    def peek_key(self, account_id: str, key_ref: str) -> KeyInfo:
        """``resolve_key`` without its upkeep (a due deletion or rotation is not carried out, no AWS-managed key is
        created): reads only, so a caller inside a write transaction may ask. A key past its deletion date is still
        PendingDeletion here, unusable all the same."""
        with self.ctx.db.read() as conn:
            return self._lookup(conn, account_id, key_ref)[0]

    def _resolve(self, account_id: str, key_ref: str) -> tuple[KeyInfo, str | None]:
        try:
            with self.ctx.db.read() as conn:
                info, alias = self._lookup(conn, account_id, key_ref)
        except NotFoundException as exc:
            # As in AWS, naming a predefined alias/aws/<service> creates the AWS-managed key it stands for.
            account, name, is_alias = self._parse_ref(account_id, key_ref)
            if isinstance(exc, KeyDeleted) or not is_alias or name[len("alias/") :] not in AWS_MANAGED_ALIASES:
                raise
            self.aws_managed_key(account, name[len("alias/") :])
            with self.ctx.db.read() as conn:
                info, alias = self._lookup(conn, account_id, key_ref)
        return self._maintained(info), alias

    def _materials_of(self, key_id: str) -> dict[int, bytes]:
        generation = self.ctx.generation.current()
        hit = self._materials.get(key_id)
        if hit is not None and hit[0] == generation:
            return hit[1]
        with self.ctx.db.read() as conn:
            rows = conn.execute(
                sa.select(kms_key_material.c.version, kms_key_material.c.wrapped).where(
                    kms_key_material.c.key_id == key_id
                )
            ).all()
        try:
            materials = {
                r.version: ciphertext.unwrap_material(self._wrapping_key, key_id, r.version, r.wrapped) for r in rows
            }
        except ciphertext.Malformed as exc:
            raise KmsError(str(exc)) from None
        with self._lock:
            if len(self._materials) > 10_000:
                self._materials.clear()
            self._materials[key_id] = (generation, materials)
        return materials

    # ---- authorization and audit ----------------------------------------------------------------------------

    def _authorize(
        self,
        principal: Principal | None,
        operation: str,
        info: KeyInfo,
        context: RequestContext | None,
        via_service: str | None = None,
        encryption_context: dict[str, str] | None = None,
        alias: str | None = None,
        extra: dict | None = None,
    ) -> None:
        if principal is None:  # Soko's own use for via_service (ECR's grant on its repositories' keys)
            return
        keys: dict = {
            "kms:CallerAccount": principal.account_id,
            "kms:KeySpec": "SYMMETRIC_DEFAULT",
            "kms:KeyUsage": "ENCRYPT_DECRYPT",
            "kms:KeyOrigin": "AWS_KMS",
            "kms:MultiRegion": False,
            "kms:GrantIsForAWSResource": False,
        }
        if via_service:
            keys["kms:ViaService"] = via_service
        if encryption_context is not None:
            keys["kms:EncryptionAlgorithm"] = "SYMMETRIC_DEFAULT"
            for k, v in encryption_context.items():
                keys[f"kms:EncryptionContext:{k}"] = v
            if encryption_context:
                keys["kms:EncryptionContextKeys"] = list(encryption_context)
        if alias:
            keys["kms:RequestAlias"] = alias
        keys.update(extra or {})
        try:
            self.identity.authorizer.authorize_key(
                principal,
                f"kms:{operation}",
                info.arn,
                info.account_id,
                info.policy_text,
                context or RequestContext(),
                keys,
            )
        except AccessDenied as exc:
            raise AccessDeniedException(exc.message) from None

    def _authorize_account(
        self,
        principal: Principal,
        operation: str,
        resource: str,
        context: RequestContext | None,
        condition_keys: dict | None = None,
    ) -> None:
        """An action on no key (CreateKey, ListKeys, ListAliases, the alias side of alias operations): the
        caller's IAM policies alone. ``condition_keys``: the request's own (CreateKey's tags and key spec)."""
        context = context or RequestContext()
        if condition_keys:
            extra = dict(context.extra)
            extra["condition_keys"] = {**extra.get("condition_keys", {}), **condition_keys}
            context = context.with_extra(extra)
        try:
            self.identity.authorizer.authorize(principal, f"kms:{operation}", resource, None, context)
        except AccessDenied as exc:
            raise AccessDeniedException(exc.message) from None

    def audit(
        self,
        principal: Principal | None,
        operation: str,
        key_arn: str | None,
        context: RequestContext | None,
        *,
        params: dict | None = None,
        via_service: str | None = None,
        error: KmsError | None = None,
    ) -> None:
        """One CloudTrail-like record of a KMS event (never plaintext or key material)."""
        record: dict = {"eventSource": "kms.amazonaws.com", "eventName": operation, "awsRegion": self.region}
        if params:
            record["requestParameters"] = params
        if via_service:
            record["invokedBy"] = via_service
        if error is not None:
            record["errorCode"] = error.code
            record["errorMessage"] = error.message[:300]
        who = principal.arn if principal is not None else (via_service or "soko")
        decision = "allow" if error is None else ("deny" if isinstance(error, AccessDeniedException) else "error")
        reason = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
        self.identity.audit.record("kms", who, f"kms:{operation}", key_arn, decision, reason, context)

    @staticmethod
    def _context_param(encryption_context: dict[str, str] | None) -> dict:
        return {"encryptionContext": encryption_context} if encryption_context else {}

    # ---- cryptographic operations ---------------------------------------------------------------------------

    def _usable(self, info: KeyInfo) -> None:
        error = info.usable_error()
        if error is not None:
            raise error

    def _caller_account(self, principal: Principal | None, account_id: str | None) -> str:
        if account_id is not None:
            return account_id
        if principal is None:
            raise ValidationException("account_id is required for Soko's own use of a key")
        return principal.account_id

    def encrypt(
        self,
        principal: Principal | None,
        key_ref: str,
        plaintext: bytes,
        encryption_context: dict[str, str] | None = None,
        via_service: str | None = None,
        context: RequestContext | None = None,
        *,
        account_id: str | None = None,
        operation: str = "Encrypt",
    ) -> tuple[bytes, str]:
        """(ciphertext blob, key ARN) of ``plaintext`` (at most 4096 bytes) under the key's newest version."""
        key_arn: str | None = None
        params = {"keyId": key_ref, "encryptionAlgorithm": "SYMMETRIC_DEFAULT"} | self._context_param(
            encryption_context
        )
        try:
            if len(plaintext) > 4096:
                raise ValidationException(
                    "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: Member must "
                    "have length less than or equal to 4096"
                )
            info, alias = self._resolve(self._caller_account(principal, account_id), key_ref)
            key_arn = info.arn
            self._authorize(principal, operation, info, context, via_service, encryption_context or {}, alias)
            self._usable(info)
            material = self._materials_of(info.key_id).get(info.current_version)
            if material is None:
                raise KeyDeleted(f"Key '{info.arn}' has no key material")
            blob = ciphertext.seal(material, info.key_id, info.current_version, plaintext, encryption_context)
        except KmsError as exc:
            self.audit(principal, operation, key_arn, context, params=params, via_service=via_service, error=exc)
            raise
        self.audit(principal, operation, key_arn, context, params=params, via_service=via_service)
        return blob, info.arn

    def generate_data_key(
        self,
        principal: Principal | None,
        key_ref: str,
        encryption_context: dict[str, str] | None = None,
        via_service: str | None = None,
        context: RequestContext | None = None,
        *,
        number_of_bytes: int = 32,
        account_id: str | None = None,
        operation: str = "GenerateDataKey",
    ) -> tuple[bytes, bytes, str]:
        """(plaintext data key, its ciphertext blob, key ARN): a fresh random data key encrypted under the key."""
        plaintext = secrets.token_bytes(number_of_bytes)
        blob, arn = self.encrypt(
            principal,
            key_ref,
            plaintext,
            encryption_context,
            via_service,
            context,
            account_id=account_id,
            operation=operation,
        )
        return plaintext, blob, arn

    def _open(self, blob: bytes) -> tuple[ciphertext.BlobHeader, KeyInfo]:
        try:
            header = ciphertext.parse_header(blob)
        except ciphertext.Malformed:
            raise InvalidCiphertextException("The ciphertext is not a valid ciphertext blob") from None
        with self.ctx.db.read() as conn:
            row = self._row(conn, header.key_id)
        if row is None:
            raise InvalidCiphertextException("The ciphertext refers to a key that does not exist")
        info = self._info(row)
        if info.state == DELETED:
            raise KeyDeleted(
                f"The ciphertext was encrypted under key '{info.arn}', which was deleted and its key material "
                "destroyed: it cannot be decrypted"
            )
        return header, self._maintained(info)

    def decrypt(
        self,
        principal: Principal | None,
        blob: bytes,
        encryption_context: dict[str, str] | None = None,
        via_service: str | None = None,
        context: RequestContext | None = None,
        *,
        key_ref: str | None = None,
        operation: str = "Decrypt",
    ) -> tuple[bytes, str]:
        """(plaintext, key ARN) of a blob made by Encrypt or GenerateDataKey, with its exact encryption context.
        ``key_ref``: the key the caller expects (IncorrectKeyException when the blob is another key's)."""
        key_arn: str | None = None
        params = {"encryptionAlgorithm": "SYMMETRIC_DEFAULT"} | self._context_param(encryption_context)
        if key_ref:
            params["keyId"] = key_ref
        try:
            header, info = self._open(blob)
            key_arn = info.arn
            # authorized first (as AWS): an IncorrectKeyException would tell a caller who may not use the
            # ciphertext's key which key it is not, one KeyId at a time
            self._authorize(principal, operation, info, context, via_service, encryption_context or {})
            if key_ref:
                expected = self.resolve_key(principal.account_id if principal else info.account_id, key_ref)
                if expected.key_id != info.key_id:
                    raise IncorrectKeyException(
                        "The key ID in the request does not identify a KMS key that can perform this operation."
                    )
            self._usable(info)
            material = self._materials_of(info.key_id).get(header.version)
            if material is None:
                raise InvalidCiphertextException("The ciphertext names a key version that does not exist")
            try:
                plaintext = ciphertext.open_blob(material, blob, encryption_context)
            except ciphertext.Malformed:
                raise InvalidCiphertextException(
                    "The ciphertext is corrupt or its encryption context does not match the one it was encrypted with"
                ) from None
        except KmsError as exc:
            self.audit(principal, operation, key_arn, context, params=params, via_service=via_service, error=exc)
            raise
        self.audit(principal, operation, key_arn, context, params=params, via_service=via_service)
        return plaintext, info.arn

    def re_encrypt(
        self,
        principal: Principal,
        blob: bytes,
        source_context: dict[str, str] | None,
        destination_key_ref: str,
        destination_context: dict[str, str] | None,
        context: RequestContext | None = None,
        *,
        source_key_ref: str | None = None,
    ) -> tuple[bytes, str, str]:
        """(new blob, source key ARN, destination key ARN): kms:ReEncryptFrom on the source key, kms:ReEncryptTo
        on the destination; the plaintext never leaves Soko."""
        plaintext, source_arn = self.decrypt(
            principal, blob, source_context, None, context, key_ref=source_key_ref, operation="ReEncryptFrom"
        )
        new_blob, dest_arn = self.encrypt(
            principal, destination_key_ref, plaintext, destination_context, None, context, operation="ReEncryptTo"
        )
        return new_blob, source_arn, dest_arn

    # ---- AWS-managed keys -----------------------------------------------------------------------------------

    def aws_managed_key(self, account_id: str, name: str = "aws/ecr") -> str:
        """The ARN of the account's AWS-managed key ``name`` (``aws/ecr``), created on first use."""
        if name not in AWS_MANAGED_ALIASES:
            raise NotFoundException(f"Alias alias/{name} is not an AWS-managed key this KMS provides")
        alias = f"alias/{name}"
        with self.ctx.db.read() as conn:
            key_id = conn.execute(
                sa.select(kms_aliases.c.key_id).where(
                    kms_aliases.c.account_id == account_id, kms_aliases.c.alias_name == alias
                )
            ).scalar()
        if key_id is not None:
            return self.key_arn(account_id, key_id)
        service = f"{name.split('/')[1]}.{self.region}.amazonaws.com"
        try:
            info = self._create(
                account_id,
                f"Default key that protects my {name.split('/')[1].upper()} data when no other key is defined",
                aws_managed_key_policy(account_id, service),
                "AWS",
                {},
                rotation_days=365,
                alias=alias,
            )
        except AlreadyExistsException:  # another request created it first
            return self.aws_managed_key(account_id, name)
        self.audit(None, "CreateKey", info.arn, None, params={"alias": alias}, via_service=service)
        return info.arn

    # ---- key management -------------------------------------------------------------------------------------

    def _create(
        self,
        account_id: str,
        description: str,
        policy_text: str,
        manager: str,
        tags: dict[str, str],
        *,
        rotation_days: int | None = None,
        alias: str | None = None,
    ) -> KeyInfo:
        key_id = str(uuid.uuid4())
        now = self.ctx.clock()
        material = secrets.token_bytes(32)
        try:
            with self.ctx.write(invalidates=True) as conn:
                if alias is not None:
                    taken = conn.execute(
                        sa.select(kms_aliases.c.key_id).where(
                            kms_aliases.c.account_id == account_id, kms_aliases.c.alias_name == alias
                        )
                    ).first()
                    if taken is not None:
                        raise AlreadyExistsException(
                            f"An alias with the name {self.alias_arn(account_id, alias)} exists"
                        )
                conn.execute(
                    sa.insert(kms_keys).values(
                        key_id=key_id,
                        account_id=account_id,
                        description=description,
                        state=ENABLED,
                        manager=manager,
                        policy_text=policy_text,
                        created_at=now,
                        rotation_enabled=rotation_days is not None,
                        rotation_period_days=rotation_days,
                        next_rotation_at=now + rotation_days * DAY if rotation_days else None,
                        current_version=1,
                    )
                )
                conn.execute(
                    sa.insert(kms_key_material).values(
                        key_id=key_id,
                        version=1,
                        wrapped=ciphertext.wrap_material(self._wrapping_key, key_id, 1, material),
                        created_at=now,
                    )
                )
                if tags:
                    conn.execute(
                        sa.insert(kms_key_tags), [{"key_id": key_id, "key": k, "value": v} for k, v in tags.items()]
                    )
                if alias is not None:
                    conn.execute(
                        sa.insert(kms_aliases).values(
                            account_id=account_id, alias_name=alias, key_id=key_id, created_at=now, updated_at=now
                        )
                    )
        except sa.exc.IntegrityError:  # another node created the alias between our check and our insert
            raise AlreadyExistsException(
                f"An alias with the name {self.alias_arn(account_id, alias or '')} exists"
            ) from None
        return self._get(key_id)

    def create_key(
        self,
        principal: Principal,
        description: str = "",
        policy: str | None = None,
        tags: dict[str, str] | None = None,
        bypass_policy_lockout_safety_check: bool = False,
        context: RequestContext | None = None,
    ) -> KeyInfo:
        params: dict = {"description": description, "keySpec": "SYMMETRIC_DEFAULT", "keyUsage": "ENCRYPT_DECRYPT"}
        try:
            keys = request_tag_keys([{"Key": k, "Value": v} for k, v in (tags or {}).items()]) | {
                "kms:KeySpec": "SYMMETRIC_DEFAULT",
                "kms:KeyUsage": "ENCRYPT_DECRYPT",
                "kms:KeyOrigin": "AWS_KMS",
                "kms:MultiRegion": False,
            }
            self._authorize_account(principal, "CreateKey", "*", context, keys)
            account = principal.account_id
            text = policy if policy is not None else default_key_policy(account)
            check_key_policy(text)
            check_tags(tags or {})
            if policy is not None and not bypass_policy_lockout_safety_check:
                self._lockout_check(principal, account, text, context)
            info = self._create(account, description, text, "CUSTOMER", tags or {})
        except KmsError as exc:
            self.audit(principal, "CreateKey", None, context, params=params, error=exc)
            raise
        self.audit(principal, "CreateKey", info.arn, context, params=params)
        return info

    def _lockout_check(self, principal: Principal, account: str, text: str, context: RequestContext | None) -> None:
        """AWS refuses a policy that would not let the caller change it again (unless the caller bypasses)."""
        probe = KeyInfo(
            key_id="00000000-0000-0000-0000-000000000000",
            account_id=account,
            arn=self.key_arn(account, "00000000-0000-0000-0000-000000000000"),
            state=ENABLED,
            description="",
            manager="CUSTOMER",
            created_at=0.0,
            deletion_date=None,
            pending_window_days=None,
            rotation_enabled=False,
            rotation_period_days=None,
            next_rotation_at=None,
            current_version=1,
            policy_text=text,
        )
        try:
            self._authorize(principal, "PutKeyPolicy", probe, context)
        except AccessDeniedException:
            raise MalformedPolicyDocumentException(
                "The new key policy will not allow you to update the key policy in the future."
            ) from None

    def _managed(
        self,
        principal: Principal,
        operation: str,
        key_ref: str,
        context: RequestContext | None,
        params: dict | None = None,
        extra_keys: dict | None = None,
    ) -> Generator[KeyInfo, None, None]:
        """Resolve and authorize a management operation; audit its outcome (a generator: the body runs between)."""
        key_arn = None
        try:
            info, alias = self._resolve(principal.account_id, key_ref)
            key_arn = info.arn
            if info.account_id != principal.account_id and operation not in CROSS_ACCOUNT_OPERATIONS:
                # as AWS: another account may use a key its policy shares, never manage it, whatever the policy says
                raise NotFoundException(f"Key '{info.arn}' does not exist")
            self._authorize(principal, operation, info, context, alias=alias, extra=extra_keys)
            yield info
        except KmsError as exc:
            self.audit(principal, operation, key_arn, context, params={"keyId": key_ref, **(params or {})}, error=exc)
            raise
        self.audit(principal, operation, key_arn, context, params={"keyId": key_ref, **(params or {})})

    def _run(self, gen: Generator[KeyInfo, None, None]) -> KeyInfo:
        """Drive a ``_managed`` generator whose body already ran (no body)."""
        info = next(gen)
        for _ in gen:
            pass
        return info

    def describe_key(self, principal: Principal, key_ref: str, context: RequestContext | None = None) -> KeyInfo:
        return self._run(self._managed(principal, "DescribeKey", key_ref, context))

    def _mutate(
        self,
        principal: Principal,
        operation: str,
        key_ref: str,
        context: RequestContext | None,
        change: Callable[[KeyInfo], None],
        params: dict | None = None,
        extra_keys: dict | None = None,
    ) -> KeyInfo:
        gen = self._managed(principal, operation, key_ref, context, params, extra_keys)
        info = next(gen)
        try:
            change(info)
        except KmsError as exc:
            gen.throw(exc)
            raise
        for _ in gen:
            pass
        return self._get(info.key_id)

    def _update(self, key_id: str, **values) -> None:
        with self.ctx.write(invalidates=True) as conn:
            conn.execute(sa.update(kms_keys).where(kms_keys.c.key_id == key_id).values(**values))
        if values.get("state", ENABLED) != ENABLED:
            self._drop_plaintext(key_id)

    def _drop_plaintext(self, key_id: str) -> None:
        """A key that cannot be used any more: this node's decrypted copies of its content leave memory now (other
        nodes' at their next pull of it, or within ``PLAINTEXT_SWEEP`` seconds: ``key_state``)."""
        cache = self.ctx.plain_cache
        if cache is not None:
            cache.drop_key(key_id)

    def key_state(self, key_id: str) -> str:
        """Enabled | Disabled | PendingDeletion | Deleted (also for a key that does not exist)."""
        with self.ctx.db.read() as conn:
            row = self._row(conn, key_id)
        return DELETED if row is None else row.state

    def _not_aws_managed(self, info: KeyInfo, operation: str) -> None:
        if info.manager == "AWS":
            raise UnsupportedOperationException(f"{info.arn} is an AWS managed key: {operation} is not allowed on it")

    def enable_key(self, principal: Principal, key_ref: str, context: RequestContext | None = None) -> KeyInfo:
        def change(info: KeyInfo) -> None:
            if info.state == PENDING_DELETION:
                raise KMSInvalidStateException(f"{info.arn} is pending deletion.")
            self._update(info.key_id, state=ENABLED)

        return self._mutate(principal, "EnableKey", key_ref, context, change)

    def disable_key(self, principal: Principal, key_ref: str, context: RequestContext | None = None) -> KeyInfo:
        def change(info: KeyInfo) -> None:
            self._not_aws_managed(info, "DisableKey")
            if info.state == PENDING_DELETION:
                raise KMSInvalidStateException(f"{info.arn} is pending deletion.")
            self._update(info.key_id, state=DISABLED)

        return self._mutate(principal, "DisableKey", key_ref, context, change)

    def schedule_key_deletion(
        self, principal: Principal, key_ref: str, pending_window_days: int = 30, context: RequestContext | None = None
    ) -> KeyInfo:
        if not 7 <= pending_window_days <= 30:
            raise ValidationException("PendingWindowInDays must be between 7 and 30")

        def change(info: KeyInfo) -> None:
            self._not_aws_managed(info, "ScheduleKeyDeletion")
            if info.state == PENDING_DELETION:
                raise KMSInvalidStateException(f"{info.arn} is pending deletion.")
            self._update(
                info.key_id,
                state=PENDING_DELETION,
                deletion_date=self.ctx.clock() + pending_window_days * DAY,
                pending_window_days=pending_window_days,
            )

        return self._mutate(
            principal,
            "ScheduleKeyDeletion",
            key_ref,
            context,
            change,
            {"pendingWindowInDays": pending_window_days},
            {"kms:ScheduleKeyDeletionPendingWindowInDays": pending_window_days},
        )

    def cancel_key_deletion(self, principal: Principal, key_ref: str, context: RequestContext | None = None) -> KeyInfo:
        def change(info: KeyInfo) -> None:
            if info.state != PENDING_DELETION:
                raise KMSInvalidStateException(f"{info.arn} is not pending deletion.")
            # As in AWS: the key comes back Disabled; EnableKey makes it usable again.
            self._update(info.key_id, state=DISABLED, deletion_date=None, pending_window_days=None)

        return self._mutate(principal, "CancelKeyDeletion", key_ref, context, change)

    def enable_key_rotation(
        self, principal: Principal, key_ref: str, period_days: int | None = None, context: RequestContext | None = None
    ) -> KeyInfo:
        days = period_days or DEFAULT_ROTATION_DAYS
        if not 90 <= days <= 2560:
            raise ValidationException("RotationPeriodInDays must be between 90 and 2560")

        def change(info: KeyInfo) -> None:
            self._not_aws_managed(info, "EnableKeyRotation")
            self._usable(info)
            self._update(
                info.key_id,
                rotation_enabled=True,
                rotation_period_days=days,
                next_rotation_at=self.ctx.clock() + days * DAY,
            )

        return self._mutate(
            principal,
            "EnableKeyRotation",
            key_ref,
            context,
            change,
            {"rotationPeriodInDays": days},
            {"kms:RotationPeriodInDays": days},
        )

    def disable_key_rotation(
        self, principal: Principal, key_ref: str, context: RequestContext | None = None
    ) -> KeyInfo:
        def change(info: KeyInfo) -> None:
            self._not_aws_managed(info, "DisableKeyRotation")
            self._usable(info)
            self._update(info.key_id, rotation_enabled=False, next_rotation_at=None)

        return self._mutate(principal, "DisableKeyRotation", key_ref, context, change)

    def get_key_rotation_status(
        self, principal: Principal, key_ref: str, context: RequestContext | None = None
    ) -> tuple[KeyInfo, RotationStatus]:
        info = self._run(self._managed(principal, "GetKeyRotationStatus", key_ref, context))
        with self.ctx.db.read() as conn:
            on_demand = conn.execute(
                sa.select(sa.func.max(kms_key_material.c.created_at)).where(
                    kms_key_material.c.key_id == info.key_id, kms_key_material.c.rotation_type == "ON_DEMAND"
                )
            ).scalar()
        enabled = info.rotation_enabled and info.state != PENDING_DELETION
        return info, RotationStatus(
            enabled,
            info.rotation_period_days if enabled else None,
            info.next_rotation_at,
            on_demand,
        )

    def rotate_key_on_demand(
        self, principal: Principal, key_ref: str, context: RequestContext | None = None
    ) -> KeyInfo:
        def change(info: KeyInfo) -> None:
            self._not_aws_managed(info, "RotateKeyOnDemand")
            self._usable(info)
            self._rotate_on_demand(info, self.ctx.clock())

        return self._mutate(principal, "RotateKeyOnDemand", key_ref, context, change)

    def _rotate_on_demand(self, info: KeyInfo, now: float) -> None:
        """A new key version, made under the key's row lock (PostgreSQL; SQLite's writers take turns anyway): the
        limit is checked against the rotations there are and the version read under the lock, so concurrent calls
        each make a rotation of their own, or are refused past the limit (a check before a conditional update let
        each answer 200 with one rotation made, and several pass the check at 24)."""
        material = secrets.token_bytes(32)
        with self.ctx.write(invalidates=True) as conn:
            current = conn.execute(
                sa.select(kms_keys.c.current_version).where(kms_keys.c.key_id == info.key_id).with_for_update()
            ).scalar_one()
            done = conn.execute(
                sa.select(sa.func.count()).where(
                    kms_key_material.c.key_id == info.key_id, kms_key_material.c.rotation_type == "ON_DEMAND"
                )
            ).scalar()
            if (done or 0) >= MAX_ON_DEMAND_ROTATIONS:
                raise LimitExceededException(
                    f"{info.arn} has been rotated on demand {MAX_ON_DEMAND_ROTATIONS} times, the most allowed"
                )
            version = current + 1
            conn.execute(sa.update(kms_keys).where(kms_keys.c.key_id == info.key_id).values(current_version=version))
            conn.execute(
                sa.insert(kms_key_material).values(
                    key_id=info.key_id,
                    version=version,
                    wrapped=ciphertext.wrap_material(self._wrapping_key, info.key_id, version, material),
                    created_at=now,
                    rotation_type="ON_DEMAND",
                )
            )

    def _rotate(self, info: KeyInfo, now: float, kind: str) -> None:
        """A new key version becomes current; every older one stays (old ciphertexts decrypt). Conditional on the
        version seen, so two nodes rotating at once make one new version."""
        version = info.current_version + 1
        material = secrets.token_bytes(32)
        values: dict = {"current_version": version}
        if kind == "AUTOMATIC" and info.rotation_period_days:
            values["next_rotation_at"] = now + info.rotation_period_days * DAY
        with self.ctx.write(invalidates=True) as conn:
            done = conn.execute(
                sa.update(kms_keys)
                .where(kms_keys.c.key_id == info.key_id, kms_keys.c.current_version == info.current_version)
                .values(**values)
            ).rowcount
            if done:
                conn.execute(
                    sa.insert(kms_key_material).values(
                        key_id=info.key_id,
                        version=version,
                        wrapped=ciphertext.wrap_material(self._wrapping_key, info.key_id, version, material),
                        created_at=now,
                        rotation_type=kind,
                    )
                )
        if done and kind == "AUTOMATIC":
            self.audit(None, "RotateKey", info.arn, None, params={"keyId": info.key_id, "rotationType": kind})

    def _destroy(self, key_id: str, now: float) -> bool:
        """Crypto-shredding: the key's material, aliases and tags go; the row stays as Deleted (so Decrypt can say
        why it fails). Only a key still pending deletion with its date passed."""
        with self.ctx.write(invalidates=True) as conn:
            done = conn.execute(
                sa.update(kms_keys)
                .where(
                    kms_keys.c.key_id == key_id,
                    kms_keys.c.state == PENDING_DELETION,
                    kms_keys.c.deletion_date <= now,
                )
                .values(state=DELETED)
            ).rowcount
            if done:
                conn.execute(sa.delete(kms_key_material).where(kms_key_material.c.key_id == key_id))
                conn.execute(sa.delete(kms_aliases).where(kms_aliases.c.key_id == key_id))
                conn.execute(sa.delete(kms_key_tags).where(kms_key_tags.c.key_id == key_id))
        with self._lock:
            self._materials.pop(key_id, None)
        if done:
            self._drop_plaintext(key_id)
            with self.ctx.db.read() as conn:
                row = self._row(conn, key_id)
            arn = self.key_arn(row.account_id, key_id) if row is not None else key_id
            self.audit(None, "DeleteKey", arn, None, params={"keyId": key_id})
        return bool(done)

    def upkeep(self) -> tuple[int, int]:
        """Destroy keys whose deletion date passed and rotate keys whose rotation is due: (deleted, rotated)."""
        now = self.ctx.clock()
        with self.ctx.db.read() as conn:
            due_delete = (
                conn.execute(
                    sa.select(kms_keys.c.key_id).where(
                        kms_keys.c.state == PENDING_DELETION, kms_keys.c.deletion_date <= now
                    )
                )
                .scalars()
                .all()
            )
            due_rotate = conn.execute(
                sa.select(kms_keys).where(
                    kms_keys.c.state == ENABLED,
                    kms_keys.c.rotation_enabled == sa.true(),
                    kms_keys.c.next_rotation_at <= now,
                )
            ).all()
        deleted = sum(self._destroy(key_id, now) for key_id in due_delete)
        for row in due_rotate:
            self._rotate(self._info(row), now, "AUTOMATIC")
        return deleted, len(due_rotate)

    # ---- listing, aliases, policies, tags -------------------------------------------------------------------

    def list_keys(self, principal: Principal, context: RequestContext | None = None) -> list[KeyInfo]:
        try:
            self._authorize_account(principal, "ListKeys", "*", context)
        except KmsError as exc:
            self.audit(principal, "ListKeys", None, context, error=exc)
            raise
        self.upkeep_account(principal.account_id)
        with self.ctx.db.read() as conn:
            rows = conn.execute(
                sa.select(kms_keys)
                .where(kms_keys.c.account_id == principal.account_id, kms_keys.c.state != DELETED)
                .order_by(kms_keys.c.created_at, kms_keys.c.key_id)
            ).all()
        self.audit(principal, "ListKeys", None, context)
        return [self._info(r) for r in rows]

    def upkeep_account(self, account_id: str) -> None:
        now = self.ctx.clock()
        with self.ctx.db.read() as conn:
            due = (
                conn.execute(
                    sa.select(kms_keys.c.key_id).where(
                        kms_keys.c.account_id == account_id,
                        kms_keys.c.state == PENDING_DELETION,
                        kms_keys.c.deletion_date <= now,
                    )
                )
                .scalars()
                .all()
            )
        for key_id in due:
            self._destroy(key_id, now)

    def list_aliases(
        self, principal: Principal, key_ref: str | None = None, context: RequestContext | None = None
    ) -> list[AliasInfo]:
        account = principal.account_id
        try:
            key_id = None
            if key_ref is not None:
                info = self._run(self._managed(principal, "ListAliases", key_ref, context))
                key_id = info.key_id
            else:
                self._authorize_account(principal, "ListAliases", "*", context)
        except KmsError as exc:
            if key_ref is None:
                self.audit(principal, "ListAliases", None, context, error=exc)
            raise
        self.upkeep_account(account)
        stmt = sa.select(kms_aliases).where(kms_aliases.c.account_id == account).order_by(kms_aliases.c.alias_name)
        if key_id is not None:
            stmt = stmt.where(kms_aliases.c.key_id == key_id)
        with self.ctx.db.read() as conn:
            rows = conn.execute(stmt).all()
        if key_ref is None:
            self.audit(principal, "ListAliases", None, context)
        return [
            AliasInfo(r.alias_name, self.alias_arn(account, r.alias_name), r.key_id, r.created_at, r.updated_at)
            for r in rows
        ]

    def _check_alias_name(self, name: str) -> None:
        if not _ALIAS_NAME.fullmatch(name) or len(name) > 256:
            raise InvalidAliasNameException(
                f"Alias name {name[:300]!r} must begin with 'alias/' followed by letters, digits, '/', '_' or '-'"
            )
        if name.startswith("alias/aws/"):
            raise InvalidAliasNameException(f"Alias name {name!r} is reserved for AWS managed keys")

    def create_alias(
        self, principal: Principal, alias_name: str, target_key_ref: str, context: RequestContext | None = None
    ) -> None:
        account = principal.account_id

        def change(info: KeyInfo) -> None:
            self._check_alias_name(alias_name)
            self._authorize_account(principal, "CreateAlias", self.alias_arn(account, alias_name), context)
            if info.state == PENDING_DELETION:
                raise KMSInvalidStateException(f"{info.arn} is pending deletion.")
            if info.manager == "AWS":
                raise UnsupportedOperationException(f"{info.arn} is an AWS managed key: it cannot take another alias")
            now = self.ctx.clock()
            exists = AlreadyExistsException(f"An alias with the name {self.alias_arn(account, alias_name)} exists")
            try:
                with self.ctx.write(invalidates=True) as conn:
                    taken = conn.execute(
                        sa.select(kms_aliases.c.key_id).where(
                            kms_aliases.c.account_id == account, kms_aliases.c.alias_name == alias_name
                        )
                    ).first()
                    if taken is not None:
                        raise exists
                    conn.execute(
                        sa.insert(kms_aliases).values(
                            account_id=account,
                            alias_name=alias_name,
                            key_id=info.key_id,
                            created_at=now,
                            updated_at=now,
                        )
                    )
            except sa.exc.IntegrityError:  # another node created it between our check and our insert
                raise exists from None

        if target_key_ref.startswith("alias/") or ":alias/" in target_key_ref:
            raise ValidationException("TargetKeyId must be a key id or key ARN, not an alias")
        self._mutate(principal, "CreateAlias", target_key_ref, context, change, {"aliasName": alias_name})

    def update_alias(
        self, principal: Principal, alias_name: str, target_key_ref: str, context: RequestContext | None = None
    ) -> None:
        account = principal.account_id
        if target_key_ref.startswith("alias/") or ":alias/" in target_key_ref:
            raise ValidationException("TargetKeyId must be a key id or key ARN, not an alias")
        if alias_name.startswith("alias/aws/"):
            raise InvalidAliasNameException(f"Alias name {alias_name!r} is reserved for AWS managed keys")
        if not alias_name.startswith("alias/"):  # a key id would resolve as a key below, and no alias row change
            raise ValidationException("AliasName must begin with 'alias/'")
        # the key the alias names now must allow kms:UpdateAlias too
        self._run(self._managed(principal, "UpdateAlias", alias_name, context))

        def change(info: KeyInfo) -> None:
            self._authorize_account(principal, "UpdateAlias", self.alias_arn(account, alias_name), context)
            if info.state == PENDING_DELETION:
                raise KMSInvalidStateException(f"{info.arn} is pending deletion.")
            if info.manager == "AWS":
                raise UnsupportedOperationException(f"{info.arn} is an AWS managed key: an alias cannot point to it")
            with self.ctx.write(invalidates=True) as conn:
                conn.execute(
                    sa.update(kms_aliases)
                    .where(kms_aliases.c.account_id == account, kms_aliases.c.alias_name == alias_name)
                    .values(key_id=info.key_id, updated_at=self.ctx.clock())
                )

        self._mutate(principal, "UpdateAlias", target_key_ref, context, change, {"aliasName": alias_name})

    def delete_alias(self, principal: Principal, alias_name: str, context: RequestContext | None = None) -> None:
        account = principal.account_id
        if alias_name.startswith("alias/aws/"):
            raise InvalidAliasNameException(f"Alias name {alias_name!r} is reserved for AWS managed keys")
        if not alias_name.startswith("alias/"):
            raise ValidationException("AliasName must begin with 'alias/'")

        def change(info: KeyInfo) -> None:
            self._authorize_account(principal, "DeleteAlias", self.alias_arn(account, alias_name), context)
            with self.ctx.write(invalidates=True) as conn:
                conn.execute(
                    sa.delete(kms_aliases).where(
                        kms_aliases.c.account_id == account, kms_aliases.c.alias_name == alias_name
                    )
                )

        self._mutate(principal, "DeleteAlias", alias_name, context, change, {"aliasName": alias_name})

    def update_key_description(
        self, principal: Principal, key_ref: str, description: str, context: RequestContext | None = None
    ) -> None:
        def change(info: KeyInfo) -> None:
            self._not_aws_managed(info, "UpdateKeyDescription")
            if info.state == PENDING_DELETION:
                raise KMSInvalidStateException(f"{info.arn} is pending deletion.")
            self._update(info.key_id, description=description)

        self._mutate(principal, "UpdateKeyDescription", key_ref, context, change)

    def get_key_policy(self, principal: Principal, key_ref: str, context: RequestContext | None = None) -> str:
        return self._run(self._managed(principal, "GetKeyPolicy", key_ref, context)).policy_text

    def put_key_policy(
        self,
        principal: Principal,
        key_ref: str,
        policy: str,
        bypass_policy_lockout_safety_check: bool = False,
        context: RequestContext | None = None,
    ) -> None:
        def change(info: KeyInfo) -> None:
            self._not_aws_managed(info, "PutKeyPolicy")
            check_key_policy(policy)
            if not bypass_policy_lockout_safety_check:
                self._lockout_check(principal, info.account_id, policy, context)
            self._update(info.key_id, policy_text=policy)

        self._mutate(principal, "PutKeyPolicy", key_ref, context, change)

    def tag_resource(
        self,
        principal: Principal,
        key_ref: str,
        tags: dict[str, str],
        context: RequestContext | None = None,
        condition_keys: dict | None = None,
    ) -> None:
        """``condition_keys``: aws:RequestTag/<key> and aws:TagKeys of the request."""

        def change(info: KeyInfo) -> None:
            self._not_aws_managed(info, "TagResource")
            if info.state == PENDING_DELETION:
                raise KMSInvalidStateException(f"{info.arn} is pending deletion.")
            check_tags(tags)
            if not tags:  # the model allows an empty list: nothing to write (an empty INSERT fails)
                return
            with self.ctx.write(invalidates=True) as conn:
                # the key's row locked (PostgreSQL): concurrent taggers of one key take turns, so the tag count is
                # checked against what is there and the delete-then-insert cannot collide with another's insert
                conn.execute(sa.select(kms_keys.c.key_id).where(kms_keys.c.key_id == info.key_id).with_for_update())
                existing = {
                    k
                    for (k,) in conn.execute(
                        sa.select(kms_key_tags.c.key).where(kms_key_tags.c.key_id == info.key_id)
                    ).all()
                }
                if len(existing | set(tags)) > MAX_TAGS:
                    raise LimitExceededException(f"A KMS key can have at most {MAX_TAGS} tags")
                conn.execute(
                    sa.delete(kms_key_tags).where(
                        kms_key_tags.c.key_id == info.key_id, kms_key_tags.c.key.in_(list(tags))
                    )
                )
                conn.execute(
                    sa.insert(kms_key_tags), [{"key_id": info.key_id, "key": k, "value": v} for k, v in tags.items()]
                )

        self._mutate(principal, "TagResource", key_ref, context, change, {"tagKeys": sorted(tags)}, condition_keys)

    def untag_resource(
        self,
        principal: Principal,
        key_ref: str,
        keys: list[str],
        context: RequestContext | None = None,
        condition_keys: dict | None = None,
    ) -> None:
        def change(info: KeyInfo) -> None:
            self._not_aws_managed(info, "UntagResource")
            if info.state == PENDING_DELETION:
                raise KMSInvalidStateException(f"{info.arn} is pending deletion.")
            with self.ctx.write(invalidates=True) as conn:
                conn.execute(
                    sa.delete(kms_key_tags).where(kms_key_tags.c.key_id == info.key_id, kms_key_tags.c.key.in_(keys))
                )

        self._mutate(principal, "UntagResource", key_ref, context, change, {"tagKeys": sorted(keys)}, condition_keys)

    def list_resource_tags(
        self, principal: Principal, key_ref: str, context: RequestContext | None = None
    ) -> dict[str, str]:
        info = self._run(self._managed(principal, "ListResourceTags", key_ref, context))
        with self.ctx.db.read() as conn:
            rows = conn.execute(
                sa.select(kms_key_tags.c.key, kms_key_tags.c.value)
                .where(kms_key_tags.c.key_id == info.key_id)
                .order_by(kms_key_tags.c.key)
            ).all()
        return {k: v for k, v in rows}

    def aliases_of(self, key: KeyInfo) -> list[str]:
        with self.ctx.db.read() as conn:
            return list(
                conn.execute(sa.select(kms_aliases.c.alias_name).where(kms_aliases.c.key_id == key.key_id)).scalars()
            )


def check_tags(tags: dict[str, str]) -> None:
    if len(tags) > MAX_TAGS:
        raise TagException(f"A KMS key can have at most {MAX_TAGS} tags")
    for k, v in tags.items():
        if not k or len(k) > 128 or len(v) > 256:
            raise TagException("Tag keys must be 1-128 characters and values at most 256")
        if k.lower().startswith("aws:"):
            raise TagException(f"Tag key {k!r} uses the reserved prefix 'aws:'")
