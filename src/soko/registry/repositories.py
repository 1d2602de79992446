"""Repositories: lookup, creation (explicit, or on first push through creation templates), settings, resource tags,
listing, the per-account repository quota, and deletion."""

from __future__ import annotations

import json

import sqlalchemy as sa

from soko.access import Principal
from soko.errors import LimitExceeded, RepositoryAlreadyExists, RepositoryNotEmpty, RepositoryNotFound, SokoError
from soko.kernel import scan_queue, signing_queue
from soko.kernel.context import DomainContext
from soko.kernel.events import repository_action
from soko.kernel.unit_of_work import UnitOfWork
from soko.meta.schema import lifecycle_policies, manifests, repository_tags, uploads
from soko.meta.schema import repositories as t
from soko.names import validate_repository_name
from soko.registry.account_keys import AccountKeys
from soko.registry.encryption import Encryption, Keyspace, keyspace_of
from soko.registry.models import RepoRef, Repository
from soko.registry.quotas import Quotas
from soko.storage.base import PathNotFound
from soko.storage.paths import upload_dir

MUTABILITIES = ("MUTABLE", "IMMUTABLE", "IMMUTABLE_WITH_EXCLUSION", "MUTABLE_WITH_EXCLUSION")
WITH_EXCLUSION = ("IMMUTABLE_WITH_EXCLUSION", "MUTABLE_WITH_EXCLUSION")
ENCRYPTION_TYPES = ("AES256", "KMS", "KMS_DSSE")
MAX_RESOURCE_TAGS = 50


class ParameterInvalid(SokoError):
    """A request parameter breaks an ECR rule the service model cannot express (ECR: InvalidParameterException)."""


class TagParameterInvalid(SokoError):
    """A resource tag key or value breaks the tagging rules (ECR: InvalidTagParameterException)."""


class TooManyTags(SokoError):
    """More than 50 tags on one resource (ECR: TooManyTagsException)."""


def _row_to_repository(row: sa.Row) -> Repository:
    return Repository(
        id=row.id,
        account_id=row.account_id,
        name=row.name,
        created_at=row.created_at,
        tag_mutability=row.tag_mutability,
        tag_mutability_filters=json.loads(row.tag_mutability_filters) if row.tag_mutability_filters else [],
        scan_on_push=bool(row.scan_on_push),
        encryption_type=row.encryption_type,
        kms_key=row.kms_key,
    )


def not_found(ref: RepoRef) -> RepositoryNotFound:
    return RepositoryNotFound(
        f"The repository with name '{ref.name}' does not exist in the registry with id '{ref.account_id}'"
    )


# ---- rules shared by CreateRepository, PutImageTagMutability and creation templates --------------------------------
def validate_mutability(mutability: str, filters: list[dict] | None) -> list[dict]:
    """Exclusion filters are required by, and only allowed with, the *_WITH_EXCLUSION mutabilities."""
    if mutability not in MUTABILITIES:
        raise ParameterInvalid(
            f"Invalid parameter at 'imageTagMutability' failed to satisfy constraint: "
            f"'Member must satisfy enum value set: [{', '.join(MUTABILITIES)}]'"
        )
    filters = list(filters or [])
    if mutability in WITH_EXCLUSION and not filters:
        raise ParameterInvalid(
            f"Invalid parameter at 'imageTagMutabilityExclusionFilters' failed to satisfy constraint: "
            f"'imageTagMutabilityExclusionFilters must be specified when imageTagMutability is {mutability}'"
        )
    if mutability not in WITH_EXCLUSION and filters:
        raise ParameterInvalid(
            f"Invalid parameter at 'imageTagMutabilityExclusionFilters' failed to satisfy constraint: "
            f"'imageTagMutabilityExclusionFilters can only be specified when imageTagMutability is "
            f"IMMUTABLE_WITH_EXCLUSION or MUTABLE_WITH_EXCLUSION, not {mutability}'"
        )
    seen = set()
    out = []
    for f in filters:
        if f.get("filterType") != "WILDCARD" or not f.get("filter"):
            raise ParameterInvalid(
                "Invalid parameter at 'imageTagMutabilityExclusionFilters' failed to satisfy constraint: "
                "'each filter needs filterType WILDCARD and a filter value'"
            )
        if f["filter"] not in seen:
            seen.add(f["filter"])
            out.append({"filterType": "WILDCARD", "filter": f["filter"]})
    return out


def managed_kms_key(region: str, account_id: str) -> str:
    """The AWS-managed key ECR uses for KMS encryption when no key is given."""
    return f"arn:aws:kms:{region}:{account_id}:alias/aws/ecr"


def normalize_encryption(config: dict | None, region: str, account_id: str) -> tuple[str, str | None]:
    """(encryption type, KMS key): AES256 by default; KMS/KMS_DSSE without a key use the aws/ecr managed key."""
    if not config:
        return "AES256", None
    kind = config.get("encryptionType") or "AES256"
    key = config.get("kmsKey") or None
    if kind not in ENCRYPTION_TYPES:
        raise ParameterInvalid(
            "Invalid parameter at 'encryptionConfiguration.encryptionType' failed to satisfy constraint: "
            f"'Member must satisfy enum value set: [{', '.join(ENCRYPTION_TYPES)}]'"
        )
    if kind == "AES256":
        if key:
            raise ParameterInvalid(
                "Invalid parameter at 'encryptionConfiguration' failed to satisfy constraint: "
                "'kmsKey can only be specified when encryptionType is KMS or KMS_DSSE'"
            )
        return kind, None
    return kind, key or managed_kms_key(region, account_id)


def validate_resource_tags(tags: list[dict]) -> dict[str, str]:
    """Tag{Key,Value} list → ordered dict (a repeated key keeps its last value); ECR's key/value limits."""
    out: dict[str, str] = {}
    for tag in tags:
        key, value = tag.get("Key"), tag.get("Value")
        if not isinstance(key, str) or not 1 <= len(key) <= 128:
            raise TagParameterInvalid("Tag keys must be between 1 and 128 characters long")
        if not isinstance(value, str) or len(value) > 256:
            raise TagParameterInvalid(f"The value of tag '{key}' must be at most 256 characters long")
        if key.lower().startswith("aws:"):
            raise TagParameterInvalid(f"Tag key '{key}' is invalid: the 'aws:' prefix is reserved for AWS use")
        out[key] = value
    if len(out) > MAX_RESOURCE_TAGS:
        raise TooManyTags(f"A resource can have at most {MAX_RESOURCE_TAGS} tags; the request has {len(out)}")
    return out


class Repositories:
    def __init__(self, ctx: DomainContext) -> None:
        self.ctx = ctx
        self.quotas = Quotas(ctx)
        self.encryption = Encryption(ctx)  # KMS keys of KMS and KMS_DSSE repositories (soko.registry.encryption)
        self.account_keys = AccountKeys(ctx)  # per-account service keys of AES256 repositories

    def keyspace(self, conn: sa.Connection, repo_id: int) -> Keyspace | None:
        """Where the repository's blobs live: None for the service key (AES256), else its customer key's keyspace."""
        row = conn.execute(sa.select(t.c.encryption_type, t.c.kms_key, t.c.account_id).where(t.c.id == repo_id)).one()
        return keyspace_of(row.encryption_type, row.kms_key, row.account_id)

    def planned_keyspace(self, conn: sa.Connection, ref: RepoRef, applied_for: str) -> Keyspace | None:
        """The keyspace of ``ref``, or, while it is missing, of the repository a push (``applied_for``
        CREATE_ON_PUSH), a replication (REPLICATION) or a pull-through cache would create: its creation
        template's key. What a caller that prepares content under a key before its transaction seals for."""
        repo = self.find(conn, ref)
        if repo is not None:
            return keyspace_of(repo.encryption_type, repo.kms_key, repo.account_id)
        from soko.registry.templates import matching_template

        template = matching_template(conn, ref.account_id, ref.name, applied_for)
        if template is None:
            return None
        kind, key = normalize_encryption(template.encryption, self.ctx.settings.region, ref.account_id)
        if kind == "AES256":
            return None
        return keyspace_of(kind, self.encryption.key_for_template(ref.account_id, kind, key or ""), ref.account_id)

    def find(self, conn: sa.Connection, ref: RepoRef) -> Repository | None:
        row = conn.execute(sa.select(t).where(t.c.account_id == ref.account_id, t.c.name == ref.name)).first()
        return _row_to_repository(row) if row else None

    def get(self, ref: RepoRef, conn: sa.Connection | None = None) -> Repository:
        if conn is not None:
            repo = self.find(conn, ref)
        else:
            with self.ctx.db.read() as c:
                repo = self.find(c, ref)
        if repo is None:
            raise not_found(ref)
        return repo

    def id_for(self, conn: sa.Connection, ref: RepoRef) -> int:
        repo_id = conn.execute(sa.select(t.c.id).where(t.c.account_id == ref.account_id, t.c.name == ref.name)).scalar()
        if repo_id is None:
            raise not_found(ref)
        return repo_id

    # ---- creation ------------------------------------------------------------------------------------------------
    def create(
        self,
        ref: RepoRef,
        *,
        tag_mutability: str = "MUTABLE",
        tag_mutability_filters: list | None = None,
        scan_on_push: bool = False,
        encryption_type: str = "AES256",
        kms_key: str | None = None,
        tags: list[dict] | None = None,
        key_user: Principal | None = None,
    ) -> Repository:
        """``key_user``: the caller, who must be allowed to use a KMS key through ECR (None: Soko's own doing)."""
        validate_repository_name(ref.name)
        filters = validate_mutability(tag_mutability, tag_mutability_filters)
        resource_tags = validate_resource_tags(tags or [])
        if encryption_type != "AES256":  # bound to the key's ARN, checked usable now (as ECR does)
            kms_key = self.encryption.resolve_for_repository(ref.account_id, encryption_type, kms_key or "", key_user)
        with self.ctx.transaction(invalidates=True) as tx:
            conn = tx.conn
            if self.find(conn, ref) is not None:
                raise RepositoryAlreadyExists(
                    f"The repository with name '{ref.name}' already exists in the registry with id '{ref.account_id}'"
                )
            self._check_quota(conn, ref.account_id)
            created = self._insert(conn, ref, tag_mutability, filters, scan_on_push, encryption_type, kms_key)
            repo = self.find(conn, ref)
            assert repo is not None
            self._write_tags(conn, repo.id, resource_tags)
            if created:
                tx.emit(repository_action(ref.account_id, self.ctx.settings.region, ref.name, "CREATE"))
            return repo

    def _check_quota(self, conn: sa.Connection, account_id: str) -> None:
        limit = self.quotas.get(account_id, "max_repositories", conn)
        count = conn.execute(sa.select(sa.func.count()).select_from(t).where(t.c.account_id == account_id)).scalar_one()
        if count >= limit:
            raise LimitExceeded(
                f"The maximum number of repositories ({limit}) has been reached in the registry with id "
                f"'{account_id}'; delete repositories or raise the account's max_repositories quota"
            )

    def _insert(
        self,
        conn,
        ref,
        tag_mutability="MUTABLE",
        filters=None,
        scan_on_push=False,
        encryption_type="AES256",
        kms_key=None,
        policy_text=None,
    ) -> bool:
        """False when a concurrent writer created the repository first."""
        return bool(
            conn.execute(
                self.ctx.db.insert_ignore(t).values(
                    account_id=ref.account_id,
                    name=ref.name,
                    created_at=self.ctx.clock(),
                    tag_mutability=tag_mutability,
                    tag_mutability_filters=json.dumps(filters) if filters else None,
                    scan_on_push=scan_on_push,
                    encryption_type=encryption_type,
                    kms_key=kms_key,
                    policy_text=policy_text,
                )
            ).rowcount
        )

    def id_for_push(self, tx: UnitOfWork, ref: RepoRef) -> int:
        """The repository a push goes to. A missing one is created when a CREATE_ON_PUSH creation template matches
        its name (with the template's settings, tags, policy and lifecycle policy) or, with no matching template,
        when the registry is configured to create on push (with defaults, like Distribution)."""
        return self._id_or_create(tx, ref, "CREATE_ON_PUSH", self.ctx.settings.create_repository_on_push)

    def id_for_replication(self, tx: UnitOfWork, ref: RepoRef) -> int:
        """The repository a replicated image goes to: a missing one is created with a matching REPLICATION creation
        template's settings, else with ECR's defaults (mutable, no scan on push, AES256), as ECR does."""
        return self._id_or_create(tx, ref, "REPLICATION", True)

    def id_for_pull_through(self, tx: UnitOfWork, ref: RepoRef) -> int:
        """The repository a pull-through cache stores into: a missing one is created with a matching
        PULL_THROUGH_CACHE creation template's settings, else with ECR's defaults (mutable, AES256), as ECR does."""
        return self._id_or_create(tx, ref, "PULL_THROUGH_CACHE", True)

    def _id_or_create(self, tx: UnitOfWork, ref: RepoRef, applied_for: str, with_defaults: bool) -> int:
        conn = tx.conn
        repo_id = conn.execute(sa.select(t.c.id).where(t.c.account_id == ref.account_id, t.c.name == ref.name)).scalar()
        if repo_id is not None:
            return repo_id
        from soko.registry.templates import matching_template

        template = matching_template(conn, ref.account_id, ref.name, applied_for)
        if template is None and not with_defaults:
            raise not_found(ref)
        validate_repository_name(ref.name)
        self._check_quota(conn, ref.account_id)
        created = repository_action(ref.account_id, self.ctx.settings.region, ref.name, "CREATE")
        if template is None:
            if self._insert(conn, ref):
                tx.emit(created)
            return self.id_for(conn, ref)
        kind, key = normalize_encryption(template.encryption, self.ctx.settings.region, ref.account_id)
        if kind != "AES256":  # bound to the key's ARN, usable now: KeyUnusable otherwise (nothing is created)
            key = self.encryption.key_for_template(ref.account_id, kind, key or "")
        inserted = self._insert(
            conn,
            ref,
            template.tag_mutability,
            template.tag_mutability_filters,
            False,
            kind,
            key,
            template.repository_policy or None,
        )
        if inserted:
            tx.emit(created)
        repo_id = self.id_for(conn, ref)
        self._write_tags(conn, repo_id, {tag["Key"]: tag["Value"] for tag in template.resource_tags})
        if template.lifecycle_policy:
            now = self.ctx.clock()
            conn.execute(
                self.ctx.db.insert_ignore(lifecycle_policies).values(
                    repository_id=repo_id, policy_text=template.lifecycle_policy, updated_at=now
                )
            )
        if template.repository_policy:
            tx.invalidate()  # the authorizer caches "no policy" for names it was asked about before they existed
        return repo_id

    # ---- settings --------------------------------------------------------------------------------------------------
    def set_tag_mutability(self, ref: RepoRef, mutability: str, filters: list[dict] | None) -> Repository:
        filters = validate_mutability(mutability, filters)
        with self.ctx.write(invalidates=True) as conn:
            repo_id = self.id_for(conn, ref)
            conn.execute(
                sa.update(t)
                .where(t.c.id == repo_id)
                .values(tag_mutability=mutability, tag_mutability_filters=json.dumps(filters) if filters else None)
            )
            return self.get(ref, conn)

    def set_scan_on_push(self, ref: RepoRef, scan_on_push: bool) -> Repository:
        with self.ctx.write(invalidates=True) as conn:
            repo_id = self.id_for(conn, ref)
            conn.execute(sa.update(t).where(t.c.id == repo_id).values(scan_on_push=scan_on_push))
            return self.get(ref, conn)

    # ---- resource tags ---------------------------------------------------------------------------------------------
    def _write_tags(self, conn: sa.Connection, repo_id: int, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            conn.execute(
                sa.delete(repository_tags).where(
                    repository_tags.c.repository_id == repo_id, repository_tags.c.key == key
                )
            )
            conn.execute(sa.insert(repository_tags).values(repository_id=repo_id, key=key, value=value))

    def resource_tags(self, ref: RepoRef) -> list[dict]:
        with self.ctx.db.read() as conn:
            repo_id = self.id_for(conn, ref)
            rows = conn.execute(
                sa.select(repository_tags.c.key, repository_tags.c.value)
                .where(repository_tags.c.repository_id == repo_id)
                .order_by(repository_tags.c.key)
            ).all()
        return [{"Key": k, "Value": v} for k, v in rows]

    def tag(self, ref: RepoRef, tags: list[dict]) -> None:
        new = validate_resource_tags(tags)
        with self.ctx.write(invalidates=True) as conn:
            repo_id = self.id_for(conn, ref)
            existing = set(
                conn.execute(
                    sa.select(repository_tags.c.key).where(repository_tags.c.repository_id == repo_id)
                ).scalars()
            )
            total = len(existing | set(new))
            if total > MAX_RESOURCE_TAGS:
                raise TooManyTags(
                    f"A resource can have at most {MAX_RESOURCE_TAGS} tags; repository '{ref.name}' would have {total}"
                )
            self._write_tags(conn, repo_id, new)

    def untag(self, ref: RepoRef, keys: list[str]) -> None:
        for key in keys:
            if not 1 <= len(key) <= 128:
                raise TagParameterInvalid("Tag keys must be between 1 and 128 characters long")
            if key.lower().startswith("aws:"):
                raise TagParameterInvalid(f"Tag key '{key}' is invalid: the 'aws:' prefix is reserved for AWS use")
        with self.ctx.write(invalidates=True) as conn:
            repo_id = self.id_for(conn, ref)
            if keys:
                conn.execute(
                    sa.delete(repository_tags).where(
                        repository_tags.c.repository_id == repo_id, repository_tags.c.key.in_(keys)
                    )
                )

    # ---- listing ---------------------------------------------------------------------------------------------------
    def list_names(self, account_id: str, *, last: str | None = None, limit: int | None = None) -> list[str]:
        name = self.ctx.db.bytewise(t.c.name)
        query = sa.select(t.c.name).where(t.c.account_id == account_id).order_by(name)
        if last:
            query = query.where(name > last)
        if limit is not None:
            query = query.limit(limit)
        with self.ctx.db.read() as conn:
            return list(conn.execute(query).scalars())

    def page(self, account_id: str, *, after: str | None = None, limit: int = 100) -> tuple[list[Repository], bool]:
        """Repositories in name order after ``after``; (page, whether more follow)."""
        query = sa.select(t).where(t.c.account_id == account_id).order_by(t.c.name).limit(limit + 1)
        if after:
            query = query.where(t.c.name > after)
        with self.ctx.db.read() as conn:
            rows = conn.execute(query).all()
        return [_row_to_repository(r) for r in rows[:limit]], len(rows) > limit

    def search(
        self,
        account_id: str,
        *,
        contains: str = "",
        sort: str = "name",
        descending: bool = False,
        after: tuple[float, str] | None = None,
        limit: int = 50,
    ) -> tuple[list[Repository], int, bool]:
        """One page of the repositories whose name contains ``contains``, ordered by ``sort`` ("name" or "created",
        ties by name) and direction, after the keyset position ``after`` = (created_at, name) of the last row shown:
        (page, how many match in all, whether more follow). Keyset pages read only their own rows at any depth."""
        if sort not in ("name", "created"):
            raise ValueError(f"unknown sort {sort!r}")
        where = [t.c.account_id == account_id]
        if contains:
            escaped = contains.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append(t.c.name.like(f"%{escaped}%", escape="\\"))
        keys = [t.c.name] if sort == "name" else [t.c.created_at, t.c.name]
        query = sa.select(t).where(*where)
        if after is not None:
            position = (after[1],) if sort == "name" else after
            row_key = keys[0] if len(keys) == 1 else sa.tuple_(*keys)
            bound = sa.literal(position[0]) if len(keys) == 1 else sa.tuple_(*(sa.literal(v) for v in position))
            query = query.where(row_key < bound if descending else row_key > bound)
        query = query.order_by(*(k.desc() if descending else k.asc() for k in keys)).limit(limit + 1)
        with self.ctx.db.read() as conn:
            rows = conn.execute(query).all()
            total = conn.execute(sa.select(sa.func.count()).select_from(t).where(*where)).scalar_one()
        return [_row_to_repository(r) for r in rows[:limit]], total, len(rows) > limit

    def count(self, account_id: str) -> int:
        with self.ctx.db.read() as conn:
            return conn.execute(
                sa.select(sa.func.count()).select_from(t).where(t.c.account_id == account_id)
            ).scalar_one()

    def counts_by_account(self) -> dict[str, int]:
        with self.ctx.db.read() as conn:
            return dict(conn.execute(sa.select(t.c.account_id, sa.func.count()).group_by(t.c.account_id)).all())

    # ---- deletion --------------------------------------------------------------------------------------------------
    def delete(self, ref: RepoRef, *, force: bool = False) -> Repository:
        """Delete a repository. Without ``force`` it must hold no images. Its manifests, tags, blob links, uploads,
        resource tags and policies go with it (cascades); blobs no other repository links become garbage for GC."""
        with self.ctx.transaction(invalidates=True) as tx:
            conn = tx.conn
            repo = self.get(ref, conn)
            if not force:
                has_images = conn.execute(
                    sa.select(manifests.c.id).where(manifests.c.repository_id == repo.id).limit(1)
                ).first()
                if has_images:
                    raise RepositoryNotEmpty(
                        f"The repository with name '{ref.name}' in registry with id '{ref.account_id}' cannot be "
                        "deleted because it still contains images"
                    )
            upload_ids = list(conn.execute(sa.select(uploads.c.id).where(uploads.c.repository_id == repo.id)).scalars())
            tx.review_repository_links(repo.id, "repository-delete")  # its links go with it; its blobs keep their grace
            signing_queue.forget_repository(tx, repo.id)
            scan_queue.forget_repository(tx, repo.id)  # its scans cascade; inventories no other repository needs go
            conn.execute(sa.delete(t).where(t.c.id == repo.id))
            tx.emit(repository_action(ref.account_id, self.ctx.settings.region, ref.name, "DELETE"))
        for upload_id in upload_ids:
            try:
                self.ctx.storage.delete(upload_dir(upload_id))
            except PathNotFound:
                pass
        return repo
