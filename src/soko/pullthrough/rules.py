"""Pull-through cache rules: ``ecrRepositoryPrefix`` → an upstream registry (URL, repository prefix, credentials).

ECR's rules (botocore's model checks shapes and patterns before this): ≤ 50 rules per registry, one per prefix;
``ROOT`` as a prefix matches every repository, ``upstreamRepositoryPrefix`` (default ``ROOT``: none) replaces the
prefix upstream; ``credentialArn`` names a secret ``ecr-pullthroughcache/…`` of the same account and region, which
must exist. ``customRoleArn`` and ``upstreamRoleArn`` (IAM roles ECR assumes for ECR upstreams) stay refused: Soko
does not assume roles in other registries.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import sqlalchemy as sa

from soko.errors import LimitExceeded, SokoError
from soko.kernel.context import DomainContext
from soko.meta.schema import pull_through_rules as t

ROOT = "ROOT"
MAX_RULES = 50
# upstreamRegistry → the registry host ECR expects for it (None: any URL of the user's, e.g. Azure's <name>.azurecr.io)
KNOWN_UPSTREAMS: dict[str, str | None] = {
    "ecr": None,
    "ecr-public": "public.ecr.aws",
    "quay": "quay.io",
    "k8s": "registry.k8s.io",
    "docker-hub": "registry-1.docker.io",
    "github-container-registry": "ghcr.io",
    "gitlab-container-registry": "registry.gitlab.com",
    "azure-container-registry": None,
    "chainguard": "cgr.dev",
}


class RuleAlreadyExists(SokoError):
    pass


class RuleNotFound(SokoError):
    pass


class UnsupportedUpstream(SokoError):
    """ECR: UnsupportedUpstreamRegistryException."""


class RuleInvalid(SokoError):
    """ECR: InvalidParameterException."""


@dataclass(frozen=True)
class Rule:
    account_id: str
    prefix: str
    upstream_registry_url: str
    upstream_registry: str | None
    upstream_repository_prefix: str
    credential_arn: str | None
    version: int
    created_at: float
    updated_at: float

    def matches(self, name: str) -> bool:
        return self.prefix == ROOT or name.startswith(self.prefix.rstrip("/") + "/")

    def upstream_name(self, name: str) -> str:
        """The upstream repository a cached repository ``name`` stands for."""
        rest = name if self.prefix == ROOT else name[len(self.prefix.rstrip("/")) + 1 :]
        if self.upstream_repository_prefix == ROOT:
            return rest
        return f"{self.upstream_repository_prefix.rstrip('/')}/{rest}"

    @property
    def base_url(self) -> str:
        """scheme://host[:port] (https unless the rule names http://: loopback and private upstreams)."""
        url = self.upstream_registry_url
        return url.rstrip("/") if "://" in url else f"https://{url.rstrip('/')}"


def _from_row(row: sa.Row) -> Rule:
    return Rule(
        account_id=row.account_id,
        prefix=row.prefix,
        upstream_registry_url=row.upstream_registry_url,
        upstream_registry=row.upstream_registry,
        upstream_repository_prefix=row.upstream_repository_prefix,
        credential_arn=row.credential_arn,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _not_found(account_id: str, prefix: str) -> RuleNotFound:
    return RuleNotFound(
        f"The pull-through cache rule with prefix '{prefix}' does not exist in the registry with id '{account_id}'"
    )


def check_url(url: str, upstream_registry: str | None) -> str:
    """The upstream URL as stored: a host (https) or an http(s) URL of a registry root; nothing else."""
    candidate = url if "://" in url else f"https://{url}"
    parts = urlsplit(candidate)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise RuleInvalid(
            f"Invalid parameter at 'upstreamRegistryUrl' failed to satisfy constraint: '{url[:200]}' is not a "
            "registry host (e.g. registry-1.docker.io) or http(s)://host[:port]"
        )
    if upstream_registry is not None:
        if upstream_registry not in KNOWN_UPSTREAMS:
            raise UnsupportedUpstream(f"The upstream registry '{upstream_registry}' is not supported by this registry")
        expected = KNOWN_UPSTREAMS[upstream_registry]
        if expected is not None and parts.hostname != expected:
            raise RuleInvalid(
                f"Invalid parameter at 'upstreamRegistryUrl' failed to satisfy constraint: upstreamRegistry "
                f"'{upstream_registry}' is at {expected}, not {parts.hostname}"
            )
    return url.rstrip("/")


def refuse_roles(custom_role_arn: str | None, upstream_role_arn: str | None) -> None:
    from soko.registry.capabilities import NotCarriedOut

    if custom_role_arn or upstream_role_arn:
        raise NotCarriedOut(
            "customRoleArn and upstreamRoleArn cannot be carried out: this Soko does not assume IAM roles in other "
            "registries. Authenticate to the upstream with a credentialArn (a secret ecr-pullthroughcache/…)."
        )


class Rules:
    def __init__(self, ctx: DomainContext) -> None:
        self.ctx = ctx

    def create(self, rule: Rule) -> Rule:
        with self.ctx.write(invalidates=True) as conn:
            count = conn.execute(
                sa.select(sa.func.count()).select_from(t).where(t.c.account_id == rule.account_id)
            ).scalar_one()
            if count >= MAX_RULES:
                raise LimitExceeded(
                    f"The maximum number of pull-through cache rules ({MAX_RULES}) has been reached in the registry "
                    f"with id '{rule.account_id}'"
                )
            inserted = conn.execute(
                self.ctx.db.insert_ignore(t).values(
                    account_id=rule.account_id,
                    prefix=rule.prefix,
                    upstream_registry_url=rule.upstream_registry_url,
                    upstream_registry=rule.upstream_registry,
                    upstream_repository_prefix=rule.upstream_repository_prefix,
                    credential_arn=rule.credential_arn,
                    version=1,
                    created_at=rule.created_at,
                    updated_at=rule.updated_at,
                )
            ).rowcount
            if not inserted:
                raise RuleAlreadyExists(
                    f"A pull-through cache rule with prefix '{rule.prefix}' already exists in the registry with id "
                    f"'{rule.account_id}'"
                )
            return self._get(conn, rule.account_id, rule.prefix)

    def _get(self, conn: sa.Connection, account_id: str, prefix: str) -> Rule:
        row = conn.execute(sa.select(t).where(t.c.account_id == account_id, t.c.prefix == prefix)).first()
        if row is None:
            raise _not_found(account_id, prefix)
        return _from_row(row)

    def get(self, account_id: str, prefix: str) -> Rule:
        with self.ctx.db.read() as conn:
            return self._get(conn, account_id, prefix)

    def update_credentials(self, account_id: str, prefix: str, credential_arn: str | None, now: float) -> Rule:
        with self.ctx.write(invalidates=True) as conn:
            self._get(conn, account_id, prefix)
            conn.execute(
                sa.update(t)
                .where(t.c.account_id == account_id, t.c.prefix == prefix)
                .values(credential_arn=credential_arn, updated_at=now, version=t.c.version + 1)
            )
            return self._get(conn, account_id, prefix)

    def delete(self, account_id: str, prefix: str) -> Rule:
        """The rule goes; what it cached stays (ECR keeps cached repositories)."""
        with self.ctx.write(invalidates=True) as conn:
            rule = self._get(conn, account_id, prefix)
            conn.execute(sa.delete(t).where(t.c.account_id == account_id, t.c.prefix == prefix))
            return rule

    def page(
        self, account_id: str, prefixes: list[str] | None, *, after: str | None = None, limit: int = 100
    ) -> tuple[list[Rule], bool]:
        with self.ctx.db.read() as conn:
            if prefixes:
                found = [
                    _from_row(r)
                    for r in conn.execute(
                        sa.select(t).where(t.c.account_id == account_id, t.c.prefix.in_(prefixes)).order_by(t.c.prefix)
                    )
                ]
                missing = sorted(set(prefixes) - {rule.prefix for rule in found})
                if missing:
                    raise _not_found(account_id, missing[0])
                return found, False
            query = sa.select(t).where(t.c.account_id == account_id)
            if after is not None:
                query = query.where(t.c.prefix > after)
            rows = conn.execute(query.order_by(t.c.prefix).limit(limit + 1)).all()
        return [_from_row(r) for r in rows[:limit]], len(rows) > limit
