"""The IAM directory: users, access keys, roles, inline and managed policies, and STS sessions of each account.

Domain rules live here (names, quotas, conflicts, policy validation, trust evaluation); ``soko.iam.api`` only
translates the AWS Query protocol to these calls. Every write is one ``ctx.write(invalidates=True)`` transaction so
the credential and policy caches of every process see it. IAM names are unique per account without regard to case
("Alice" and "alice" are one user); lookups are case-insensitive and answers carry the stored spelling, which is also
what policies and keys are filed under.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from soko.access import Principal
from soko.errors import AccessDenied, SokoError
from soko.iam import ids
from soko.iam.authorizer import policy_principal
from soko.iam.credentials import CredentialStore
from soko.iam.policy import AuthzRequest, MalformedPolicy, PolicyKind, evaluate, evaluate_trust, parse_policy
from soko.iam.policy.keys import warn_unpopulated
from soko.iam.secrets import MasterKey
from soko.kernel.context import DomainContext
from soko.meta.schema import (
    access_keys,
    accounts,
    iam_roles,
    iam_tags,
    iam_users,
    inline_policies,
    managed_policies,
    policy_attachments,
    sts_sessions,
)

# ---- errors (IAM/STS wire codes) ----------------------------------------------------------------------------------


class IamError(SokoError):
    code = "ServiceFailure"


class NoSuchEntity(IamError):
    code = "NoSuchEntity"


class EntityAlreadyExists(IamError):
    code = "EntityAlreadyExists"


class DeleteConflict(IamError):
    code = "DeleteConflict"


class LimitExceeded(IamError):
    code = "LimitExceeded"


class MalformedPolicyDocument(IamError):
    code = "MalformedPolicyDocument"


class InvalidInput(IamError):
    code = "InvalidInput"


class ValidationError(IamError):
    code = "ValidationError"


# ---- quotas (IAM's defaults) ----------------------------------------------------------------------------------------

ACCESS_KEYS_PER_USER = 2
TAGS_PER_PRINCIPAL = 50
MANAGED_POLICIES_PER_PRINCIPAL = 10
USER_INLINE_POLICY_SIZE = 2048  # aggregate of a user's inline policies
ROLE_INLINE_POLICY_SIZE = 10240  # aggregate of a role's inline policies
MANAGED_POLICY_SIZE = 6144
TRUST_POLICY_SIZE = 2048
MAX_DEFAULT_SESSION = 3600
ROLE_CHAINING_LIMIT = 3600
SESSION_RETENTION = 7 * 86400  # expired sessions are kept a while so their keys answer ExpiredToken
_WHITESPACE = re.compile(r"\s+")
_ROLE_ARN = re.compile(r"arn:aws:iam::(\d{12}):role(/(?:[\x21-\x7e]*/)?)([\w+=,.@-]{1,64})")
_POLICY_ARN = re.compile(r"arn:aws:iam::(\d{12}|aws):policy(/(?:[\x21-\x7e]*/)?)([\w+=,.@-]{1,128})")

PrincipalKind = str  # "user" | "role"


def policy_size(text: str) -> int:
    """IAM counts policy size without whitespace."""
    return len(_WHITESPACE.sub("", text))


@dataclass(frozen=True, slots=True)
class Page:
    items: list[dict[str, Any]]
    marker: str | None  # where the next page starts; None when this is the last one


def _encode_marker(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode()


def _decode_marker(marker: str | None) -> str | None:
    if not marker:
        return None
    try:
        return base64.urlsafe_b64decode(marker.encode()).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ValidationError("Invalid Marker.") from None


def _page(rows: Iterable[Mapping[Any, Any]], sort_key: str, marker: str | None, max_items: int | None) -> Page:
    start = _decode_marker(marker)
    items = sorted((dict(r) for r in rows), key=lambda r: r[sort_key])
    if start is not None:
        items = [r for r in items if r[sort_key] >= start]
    limit = max_items or 100
    if len(items) > limit:
        return Page(items[:limit], _encode_marker(items[limit][sort_key]))
    return Page(items, None)


def parse_role_arn(arn: str) -> tuple[str, str, str]:
    """(account, path, name) of a role ARN."""
    m = _ROLE_ARN.fullmatch(arn)
    if m is None:
        raise ValidationError(f"{arn} is invalid")
    return m.group(1), m.group(2), m.group(3)


def parse_policy_arn(arn: str) -> tuple[str, str, str]:
    """(account or "aws", path, name) of a managed policy ARN."""
    m = _POLICY_ARN.fullmatch(arn)
    if m is None:
        raise InvalidInput(f"ARN {arn} is not valid.")
    return m.group(1), m.group(2), m.group(3)


def _entity_label(kind: PrincipalKind) -> str:
    return "user" if kind == "user" else "role"


class Directory:
    def __init__(self, ctx: DomainContext, master: MasterKey, credentials: CredentialStore) -> None:
        self.ctx = ctx
        self.master = master
        self.credentials = credentials

    # ---- helpers ---------------------------------------------------------------------------------------------------
    def _serialize_name(self, conn: sa.Connection, account_id: str, kind: str, name: str) -> None:
        """On PostgreSQL, serialise writers of one case-insensitive name (SQLite writers are serial already)."""
        self.ctx.db.serialize(conn, f"iam/{account_id}/{kind}/{name.lower()}")

    @staticmethod
    def _one(conn: sa.Connection, table: sa.Table, account_id: str, name: str, lock: bool = False):
        query = sa.select(table).where(table.c.account_id == account_id, sa.func.lower(table.c.name) == name.lower())
        if lock:
            query = query.with_for_update()
        return conn.execute(query).first()

    def _user(self, conn: sa.Connection, account_id: str, name: str, lock: bool = False):
        row = self._one(conn, iam_users, account_id, name, lock)
        if row is None:
            raise NoSuchEntity(f"The user with name {name} cannot be found.")
        return row

    def _role(self, conn: sa.Connection, account_id: str, name: str, lock: bool = False):
        row = self._one(conn, iam_roles, account_id, name, lock)
        if row is None:
            raise NoSuchEntity(f"The role with name {name} cannot be found.")
        return row

    def _principal_row(self, conn: sa.Connection, account_id: str, kind: PrincipalKind, name: str, lock: bool = False):
        return self._user(conn, account_id, name, lock) if kind == "user" else self._role(conn, account_id, name, lock)

    def user_arn(self, account_id: str, name: str) -> str:
        """The ARN of a user for authorization (the stored path when the user exists)."""
        with self.ctx.db.read() as conn:
            row = self._one(conn, iam_users, account_id, name)
        return ids.user_arn(account_id, row.name, row.path) if row else ids.user_arn(account_id, name)

    def role_arn(self, account_id: str, name: str) -> str:
        with self.ctx.db.read() as conn:
            row = self._one(conn, iam_roles, account_id, name)
        return ids.role_arn(account_id, row.name, row.path) if row else ids.role_arn(account_id, name)

    def principal_arn(self, account_id: str, kind: PrincipalKind, name: str) -> str:
        return self.user_arn(account_id, name) if kind == "user" else self.role_arn(account_id, name)

    @staticmethod
    def _validate(document: str, kind: PolicyKind, what: str) -> None:
        try:
            policy = parse_policy(document, kind)
        except MalformedPolicy as exc:
            raise MalformedPolicyDocument(exc.message) from None
        warn_unpopulated(policy, what, document)

    @staticmethod
    def _check_tags(tags: list[dict] | None) -> list[dict]:
        tags = tags or []
        keys = [t["Key"].lower() for t in tags]
        if len(keys) != len(set(keys)):
            raise InvalidInput("Duplicate tag keys found. Please note that Tag keys are case insensitive.")
        for key in keys:
            if key.startswith("aws:"):
                raise InvalidInput("User-defined tag keys can't start with 'aws:'. This prefix is reserved for AWS.")
        if len(tags) > TAGS_PER_PRINCIPAL:
            raise LimitExceeded(f"Cannot exceed quota for TagsPerPrincipal: {TAGS_PER_PRINCIPAL}")
        return tags

    # ---- tags of users and roles ------------------------------------------------------------------------------------
    def _write_tags(
        self, conn: sa.Connection, account_id: str, kind: PrincipalKind, name: str, tags: list[dict]
    ) -> None:
        """Set tags on a user or role; keys are case-insensitive, so a new spelling replaces the old one."""
        for tag in tags:
            conn.execute(
                iam_tags.delete().where(
                    *self._owner(iam_tags, account_id, kind, name), sa.func.lower(iam_tags.c.key) == tag["Key"].lower()
                )
            )
            conn.execute(
                iam_tags.insert().values(
                    account_id=account_id, principal_type=kind, principal_name=name, key=tag["Key"], value=tag["Value"]
                )
            )

    def _tags_of(self, conn: sa.Connection, account_id: str, kind: PrincipalKind, name: str) -> list[dict]:
        rows = conn.execute(
            sa.select(iam_tags.c.key, iam_tags.c.value).where(*self._owner(iam_tags, account_id, kind, name))
        )
        return [{"Key": k, "Value": v} for k, v in sorted(rows)]  # sorted here: collations differ between databases

    def tag_principal(self, account_id: str, kind: PrincipalKind, name: str, tags: list[dict]) -> None:
        tags = self._check_tags(tags)
        with self.ctx.write(invalidates=True) as conn:
            owner = self._principal_row(conn, account_id, kind, name, lock=True).name
            keys = {t["Key"].lower() for t in self._tags_of(conn, account_id, kind, owner)}
            if len(keys | {t["Key"].lower() for t in tags}) > TAGS_PER_PRINCIPAL:
                raise LimitExceeded(f"Cannot exceed quota for TagsPerPrincipal: {TAGS_PER_PRINCIPAL}")
            self._write_tags(conn, account_id, kind, owner, tags)

    def untag_principal(self, account_id: str, kind: PrincipalKind, name: str, keys: list[str]) -> None:
        with self.ctx.write(invalidates=True) as conn:
            owner = self._principal_row(conn, account_id, kind, name, lock=True).name
            if keys:
                conn.execute(
                    iam_tags.delete().where(
                        *self._owner(iam_tags, account_id, kind, owner),
                        sa.func.lower(iam_tags.c.key).in_([k.lower() for k in keys]),
                    )
                )

    def list_tags(
        self, account_id: str, kind: PrincipalKind, name: str, marker: str | None, max_items: int | None
    ) -> Page:
        with self.ctx.db.read() as conn:
            owner = self._principal_row(conn, account_id, kind, name).name
            tags = self._tags_of(conn, account_id, kind, owner)
        return _page(tags, "Key", marker, max_items)

    # ---- accounts --------------------------------------------------------------------------------------------------
    def create_account(self, account_id: str) -> dict[str, str]:
        key_id, secret = self.credentials.create_account(account_id)
        return {"AccountId": account_id, "AccessKeyId": key_id, "SecretAccessKey": secret}

    def _ensure_account(self, conn: sa.Connection, account_id: str) -> None:
        conn.execute(self.ctx.db.insert_ignore(accounts).values(id=account_id, created_at=self.ctx.clock()))

    def account_created_at(self, account_id: str) -> float:
        with self.ctx.db.read() as conn:
            at = conn.execute(sa.select(accounts.c.created_at).where(accounts.c.id == account_id)).scalar()
        return at if at is not None else self.ctx.clock()

    # ---- users -----------------------------------------------------------------------------------------------------
    def create_user(self, account_id: str, name: str, path: str = "/", tags: list[dict] | None = None) -> dict:
        tags = self._check_tags(tags)
        row = {
            "account_id": account_id,
            "name": name,
            "user_id": ids.unique_id("AIDA"),
            "path": path or "/",
            "created_at": self.ctx.clock(),
        }
        try:
            with self.ctx.write(invalidates=True) as conn:
                self._ensure_account(conn, account_id)
                self._serialize_name(conn, account_id, "user", name)
                if self._one(conn, iam_users, account_id, name) is not None:
                    raise EntityAlreadyExists(f"User with name {name} already exists.")
                conn.execute(iam_users.insert().values(**row))
                self._write_tags(conn, account_id, "user", name, tags)
        except sa.exc.IntegrityError:
            raise EntityAlreadyExists(f"User with name {name} already exists.") from None
        return {**row, "tags": tags}

    def get_user(self, account_id: str, name: str) -> dict:
        with self.ctx.db.read() as conn:
            row = dict(self._user(conn, account_id, name)._mapping)
            row["tags"] = self._tags_of(conn, account_id, "user", row["name"])
        return row

    def list_users(self, account_id: str, path_prefix: str | None, marker: str | None, max_items: int | None) -> Page:
        with self.ctx.db.read() as conn:
            rows = conn.execute(sa.select(iam_users).where(iam_users.c.account_id == account_id)).mappings().all()
        rows = [r for r in rows if r["path"].startswith(path_prefix or "/")]
        return _page(rows, "name", marker, max_items)

    def delete_user(self, account_id: str, name: str) -> None:
        with self.ctx.write(invalidates=True) as conn:
            user = self._user(conn, account_id, name, lock=True)
            where_keys = sa.and_(access_keys.c.account_id == account_id, access_keys.c.user_name == user.name)
            if conn.execute(sa.select(sa.func.count()).select_from(access_keys).where(where_keys)).scalar():
                raise DeleteConflict("Cannot delete entity, must delete access keys first.")
            if conn.execute(
                sa.select(sa.func.count())
                .select_from(inline_policies)
                .where(*self._owner(inline_policies, account_id, "user", user.name))
            ).scalar():
                raise DeleteConflict("Cannot delete entity, must delete policies first.")
            if conn.execute(
                sa.select(sa.func.count())
                .select_from(policy_attachments)
                .where(*self._owner(policy_attachments, account_id, "user", user.name))
            ).scalar():
                raise DeleteConflict("Cannot delete entity, must detach all policies first.")
            conn.execute(iam_users.delete().where(iam_users.c.account_id == account_id, iam_users.c.name == user.name))
            conn.execute(iam_tags.delete().where(*self._owner(iam_tags, account_id, "user", user.name)))

    @staticmethod
    def _owner(table: sa.Table, account_id: str, kind: PrincipalKind, name: str) -> list:
        return [table.c.account_id == account_id, table.c.principal_type == kind, table.c.principal_name == name]

    # ---- access keys -----------------------------------------------------------------------------------------------
    def create_access_key(self, account_id: str, user_name: str | None) -> tuple[dict, str]:
        """A new key for a user, or for the account root when ``user_name`` is None; returns (row, secret)."""
        key_id, secret = ids.access_key_id(), ids.secret_access_key()
        with self.ctx.write(invalidates=True) as conn:
            if user_name is not None:
                user_name = self._user(conn, account_id, user_name, lock=True).name
            else:
                self._serialize_name(conn, account_id, "root-keys", "")
            count = conn.execute(
                sa.select(sa.func.count())
                .select_from(access_keys)
                .where(access_keys.c.account_id == account_id, self._key_owner(user_name))
            ).scalar_one()
            if count >= ACCESS_KEYS_PER_USER:
                raise LimitExceeded(f"Cannot exceed quota for AccessKeysPerUser: {ACCESS_KEYS_PER_USER}")
            row = {
                "access_key_id": key_id,
                "account_id": account_id,
                "user_name": user_name,
                "status": "Active",
                "created_at": self.ctx.clock(),
            }
            conn.execute(access_keys.insert().values(**row, secret_encrypted=self.master.encrypt(secret, key_id)))
        return row, secret

    @staticmethod
    def _key_owner(user_name: str | None):
        return access_keys.c.user_name.is_(None) if user_name is None else access_keys.c.user_name == user_name

    def list_access_keys(
        self, account_id: str, user_name: str | None, marker: str | None = None, max_items: int | None = None
    ) -> Page:
        with self.ctx.db.read() as conn:
            if user_name is not None:
                user_name = self._user(conn, account_id, user_name).name
            rows = (
                conn.execute(
                    sa.select(
                        access_keys.c.access_key_id,
                        access_keys.c.user_name,
                        access_keys.c.status,
                        access_keys.c.created_at,
                    ).where(access_keys.c.account_id == account_id, self._key_owner(user_name))
                )
                .mappings()
                .all()
            )
        return _page(rows, "access_key_id", marker, max_items)

    def _key(self, conn: sa.Connection, account_id: str, user_name: str | None, key_id: str):
        if user_name is not None:
            user_name = self._user(conn, account_id, user_name, lock=True).name
        row = conn.execute(
            sa.select(access_keys).where(
                access_keys.c.access_key_id == key_id,
                access_keys.c.account_id == account_id,
                self._key_owner(user_name),
            )
        ).first()
        if row is None:
            raise NoSuchEntity(f"The Access Key with id {key_id} cannot be found.")
        return row

    def update_access_key(self, account_id: str, user_name: str | None, key_id: str, status: str) -> None:
        with self.ctx.write(invalidates=True) as conn:
            self._key(conn, account_id, user_name, key_id)
            conn.execute(access_keys.update().where(access_keys.c.access_key_id == key_id).values(status=status))

    def delete_access_key(self, account_id: str, user_name: str | None, key_id: str) -> None:
        with self.ctx.write(invalidates=True) as conn:
            self._key(conn, account_id, user_name, key_id)
            conn.execute(access_keys.delete().where(access_keys.c.access_key_id == key_id))

    # ---- inline policies -------------------------------------------------------------------------------------------
    def put_inline_policy(
        self, account_id: str, kind: PrincipalKind, principal: str, policy_name: str, document: str
    ) -> None:
        limit = USER_INLINE_POLICY_SIZE if kind == "user" else ROLE_INLINE_POLICY_SIZE
        size = policy_size(document)
        if size > limit:
            raise LimitExceeded(f"Maximum policy size of {limit} bytes exceeded for {_entity_label(kind)} {principal}")
        self._validate(document, PolicyKind.IDENTITY, f"inline policy {policy_name} of {kind} {account_id}/{principal}")
        with self.ctx.write(invalidates=True) as conn:
            owner = self._principal_row(conn, account_id, kind, principal, lock=True).name
            others = conn.execute(
                sa.select(inline_policies.c.policy_name, inline_policies.c.document).where(
                    *self._owner(inline_policies, account_id, kind, owner)
                )
            ).all()
            existing = next((r.policy_name for r in others if r.policy_name.lower() == policy_name.lower()), None)
            total = size + sum(policy_size(r.document) for r in others if r.policy_name != existing)
            if total > limit:
                raise LimitExceeded(f"Maximum policy size of {limit} bytes exceeded for {_entity_label(kind)} {owner}")
            if existing is not None:
                conn.execute(
                    inline_policies.update()
                    .where(*self._owner(inline_policies, account_id, kind, owner))
                    .where(inline_policies.c.policy_name == existing)
                    .values(document=document)
                )
            else:
                conn.execute(
                    inline_policies.insert().values(
                        account_id=account_id,
                        principal_type=kind,
                        principal_name=owner,
                        policy_name=policy_name,
                        document=document,
                    )
                )

    def _inline(self, conn: sa.Connection, account_id: str, kind: PrincipalKind, owner: str, policy_name: str):
        row = conn.execute(
            sa.select(inline_policies).where(
                *self._owner(inline_policies, account_id, kind, owner),
                sa.func.lower(inline_policies.c.policy_name) == policy_name.lower(),
            )
        ).first()
        if row is None:
            raise NoSuchEntity(f"The {_entity_label(kind)} policy with name {policy_name} cannot be found.")
        return row

    def get_inline_policy(self, account_id: str, kind: PrincipalKind, principal: str, policy_name: str) -> dict:
        with self.ctx.db.read() as conn:
            owner = self._principal_row(conn, account_id, kind, principal).name
            row = self._inline(conn, account_id, kind, owner, policy_name)
        return {"principal_name": owner, "policy_name": row.policy_name, "document": row.document}

    def list_inline_policies(
        self, account_id: str, kind: PrincipalKind, principal: str, marker: str | None, max_items: int | None
    ) -> Page:
        with self.ctx.db.read() as conn:
            owner = self._principal_row(conn, account_id, kind, principal).name
            rows = (
                conn.execute(
                    sa.select(inline_policies.c.policy_name).where(
                        *self._owner(inline_policies, account_id, kind, owner)
                    )
                )
                .mappings()
                .all()
            )
        return _page(rows, "policy_name", marker, max_items)

    def delete_inline_policy(self, account_id: str, kind: PrincipalKind, principal: str, policy_name: str) -> None:
        with self.ctx.write(invalidates=True) as conn:
            owner = self._principal_row(conn, account_id, kind, principal, lock=True).name
            row = self._inline(conn, account_id, kind, owner, policy_name)
            conn.execute(
                inline_policies.delete().where(
                    *self._owner(inline_policies, account_id, kind, owner),
                    inline_policies.c.policy_name == row.policy_name,
                )
            )

    # ---- managed policies ------------------------------------------------------------------------------------------
    def create_policy(
        self, account_id: str, name: str, path: str, document: str, description: str | None, tags: list[dict] | None
    ) -> dict:
        tags = self._check_tags(tags)
        if policy_size(document) > MANAGED_POLICY_SIZE:
            raise LimitExceeded(f"Cannot exceed quota for PolicySize: {MANAGED_POLICY_SIZE}")
        self._validate(document, PolicyKind.IDENTITY, f"managed policy {account_id}/{name}")
        now = self.ctx.clock()
        path = path or "/"
        row = {
            "arn": ids.policy_arn(account_id, name, path),
            "account_id": account_id,
            "name": name,
            "policy_id": ids.unique_id("ANPA"),
            "path": path,
            "description": description,
            "document": document,
            "created_at": now,
            "updated_at": now,
        }
        exists = EntityAlreadyExists(f"A policy called {name} already exists. Duplicate names are not allowed.")
        try:
            with self.ctx.write(invalidates=True) as conn:
                self._ensure_account(conn, account_id)
                self._serialize_name(conn, account_id, "policy", name)
                if self._one(conn, managed_policies, account_id, name) is not None:
                    raise exists
                conn.execute(managed_policies.insert().values(**row))
        except sa.exc.IntegrityError:
            raise exists from None
        return {**row, "attachment_count": 0, "tags": tags}

    def _policy(self, conn: sa.Connection, arn: str, lock: bool = False):
        query = sa.select(managed_policies).where(managed_policies.c.arn == arn)
        row = conn.execute(query.with_for_update() if lock else query).first()
        if row is None:
            raise NoSuchEntity(f"Policy {arn} does not exist or is not attachable.")
        return row

    @staticmethod
    def _attachment_counts(conn: sa.Connection, arns: list[str]) -> dict[str, int]:
        if not arns:
            return {}
        rows = conn.execute(
            sa.select(policy_attachments.c.policy_arn, sa.func.count())
            .where(policy_attachments.c.policy_arn.in_(arns))
            .group_by(policy_attachments.c.policy_arn)
        ).all()
        return {arn: count for arn, count in rows}

    def get_policy(self, arn: str) -> dict:
        parse_policy_arn(arn)
        with self.ctx.db.read() as conn:
            row = dict(self._policy(conn, arn)._mapping)
            row["attachment_count"] = self._attachment_counts(conn, [arn]).get(arn, 0)
        return row

    def delete_policy(self, arn: str) -> None:
        parse_policy_arn(arn)
        try:
            with self.ctx.write(invalidates=True) as conn:
                self._policy(conn, arn, lock=True)
                if self._attachment_counts(conn, [arn]):
                    raise DeleteConflict("Cannot delete a policy attached to entities.")
                conn.execute(managed_policies.delete().where(managed_policies.c.arn == arn))
        except sa.exc.IntegrityError:
            raise DeleteConflict("Cannot delete a policy attached to entities.") from None

    def list_policies(
        self,
        account_id: str,
        scope: str,
        only_attached: bool,
        path_prefix: str | None,
        marker: str | None,
        max_items: int | None,
    ) -> Page:
        if scope == "AWS":  # no AWS managed policies here
            return Page([], None)
        with self.ctx.db.read() as conn:
            rows = [
                dict(r)
                for r in conn.execute(sa.select(managed_policies).where(managed_policies.c.account_id == account_id))
                .mappings()
                .all()
            ]
            counts = self._attachment_counts(conn, [r["arn"] for r in rows])
        for r in rows:
            r["attachment_count"] = counts.get(r["arn"], 0)
        rows = [
            r for r in rows if r["path"].startswith(path_prefix or "/") and (not only_attached or r["attachment_count"])
        ]
        return _page(rows, "name", marker, max_items)

    def attach_policy(self, account_id: str, kind: PrincipalKind, principal: str, arn: str) -> None:
        policy_account, _, _ = parse_policy_arn(arn)
        try:
            with self.ctx.write(invalidates=True) as conn:
                owner = self._principal_row(conn, account_id, kind, principal, lock=True).name
                if policy_account != account_id:
                    raise NoSuchEntity(f"Policy {arn} does not exist or is not attachable.")
                self._policy(conn, arn, lock=True)
                attached = (
                    conn.execute(
                        sa.select(policy_attachments.c.policy_arn).where(
                            *self._owner(policy_attachments, account_id, kind, owner)
                        )
                    )
                    .scalars()
                    .all()
                )
                if arn in attached:
                    return
                if len(attached) >= MANAGED_POLICIES_PER_PRINCIPAL:
                    quota = "PoliciesPerUser" if kind == "user" else "PoliciesPerRole"
                    raise LimitExceeded(f"Cannot exceed quota for {quota}: {MANAGED_POLICIES_PER_PRINCIPAL}")
                conn.execute(
                    policy_attachments.insert().values(
                        account_id=account_id, principal_type=kind, principal_name=owner, policy_arn=arn
                    )
                )
        except sa.exc.IntegrityError:  # the policy was deleted concurrently, or a concurrent identical attach
            with self.ctx.db.read() as conn:
                self._policy(conn, arn)

    def detach_policy(self, account_id: str, kind: PrincipalKind, principal: str, arn: str) -> None:
        parse_policy_arn(arn)
        with self.ctx.write(invalidates=True) as conn:
            owner = self._principal_row(conn, account_id, kind, principal, lock=True).name
            result = conn.execute(
                policy_attachments.delete().where(
                    *self._owner(policy_attachments, account_id, kind, owner), policy_attachments.c.policy_arn == arn
                )
            )
            if result.rowcount == 0:
                raise NoSuchEntity(f"Policy {arn} was not found.")

    def list_attached(
        self,
        account_id: str,
        kind: PrincipalKind,
        principal: str,
        path_prefix: str | None,
        marker: str | None,
        max_items: int | None,
    ) -> Page:
        with self.ctx.db.read() as conn:
            owner = self._principal_row(conn, account_id, kind, principal).name
            rows = (
                conn.execute(
                    sa.select(managed_policies.c.arn, managed_policies.c.name, managed_policies.c.path)
                    .join(policy_attachments, policy_attachments.c.policy_arn == managed_policies.c.arn)
                    .where(*self._owner(policy_attachments, account_id, kind, owner))
                )
                .mappings()
                .all()
            )
        rows = [r for r in rows if r["path"].startswith(path_prefix or "/")]
        return _page(rows, "name", marker, max_items)

    # ---- roles -----------------------------------------------------------------------------------------------------
    def create_role(
        self,
        account_id: str,
        name: str,
        path: str,
        trust_policy: str,
        description: str | None,
        max_session_duration: int | None,
        tags: list[dict] | None,
    ) -> dict:
        tags = self._check_tags(tags)
        if policy_size(trust_policy) > TRUST_POLICY_SIZE:
            raise LimitExceeded(f"Cannot exceed quota for ACLSizePerRole: {TRUST_POLICY_SIZE}")
        self._validate(trust_policy, PolicyKind.TRUST, f"the trust policy of role {account_id}/{name}")
        row = {
            "account_id": account_id,
            "name": name,
            "role_id": ids.unique_id("AROA"),
            "path": path or "/",
            "trust_policy": trust_policy,
            "description": description,
            "max_session_duration": max_session_duration or MAX_DEFAULT_SESSION,
            "created_at": self.ctx.clock(),
        }
        exists = EntityAlreadyExists(f"Role with name {name} already exists.")
        try:
            with self.ctx.write(invalidates=True) as conn:
                self._ensure_account(conn, account_id)
                self._serialize_name(conn, account_id, "role", name)
                if self._one(conn, iam_roles, account_id, name) is not None:
                    raise exists
                conn.execute(iam_roles.insert().values(**row))
                self._write_tags(conn, account_id, "role", name, tags)
        except sa.exc.IntegrityError:
            raise exists from None
        return {**row, "tags": tags}

    def get_role(self, account_id: str, name: str) -> dict:
        with self.ctx.db.read() as conn:
            row = dict(self._role(conn, account_id, name)._mapping)
            row["tags"] = self._tags_of(conn, account_id, "role", row["name"])
        return row

    def list_roles(self, account_id: str, path_prefix: str | None, marker: str | None, max_items: int | None) -> Page:
        with self.ctx.db.read() as conn:
            rows = conn.execute(sa.select(iam_roles).where(iam_roles.c.account_id == account_id)).mappings().all()
        rows = [r for r in rows if r["path"].startswith(path_prefix or "/")]
        return _page(rows, "name", marker, max_items)

    def delete_role(self, account_id: str, name: str) -> None:
        with self.ctx.write(invalidates=True) as conn:
            role = self._role(conn, account_id, name, lock=True)
            if conn.execute(
                sa.select(sa.func.count())
                .select_from(policy_attachments)
                .where(*self._owner(policy_attachments, account_id, "role", role.name))
            ).scalar():
                raise DeleteConflict("Cannot delete entity, must detach all policies first.")
            if conn.execute(
                sa.select(sa.func.count())
                .select_from(inline_policies)
                .where(*self._owner(inline_policies, account_id, "role", role.name))
            ).scalar():
                raise DeleteConflict("Cannot delete entity, must delete policies first.")
            conn.execute(iam_roles.delete().where(iam_roles.c.account_id == account_id, iam_roles.c.name == role.name))
            conn.execute(iam_tags.delete().where(*self._owner(iam_tags, account_id, "role", role.name)))
            # Its sessions stop resolving (role id check); drop them so the table does not keep dead rows.
            conn.execute(sts_sessions.delete().where(sts_sessions.c.role_id == role.role_id))

    # ---- STS -------------------------------------------------------------------------------------------------------
    def assume_role(
        self,
        caller: Principal,
        role_arn: str,
        session_name: str,
        duration: int | None,
        condition_keys: Mapping[str, Any],
    ) -> dict:
        """Temporary credentials for ``role_arn``, if its trust policy (and, when AWS requires it, the caller's
        identity policies) allow ``caller`` to assume it. Raises AccessDenied (never revealing whether the role
        exists), ValidationError for durations out of range."""
        denied = AccessDenied(
            f"User: {caller.arn} is not authorized to perform: sts:AssumeRole on resource: {role_arn}"
        )
        if caller.type == "Account":
            raise AccessDenied("Roles may not be assumed by root accounts.")
        try:
            role_account, path, name = parse_role_arn(role_arn)
        except ValidationError:
            raise denied from None
        with self.ctx.db.read() as conn:
            role = conn.execute(
                sa.select(iam_roles).where(iam_roles.c.account_id == role_account, iam_roles.c.name == name)
            ).first()
        if role is None or role.path != path:
            raise denied
        principal = policy_principal(caller)
        try:
            trust = parse_policy(role.trust_policy, PolicyKind.TRUST)
        except MalformedPolicy:
            raise denied from None
        decision = evaluate_trust(trust, principal, "sts:AssumeRole", condition_keys)
        if not decision.allowed:
            raise denied
        if decision.delegated or caller.account_id != role_account:
            identity = []
            for text in self.credentials.identity_policies(caller):
                try:
                    identity.append(parse_policy(text, PolicyKind.IDENTITY))
                except MalformedPolicy:
                    continue
            request = AuthzRequest(principal, "sts:AssumeRole", role_arn, None, condition_keys)
            if not evaluate(request, identity_policies=identity).allowed:
                raise denied

        limit = role.max_session_duration
        if caller.type == "AssumedRole":
            limit = ROLE_CHAINING_LIMIT
            if duration is not None and duration > limit:
                raise ValidationError(
                    "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining."
                )
        if duration is not None and duration > limit:
            raise ValidationError("The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")
        seconds = duration or min(MAX_DEFAULT_SESSION, limit)

        key_id, secret, token = ids.access_key_id(temporary=True), ids.secret_access_key(), ids.session_token()
        now = self.ctx.clock()
        expires = float(int(now + seconds))
        with self.ctx.write(invalidates=True) as conn:
            conn.execute(sts_sessions.delete().where(sts_sessions.c.expires_at < now - SESSION_RETENTION))
            conn.execute(
                sts_sessions.insert().values(
                    access_key_id=key_id,
                    secret_encrypted=self.master.encrypt(secret, key_id),
                    session_token_sha256=hashlib.sha256(token.encode()).hexdigest(),
                    account_id=role_account,
                    role_name=role.name,
                    role_id=role.role_id,
                    session_name=session_name,
                    source_arn=caller.arn,
                    expires_at=expires,
                    created_at=now,
                )
            )
        return {
            "access_key_id": key_id,
            "secret_access_key": secret,
            "session_token": token,
            "expires_at": expires,
            "assumed_role_id": f"{role.role_id}:{session_name}",
            "arn": ids.assumed_role_arn(role_account, role.name, session_name),
        }
