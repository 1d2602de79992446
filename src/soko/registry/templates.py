"""Repository creation templates: per-account settings applied to repositories ECR creates for you (on push,
through replication, or for pull-through cache). The longest matching prefix wins; ``ROOT`` matches every name."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import sqlalchemy as sa

from soko.access import Principal
from soko.errors import SokoError
from soko.iam.policy.keys import warn_unpopulated
from soko.kernel.context import DomainContext
from soko.meta.schema import creation_templates as t
from soko.registry.capabilities import require_create_on_push_only
from soko.registry.encryption import Encryption
from soko.registry.lifecycle_store import validate_policy as validate_lifecycle_policy
from soko.registry.policies import validate_repository_policy
from soko.registry.repositories import (
    ParameterInvalid,
    normalize_encryption,
    validate_mutability,
    validate_resource_tags,
)

ROOT = "ROOT"
CREATE_ON_PUSH = "CREATE_ON_PUSH"
APPLIED_FOR = ("REPLICATION", "PULL_THROUGH_CACHE", "CREATE_ON_PUSH")


class TemplateAlreadyExists(SokoError):
    pass


class TemplateNotFound(SokoError):
    pass


@dataclass(frozen=True)
class Template:
    account_id: str
    prefix: str
    applied_for: list[str]
    description: str | None = None
    encryption: dict | None = None  # {"encryptionType", "kmsKey"?} as given
    resource_tags: list[dict] = field(default_factory=list)
    tag_mutability: str = "MUTABLE"
    tag_mutability_filters: list[dict] = field(default_factory=list)
    repository_policy: str | None = None
    lifecycle_policy: str | None = None
    custom_role_arn: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0


def _from_row(row: sa.Row) -> Template:
    encryption = {"encryptionType": row.encryption_type}
    if row.kms_key:
        encryption["kmsKey"] = row.kms_key
    return Template(
        account_id=row.account_id,
        prefix=row.prefix,
        applied_for=json.loads(row.applied_for),
        description=row.description,
        encryption=encryption,
        resource_tags=json.loads(row.resource_tags) if row.resource_tags else [],
        tag_mutability=row.tag_mutability,
        tag_mutability_filters=json.loads(row.tag_mutability_filters) if row.tag_mutability_filters else [],
        repository_policy=row.repository_policy,
        lifecycle_policy=row.lifecycle_policy,
        custom_role_arn=row.custom_role_arn,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def prefix_matches(prefix: str, name: str) -> bool:
    """``ROOT`` matches everything; ``prod`` (or ``prod/``) matches ``prod/…`` — whole namespace components."""
    if prefix == ROOT:
        return True
    base = prefix.rstrip("/")
    return name.startswith(base + "/")


def matching_template(conn: sa.Connection, account_id: str, name: str, applied_for: str) -> Template | None:
    """The template that applies to a new repository ``name``: the longest matching prefix (ROOT last)."""
    rows = conn.execute(sa.select(t).where(t.c.account_id == account_id)).all()
    best: Template | None = None
    best_len = -2
    for row in rows:
        template = _from_row(row)
        if applied_for not in template.applied_for or not prefix_matches(template.prefix, name):
            continue
        length = -1 if template.prefix == ROOT else len(template.prefix.rstrip("/"))
        if length > best_len:
            best, best_len = template, length
    return best


def _not_found(account_id: str, prefix: str) -> TemplateNotFound:
    return TemplateNotFound(
        f"The repository creation template with prefix '{prefix}' does not exist in the registry with id '{account_id}'"
    )


def validated(template: Template, region: str, *, ecr_strict: bool = False) -> Template:
    """The template as stored, or the error ECR gives: its repository policy and lifecycle policy are validated
    exactly as SetRepositoryPolicy and PutLifecyclePolicy validate them, so a repository created from it never
    carries a document ECR would refuse."""
    if not template.applied_for:
        raise ParameterInvalid(
            "Invalid parameter at 'appliedFor' failed to satisfy constraint: "
            "'appliedFor must name at least one of REPLICATION, PULL_THROUGH_CACHE, CREATE_ON_PUSH'"
        )
    require_create_on_push_only(template.applied_for)
    filters = validate_mutability(template.tag_mutability, template.tag_mutability_filters)
    tags = validate_resource_tags(template.resource_tags)
    normalize_encryption(template.encryption, region, template.account_id)
    if template.repository_policy:
        policy = validate_repository_policy(template.repository_policy)
        warn_unpopulated(
            policy, f"the repository policy of creation template {template.prefix}", template.repository_policy
        )
    if template.lifecycle_policy:
        validate_lifecycle_policy(template.lifecycle_policy, ecr_strict=ecr_strict)
    return dataclasses.replace(
        template,
        applied_for=list(dict.fromkeys(template.applied_for)),
        tag_mutability_filters=filters,
        resource_tags=[{"Key": k, "Value": v} for k, v in tags.items()],
    )


class Templates:
    """Creation templates: validated (``validated``) and stored per account."""

    def __init__(self, ctx: DomainContext, encryption: Encryption) -> None:
        self.ctx = ctx
        self.encryption = encryption

    def _check_key(self, template: Template, key_user: Principal | None) -> None:
        """A KMS / KMS_DSSE template's key is checked as CreateRepository checks one (it resolves here, is usable
        now, and ``key_user`` may use it through ECR), before anything is stored: a template never promises a key
        its repositories could not be created with. The key is stored as given (an alias stays an alias) and
        resolved again each time a repository is created from the template. ``key_user``: the template's custom
        role (which ECR uses to create repositories with a KMS key), else the caller."""
        kind, key = normalize_encryption(template.encryption, self.ctx.settings.region, template.account_id)
        if kind != "AES256":
            self.encryption.resolve_for_repository(template.account_id, kind, key or "", key_user)

    @staticmethod
    def _values(template: Template) -> dict:
        encryption = template.encryption or {"encryptionType": "AES256"}
        return {
            "description": template.description,
            "applied_for": json.dumps(template.applied_for),
            "encryption_type": encryption.get("encryptionType") or "AES256",
            "kms_key": encryption.get("kmsKey") or None,
            "resource_tags": json.dumps(template.resource_tags) if template.resource_tags else None,
            "tag_mutability": template.tag_mutability,
            "tag_mutability_filters": (
                json.dumps(template.tag_mutability_filters) if template.tag_mutability_filters else None
            ),
            "repository_policy": template.repository_policy or None,
            "lifecycle_policy": template.lifecycle_policy or None,
            "custom_role_arn": template.custom_role_arn or None,
        }

    def create(self, template: Template, key_user: Principal | None = None) -> Template:
        template = validated(template, self.ctx.settings.region, ecr_strict=self.ctx.settings.lifecycle_ecr_strict)
        self._check_key(template, key_user)  # (KMS calls: before the write)
        now = self.ctx.clock()
        with self.ctx.write() as conn:
            exists = conn.execute(
                sa.select(t.c.prefix).where(t.c.account_id == template.account_id, t.c.prefix == template.prefix)
            ).first()
            if exists:
                raise TemplateAlreadyExists(
                    f"The repository creation template with prefix '{template.prefix}' already exists in the "
                    f"registry with id '{template.account_id}'"
                )
            conn.execute(
                sa.insert(t).values(
                    account_id=template.account_id,
                    prefix=template.prefix,
                    created_at=now,
                    updated_at=now,
                    **self._values(template),
                )
            )
            return self._get(conn, template.account_id, template.prefix)

    def _get(self, conn: sa.Connection, account_id: str, prefix: str) -> Template:
        row = conn.execute(sa.select(t).where(t.c.account_id == account_id, t.c.prefix == prefix)).first()
        if row is None:
            raise _not_found(account_id, prefix)
        return _from_row(row)

    def get(self, account_id: str, prefix: str) -> Template:
        with self.ctx.db.read() as conn:
            return self._get(conn, account_id, prefix)

    def replace(self, template: Template, key_user: Principal | None = None, *, key_changed: bool = True) -> Template:
        """Store an updated template (the caller merged the changes into the current one). ``key_changed``: the
        update names the encryption or the custom role, so the key is checked again."""
        template = validated(template, self.ctx.settings.region, ecr_strict=self.ctx.settings.lifecycle_ecr_strict)
        if key_changed:
            self._check_key(template, key_user)
        with self.ctx.write() as conn:
            self._get(conn, template.account_id, template.prefix)
            conn.execute(
                sa.update(t)
                .where(t.c.account_id == template.account_id, t.c.prefix == template.prefix)
                .values(updated_at=self.ctx.clock(), **self._values(template))
            )
            return self._get(conn, template.account_id, template.prefix)

    def delete(self, account_id: str, prefix: str) -> Template:
        with self.ctx.write() as conn:
            template = self._get(conn, account_id, prefix)
            conn.execute(sa.delete(t).where(t.c.account_id == account_id, t.c.prefix == prefix))
        return template

    def page(
        self, account_id: str, prefixes: list[str] | None = None, *, after: str | None = None, limit: int = 100
    ) -> tuple[list[Template], bool]:
        query = sa.select(t).where(t.c.account_id == account_id).order_by(t.c.prefix).limit(limit + 1)
        if prefixes:
            query = query.where(t.c.prefix.in_(prefixes))
        if after:
            query = query.where(t.c.prefix > after)
        with self.ctx.db.read() as conn:
            rows = conn.execute(query).all()
        return [_from_row(r) for r in rows[:limit]], len(rows) > limit
