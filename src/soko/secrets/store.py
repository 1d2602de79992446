"""Secrets (the Secrets Manager subset Terraform and the AWS CLI use for pull-through cache credentials): each value
encrypted at rest with the master key (AES-256-GCM, the secret's ARN bound as associated data, so a row's value
cannot be moved to another secret), two versions kept (AWSCURRENT and AWSPREVIOUS), deletion scheduled with a
recovery window or forced. Values never reach a log or an error message.
"""

from __future__ import annotations

import base64
import json
import re
import secrets as random_tokens
import uuid
from dataclasses import dataclass, field

import sqlalchemy as sa

from soko.errors import SokoError
from soko.iam.secrets import MasterKey
from soko.kernel.context import DomainContext
from soko.meta.schema import secrets as t

NAME = re.compile(r"[A-Za-z0-9/_+=.@-]{1,512}")
MAX_VALUE = 65536
CURRENT, PREVIOUS = "AWSCURRENT", "AWSPREVIOUS"


class SecretNotFound(SokoError):
    """ResourceNotFoundException."""


class SecretExists(SokoError):
    """ResourceExistsException."""


class SecretInvalidRequest(SokoError):
    """InvalidRequestException (e.g. the secret is scheduled for deletion)."""


class SecretInvalidParameter(SokoError):
    """InvalidParameterException."""


class SecretDecryptionFailure(SokoError):
    """DecryptionFailure: the stored value cannot be decrypted with this master key."""


@dataclass(frozen=True)
class Secret:
    arn: str
    account_id: str
    name: str
    description: str | None
    version_id: str
    previous_version_id: str | None
    created_at: float
    updated_at: float
    deleted_at: float | None
    value: bytes = field(repr=False)
    previous_value: bytes | None = field(repr=False)

    def versions(self) -> dict[str, list[str]]:
        out = {self.version_id: [CURRENT]}
        if self.previous_version_id:
            out[self.previous_version_id] = [PREVIOUS]
        return out


@dataclass(frozen=True)
class SecretValue:
    string: str | None = field(repr=False)
    binary: bytes | None = field(repr=False)


def _from_row(row: sa.Row) -> Secret:
    return Secret(
        arn=row.arn,
        account_id=row.account_id,
        name=row.name,
        description=row.description,
        version_id=row.version_id,
        previous_version_id=row.previous_version_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        deleted_at=row.deleted_at,
        value=row.value,
        previous_value=row.previous_value,
    )


def _not_found() -> SecretNotFound:
    return SecretNotFound("Secrets Manager can't find the specified secret.")


class SecretStore:
    def __init__(self, ctx: DomainContext, master: MasterKey) -> None:
        self.ctx = ctx
        self.master = master

    def arn_prefix(self, account_id: str) -> str:
        return f"arn:aws:secretsmanager:{self.ctx.settings.region}:{account_id}:secret:"

    # --- values ---------------------------------------------------------------------------------------------------

    def _seal(self, arn: str, value: SecretValue) -> bytes:
        if (value.string is None) == (value.binary is None):
            raise SecretInvalidParameter("You must provide either SecretString or SecretBinary, but not both.")
        raw = value.string.encode() if value.string is not None else value.binary or b""
        if len(raw) > MAX_VALUE:
            raise SecretInvalidParameter(f"The secret value is over the {MAX_VALUE}-byte limit.")
        document = (
            {"s": value.string} if value.string is not None else {"b": base64.b64encode(value.binary or b"").decode()}
        )
        return self.master.encrypt(json.dumps(document), arn)

    def _open(self, arn: str, sealed: bytes) -> SecretValue:
        try:
            document = json.loads(self.master.decrypt(sealed, arn))
        except Exception:
            raise SecretDecryptionFailure(
                "Secrets Manager can't decrypt the protected secret text using the provided KMS key "
                "(this Soko's master key is not the one the secret was stored with)."
            ) from None
        if "s" in document:
            return SecretValue(document["s"], None)
        return SecretValue(None, base64.b64decode(document["b"]))

    # --- lookups --------------------------------------------------------------------------------------------------

    def _find(self, conn: sa.Connection, account_id: str, secret_id: str, *, with_deleted: bool = True) -> Secret:
        prefix = self.arn_prefix(account_id)
        if secret_id.startswith("arn:"):
            if not secret_id.startswith(prefix):
                raise _not_found()
            rest = secret_id[len(prefix) :]
            row = conn.execute(sa.select(t).where(t.c.arn == secret_id)).first()
            if row is None:  # a partial ARN: the name without the random suffix
                row = conn.execute(
                    sa.select(t).where(t.c.account_id == account_id, t.c.name == rest).order_by(t.c.created_at.desc())
                ).first()
        else:
            row = conn.execute(
                sa.select(t).where(t.c.account_id == account_id, t.c.name == secret_id).order_by(t.c.created_at.desc())
            ).first()
        if row is None:
            raise _not_found()
        return _from_row(row)

    def describe(self, account_id: str, secret_id: str) -> Secret:
        with self.ctx.db.read() as conn:
            return self._find(conn, account_id, secret_id)

    def value(
        self, account_id: str, secret_id: str, version_id: str | None = None, stage: str | None = None
    ) -> tuple[Secret, str, SecretValue]:
        """(secret, version id, value) of AWSCURRENT, or of the version/stage asked for."""
        with self.ctx.db.read() as conn:
            secret = self._find(conn, account_id, secret_id)
        if secret.deleted_at is not None:
            raise SecretInvalidRequest(
                "You can't perform this operation on the secret because it was marked for deletion."
            )
        by_stage = {CURRENT: secret.version_id, PREVIOUS: secret.previous_version_id}
        wanted = version_id or by_stage.get(stage or CURRENT)
        if stage and version_id and by_stage.get(stage) != version_id:
            raise SecretNotFound(f"Secrets Manager can't find the specified secret value for staging label: {stage}")
        if wanted == secret.version_id:
            return secret, secret.version_id, self._open(secret.arn, secret.value)
        if wanted and wanted == secret.previous_version_id and secret.previous_value is not None:
            return secret, wanted, self._open(secret.arn, secret.previous_value)
        raise SecretNotFound("Secrets Manager can't find the specified secret value for VersionId or VersionStage")

    def page(
        self, account_id: str, *, after: str | None, limit: int, include_deleted: bool
    ) -> tuple[list[Secret], bool]:
        with self.ctx.db.read() as conn:
            query = sa.select(t).where(t.c.account_id == account_id)
            if not include_deleted:
                query = query.where(t.c.deleted_at.is_(None))
            if after:
                query = query.where(t.c.arn > after)
            rows = conn.execute(query.order_by(t.c.arn).limit(limit + 1)).all()
        return [_from_row(r) for r in rows[:limit]], len(rows) > limit

    # --- writes ---------------------------------------------------------------------------------------------------

    def create(
        self, account_id: str, name: str, value: SecretValue | None, description: str | None, token: str | None
    ) -> Secret:
        if not NAME.fullmatch(name):
            raise SecretInvalidParameter(
                "Invalid name. Must be a valid name containing alphanumeric characters, or any of the following: "
                "-/_+=.@!"
            )
        if value is None:
            raise SecretInvalidParameter(
                "A secret without a value cannot be carried out by this Soko: give SecretString or SecretBinary."
            )
        now = self.ctx.clock()
        suffix = "".join(
            random_tokens.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") for _ in range(6)
        )
        arn = f"{self.arn_prefix(account_id)}{name}-{suffix}"
        version = token or str(uuid.uuid4())
        sealed = self._seal(arn, value)
        try:
            with self.ctx.write(invalidates=True) as conn:
                retried = self._taken(conn, account_id, name, token)
                if retried is not None:
                    return retried
                conn.execute(
                    sa.insert(t).values(
                        arn=arn,
                        account_id=account_id,
                        name=name,
                        description=description,
                        version_id=version,
                        value=sealed,
                        created_at=now,
                        updated_at=now,
                    )
                )
                return self._find(conn, account_id, arn)
        except sa.exc.IntegrityError:  # a concurrent create of the name committed first (unique index, 0031)
            with self.ctx.db.read() as conn:
                retried = self._taken(conn, account_id, name, token)
            if retried is None:  # (and was force-deleted since)
                raise SecretExists(f"The operation failed because the secret {name} already exists.") from None
            return retried

    @staticmethod
    def _taken(conn: sa.Connection, account_id: str, name: str, token: str | None) -> Secret | None:
        """None when the name is free; the secret when this is a retry of the request that created it (same
        ClientRequestToken); else raises what CreateSecret answers."""
        existing = conn.execute(sa.select(t).where(t.c.account_id == account_id, t.c.name == name)).first()
        if existing is None:
            return None
        if existing.deleted_at is not None:
            raise SecretInvalidRequest(
                "You can't create this secret because a secret with this name is already scheduled for deletion."
            )
        if token and existing.version_id == token:
            return _from_row(existing)  # the SDK's retry of the same request
        raise SecretExists(f"The operation failed because the secret {name} already exists.")

    def put_value(self, account_id: str, secret_id: str, value: SecretValue, token: str | None) -> Secret:
        with self.ctx.write(invalidates=True) as conn:
            secret = self._find(conn, account_id, secret_id)
            if secret.deleted_at is not None:
                raise SecretInvalidRequest(
                    "You can't perform this operation on the secret because it was marked for deletion."
                )
            version = token or str(uuid.uuid4())
            if version == secret.version_id:
                return secret  # the same request again
            conn.execute(
                sa.update(t)
                .where(t.c.arn == secret.arn)
                .values(
                    version_id=version,
                    value=self._seal(secret.arn, value),
                    previous_version_id=secret.version_id,
                    previous_value=secret.value,
                    updated_at=self.ctx.clock(),
                )
            )
            return self._find(conn, account_id, secret.arn)

    def delete(
        self, account_id: str, secret_id: str, *, recovery_days: int | None, force: bool
    ) -> tuple[Secret, float]:
        if force and recovery_days is not None:
            raise SecretInvalidParameter(
                "You can't use ForceDeleteWithoutRecovery in conjunction with RecoveryWindowInDays."
            )
        if recovery_days is not None and not 7 <= recovery_days <= 30:
            raise SecretInvalidParameter("RecoveryWindowInDays must be between 7 and 30 days.")
        with self.ctx.write(invalidates=True) as conn:
            secret = self._find(conn, account_id, secret_id)
            now = self.ctx.clock()
            if force:
                conn.execute(sa.delete(t).where(t.c.arn == secret.arn))
                return secret, now
            if secret.deleted_at is not None:
                raise SecretInvalidRequest("You can't delete a secret that is already scheduled for deletion.")
            when = now + 86400.0 * (recovery_days or 30)
            conn.execute(sa.update(t).where(t.c.arn == secret.arn).values(deleted_at=when))
            return secret, when

    def restore(self, account_id: str, secret_id: str) -> Secret:
        with self.ctx.write(invalidates=True) as conn:
            secret = self._find(conn, account_id, secret_id)
            conn.execute(sa.update(t).where(t.c.arn == secret.arn).values(deleted_at=None))
            return secret

    def purge(self) -> int:
        """Forget secrets whose recovery window has passed (the hourly ``secrets_purge`` job, ``soko.app``)."""
        with self.ctx.write(invalidates=True) as conn:
            return conn.execute(sa.delete(t).where(t.c.deleted_at < self.ctx.clock())).rowcount
