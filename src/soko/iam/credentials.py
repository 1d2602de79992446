"""Resolving credentials to principals: access keys (root and users), STS sessions, and identity policies.

Lookups run on every authenticated request, so they are cached per process and invalidated through the metadata
generation (every IAM write bumps it; see ``soko.meta.changes``).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from soko.access import Principal
from soko.aws.sigv4 import Credentials
from soko.iam import ids
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


@dataclass(frozen=True, slots=True)
class Resolved:
    secret_access_key: str
    principal: Principal
    session_token_sha256: str | None = None
    expires_at: float | None = None
    secret_set_at: float | None = None  # ECR tokens issued before this (an older secret of the same key) are void

    def credentials(self, access_key_id: str, presented_token: str | None) -> Credentials:
        """Credentials for SigV4 verification; the session token is checked against its stored hash."""
        token = None
        if self.session_token_sha256 is not None:
            presented_hash = hashlib.sha256((presented_token or "").encode()).hexdigest()
            token = presented_token if hmac.compare_digest(presented_hash, self.session_token_sha256) else "\x00"
        expires = datetime.fromtimestamp(self.expires_at, UTC) if self.expires_at is not None else None
        return Credentials(access_key_id, self.secret_access_key, token, expires)


class CredentialStore:
    def __init__(self, ctx: DomainContext, master: MasterKey) -> None:
        self.ctx = ctx
        self.master = master
        self._cache: dict[str, tuple[int, Resolved | None]] = {}
        self._policy_cache: dict[str, tuple[int, list[str]]] = {}
        self._tag_cache: dict[tuple[str, str, str], tuple[int, tuple[tuple[str, str], ...]]] = {}
        self._lock = threading.Lock()

    # ---- accounts and root keys ---------------------------------------------------------------------------------
    def ensure_account(self, conn: sa.Connection, account_id: str) -> None:
        conn.execute(self.ctx.db.insert_ignore(accounts).values(id=account_id, created_at=self.ctx.clock()))

    def account_exists(self, account_id: str) -> bool:
        with self.ctx.db.read() as conn:
            return conn.execute(sa.select(accounts.c.id).where(accounts.c.id == account_id)).first() is not None

    def create_account(self, account_id: str) -> tuple[str, str]:
        """A new account with a root access key; returns (access key id, secret)."""
        if not (len(account_id) == 12 and account_id.isdigit()):
            raise ValueError(f"account id must be 12 digits (e.g. 111122223333), got {account_id!r}")
        if self.account_exists(account_id):
            raise ValueError(f"account {account_id} already exists; `soko account list` shows the accounts")
        return self.add_root_key(account_id, ids.access_key_id(), ids.secret_access_key())

    def add_root_key(self, account_id: str, key_id: str, secret: str) -> tuple[str, str]:
        with self.ctx.write(invalidates=True) as conn:
            self.ensure_account(conn, account_id)
            row = self._root_key_row(account_id, key_id, secret)
            conn.execute(self.ctx.db.insert_ignore(access_keys).values(**row))
        return key_id, secret

    def _root_key_row(self, account_id: str, key_id: str, secret: str) -> dict:
        return {
            "access_key_id": key_id,
            "account_id": account_id,
            "user_name": None,  # a root key belongs to no IAM user
            "secret_encrypted": self.master.encrypt(secret, key_id),
            "status": "Active",
            "created_at": self.ctx.clock(),
        }

    def set_root_key(self, account_id: str, key_id: str, secret: str) -> list[str]:
        """Make (key_id, secret) the account's only root key: other root keys are deleted and a changed secret for
        the same id replaces the old one (its ECR tokens stop working). Returns what was revoked, for the log."""
        revoked: list[str] = []
        with self.ctx.write(invalidates=True) as conn:
            self.ensure_account(conn, account_id)
            rows = conn.execute(
                sa.select(access_keys.c.access_key_id, access_keys.c.secret_encrypted).where(
                    access_keys.c.account_id == account_id, access_keys.c.user_name.is_(None)
                )
            ).all()
            current = None
            for row in rows:
                if row.access_key_id != key_id:
                    revoked.append(row.access_key_id)
                elif hmac.compare_digest(self.master.decrypt(row.secret_encrypted, key_id).encode(), secret.encode()):
                    current = row
                else:
                    revoked.append(f"{key_id} (previous secret)")
            if revoked:
                conn.execute(
                    access_keys.delete().where(
                        access_keys.c.account_id == account_id,
                        access_keys.c.user_name.is_(None),
                        access_keys.c.access_key_id != key_id if current is not None else sa.true(),
                    )
                )
            if current is None:
                conn.execute(access_keys.insert().values(**self._root_key_row(account_id, key_id, secret)))
        return revoked

    def accounts(self) -> list[tuple[str, float, list[str]]]:
        """Every account: (id, created at, its active root access key ids), in id order."""
        with self.ctx.db.read() as conn:
            rows = conn.execute(sa.select(accounts.c.id, accounts.c.created_at).order_by(accounts.c.id)).all()
            root_keys: dict[str, list[str]] = {}
            for account_id, key_id in conn.execute(
                sa.select(access_keys.c.account_id, access_keys.c.access_key_id)
                .where(access_keys.c.user_name.is_(None), access_keys.c.status == "Active")
                .order_by(access_keys.c.access_key_id)
            ):
                root_keys.setdefault(account_id, []).append(key_id)
        return [(account_id, created_at, root_keys.get(account_id, [])) for account_id, created_at in rows]

    def root_key_ids(self, account_id: str) -> list[str]:
        with self.ctx.db.read() as conn:
            return list(
                conn.execute(
                    sa.select(access_keys.c.access_key_id).where(
                        access_keys.c.account_id == account_id, access_keys.c.user_name.is_(None)
                    )
                ).scalars()
            )

    # ---- lookup -------------------------------------------------------------------------------------------------
    def lookup(self, access_key_id: str) -> Resolved | None:
        if not access_key_id or len(access_key_id) > 128:
            return None
        generation = self.ctx.generation.current()
        hit = self._cache.get(access_key_id)
        if hit is not None and hit[0] == generation:
            return hit[1]
        resolved = self._resolve(access_key_id)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[access_key_id] = (generation, resolved)
        return resolved

    def cached(self, access_key_id: str) -> bool:
        """Whether ``lookup`` would answer from this process's cache (no database read)."""
        hit = self._cache.get(access_key_id)
        return hit is not None and hit[0] == self.ctx.generation.current()

    def _resolve(self, access_key_id: str) -> Resolved | None:
        with self.ctx.db.read() as conn:
            if access_key_id.startswith("ASIA"):
                return self._resolve_session(conn, access_key_id)
            row = conn.execute(sa.select(access_keys).where(access_keys.c.access_key_id == access_key_id)).first()
            if row is None or row.status != "Active":
                return None
            secret = self.master.decrypt(row.secret_encrypted, access_key_id)
            if row.user_name is None:
                principal = Principal(
                    arn=ids.root_arn(row.account_id), account_id=row.account_id, type="Account", user_id=row.account_id
                )
                return Resolved(secret, principal, secret_set_at=row.created_at)
            user = conn.execute(
                sa.select(iam_users).where(iam_users.c.account_id == row.account_id, iam_users.c.name == row.user_name)
            ).first()
            if user is None:
                return None
            principal = Principal(
                arn=ids.user_arn(row.account_id, user.name, user.path),
                account_id=row.account_id,
                type="User",
                user_id=user.user_id,
                username=user.name,
                tags=self._tags(conn, row.account_id, "user", user.name),
            )
            return Resolved(secret, principal, secret_set_at=row.created_at)

    def _resolve_session(self, conn: sa.Connection, access_key_id: str) -> Resolved | None:
        row = conn.execute(sa.select(sts_sessions).where(sts_sessions.c.access_key_id == access_key_id)).first()
        if row is None:
            return None
        role = conn.execute(
            sa.select(iam_roles.c.path, iam_roles.c.role_id).where(
                iam_roles.c.account_id == row.account_id, iam_roles.c.name == row.role_name
            )
        ).first()
        if role is None or role.role_id != row.role_id:
            return None  # the role was deleted (or re-created): its sessions die with it
        principal = Principal(
            arn=ids.assumed_role_arn(row.account_id, row.role_name, row.session_name),
            account_id=row.account_id,
            type="AssumedRole",
            user_id=f"{row.role_id}:{row.session_name}",
            role_arn=ids.role_arn(row.account_id, row.role_name, role.path),
            token_issued_at=row.created_at,
            tags=self._tags(conn, row.account_id, "role", row.role_name),  # a session carries its role's tags
        )
        return Resolved(
            self.master.decrypt(row.secret_encrypted, access_key_id),
            principal,
            row.session_token_sha256,
            row.expires_at,
        )

    @staticmethod
    def _tags(conn: sa.Connection, account_id: str, kind: str, name: str) -> tuple[tuple[str, str], ...]:
        rows = conn.execute(
            sa.select(iam_tags.c.key, iam_tags.c.value).where(
                iam_tags.c.account_id == account_id,
                iam_tags.c.principal_type == kind,
                sa.func.lower(iam_tags.c.principal_name) == name.lower(),
            )
        )
        return tuple(sorted((k, v) for k, v in rows))

    def principal_tags(self, account_id: str, kind: str, name: str) -> tuple[tuple[str, str], ...]:
        """Tags of a user or role ("user" | "role"), cached per generation (aws:ResourceTag on IAM requests)."""
        key = (account_id, kind, name.lower())
        generation = self.ctx.generation.current()
        hit = self._tag_cache.get(key)
        if hit is not None and hit[0] == generation:
            return hit[1]
        with self.ctx.db.read() as conn:
            tags = self._tags(conn, account_id, kind, name)
        with self._lock:
            if len(self._tag_cache) > 10_000:
                self._tag_cache.clear()
            self._tag_cache[key] = (generation, tags)
        return tags

    def is_valid(self, access_key_id: str, issued_at: float | None = None) -> Principal | None:
        """The principal behind a key that is still usable (active key, or unexpired session); with `issued_at`, for
        a token issued then (not before the key's current secret was set; tokens carry milliseconds)."""
        resolved = self.lookup(access_key_id)
        if resolved is None:
            return None
        if resolved.expires_at is not None and resolved.expires_at <= self.ctx.clock():
            return None
        set_at = resolved.secret_set_at
        if issued_at is not None and set_at is not None and issued_at < round(set_at, 3):
            return None
        return resolved.principal

    # ---- identity policies ----------------------------------------------------------------------------------------
    def identity_policies(self, principal: Principal) -> list[str]:
        """Policy documents attached to a user, or to the role behind an assumed-role session."""
        if principal.type == "User":
            kind, name = "user", principal.username or ""
        elif principal.type == "AssumedRole" and principal.role_arn:
            kind, name = "role", principal.role_arn.rsplit("/", 1)[-1]
        else:
            return []
        key = f"{principal.account_id}/{kind}/{name}"
        generation = self.ctx.generation.current()
        hit = self._policy_cache.get(key)
        if hit is not None and hit[0] == generation:
            return hit[1]
        with self.ctx.db.read() as conn:
            inline = (
                conn.execute(
                    sa.select(inline_policies.c.document).where(
                        inline_policies.c.account_id == principal.account_id,
                        inline_policies.c.principal_type == kind,
                        inline_policies.c.principal_name == name,
                    )
                )
                .scalars()
                .all()
            )
            attached = (
                conn.execute(
                    sa.select(managed_policies.c.document)
                    .join(policy_attachments, policy_attachments.c.policy_arn == managed_policies.c.arn)
                    .where(
                        policy_attachments.c.account_id == principal.account_id,
                        policy_attachments.c.principal_type == kind,
                        policy_attachments.c.principal_name == name,
                    )
                )
                .scalars()
                .all()
            )
        documents = list(inline) + list(attached)
        with self._lock:
            if len(self._policy_cache) > 10_000:
                self._policy_cache.clear()
            self._policy_cache[key] = (generation, documents)
        return documents
