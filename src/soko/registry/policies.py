"""Resource-side policies: a repository's policy (on its row) and the registry policy of an account.

Documents are validated with the IAM policy engine before they are stored; every change bumps the generation so
the authorizer's cached lookups see it at once.
"""

from __future__ import annotations

import sqlalchemy as sa

from soko.errors import SokoError
from soko.iam.policy import MalformedPolicy, Policy, PolicyKind, parse_policy
from soko.iam.policy.keys import warn_unpopulated
from soko.kernel.context import DomainContext
from soko.meta.schema import registry_policies
from soko.meta.schema import repositories as repos
from soko.registry.models import RepoRef
from soko.registry.repositories import Repositories

MAX_POLICY_CHARS = 10_240
# REGISTRY_POLICY_SCOPE V1: the registry policy may only grant these (replication and pull-through cache).
V1_REGISTRY_ACTIONS = frozenset({"ecr:replicateimage", "ecr:batchimportupstreamimage", "ecr:createrepository"})
INVALID_REPOSITORY_POLICY = (
    "Invalid parameter at 'PolicyText' failed to satisfy constraint: 'Invalid repository policy provided'"
)
INVALID_REGISTRY_POLICY = (
    "Invalid parameter at 'PolicyText' failed to satisfy constraint: 'Invalid registry policy provided'"
)


class PolicyInvalid(SokoError):
    """A policy document was rejected (ECR: InvalidParameterException with its fixed message)."""


class RepositoryPolicyNotFound(SokoError):
    pass


class RegistryPolicyNotFound(SokoError):
    pass


def validate_repository_policy(text: str) -> Policy:
    if len(text) > MAX_POLICY_CHARS:
        raise PolicyInvalid(INVALID_REPOSITORY_POLICY, detail=f"longer than {MAX_POLICY_CHARS} characters")
    try:
        return parse_policy(text, PolicyKind.RESOURCE)
    except MalformedPolicy as exc:
        raise PolicyInvalid(INVALID_REPOSITORY_POLICY, detail=exc.message) from None


def validate_registry_policy(text: str, scope: str) -> Policy:
    if len(text) > MAX_POLICY_CHARS:
        raise PolicyInvalid(INVALID_REGISTRY_POLICY, detail=f"longer than {MAX_POLICY_CHARS} characters")
    try:
        policy = parse_policy(text, PolicyKind.REGISTRY)
    except MalformedPolicy as exc:
        raise PolicyInvalid(INVALID_REGISTRY_POLICY, detail=exc.message) from None
    if scope == "V1":
        outside = sorted(a for a in policy.actions_mentioned() if a.lower() not in V1_REGISTRY_ACTIONS)
        if outside:
            raise PolicyInvalid(
                INVALID_REGISTRY_POLICY,
                detail=f"REGISTRY_POLICY_SCOPE V1 only accepts ecr:ReplicateImage, ecr:BatchImportUpstreamImage "
                f"and ecr:CreateRepository, not {', '.join(outside)}",
            )
    return policy


class Policies:
    def __init__(self, ctx: DomainContext, repositories: Repositories) -> None:
        self.ctx = ctx
        self.repositories = repositories

    # ---- repository policy -----------------------------------------------------------------------------------------
    def _repo_policy_missing(self, ref: RepoRef) -> RepositoryPolicyNotFound:
        return RepositoryPolicyNotFound(
            f"Repository policy does not exist for the repository with name '{ref.name}' in the registry with id "
            f"'{ref.account_id}'"
        )

    def repository_policy(self, ref: RepoRef) -> str:
        with self.ctx.db.read() as conn:
            repo_id = self.repositories.id_for(conn, ref)
            text = conn.execute(sa.select(repos.c.policy_text).where(repos.c.id == repo_id)).scalar()
        if not text:
            raise self._repo_policy_missing(ref)
        return text

    def set_repository_policy(self, ref: RepoRef, text: str) -> str:
        policy = validate_repository_policy(text)
        warn_unpopulated(policy, f"the repository policy of {ref.account_id}/{ref.name}", text)
        with self.ctx.write(invalidates=True) as conn:
            repo_id = self.repositories.id_for(conn, ref)
            conn.execute(sa.update(repos).where(repos.c.id == repo_id).values(policy_text=text))
        return text

    def delete_repository_policy(self, ref: RepoRef) -> str:
        with self.ctx.write(invalidates=True) as conn:
            repo_id = self.repositories.id_for(conn, ref)
            text = conn.execute(sa.select(repos.c.policy_text).where(repos.c.id == repo_id)).scalar()
            if not text:
                raise self._repo_policy_missing(ref)
            conn.execute(sa.update(repos).where(repos.c.id == repo_id).values(policy_text=None))
        return text

    # ---- registry policy -------------------------------------------------------------------------------------------
    def _registry_policy_missing(self, account_id: str) -> RegistryPolicyNotFound:
        return RegistryPolicyNotFound(f"Registry policy does not exist in the registry with id '{account_id}'")

    def registry_policy(self, account_id: str) -> str:
        with self.ctx.db.read() as conn:
            text = conn.execute(
                sa.select(registry_policies.c.policy_text).where(registry_policies.c.account_id == account_id)
            ).scalar()
        if not text:
            raise self._registry_policy_missing(account_id)
        return text

    def put_registry_policy(self, account_id: str, text: str, scope: str) -> str:
        policy = validate_registry_policy(text, scope)
        warn_unpopulated(policy, f"the registry policy of account {account_id}", text)
        with self.ctx.write(invalidates=True) as conn:
            conn.execute(
                self.ctx.db.upsert(registry_policies, ["account_id"], {"policy_text": None, "updated_at": None}).values(
                    account_id=account_id, policy_text=text, updated_at=self.ctx.clock()
                )
            )
        return text

    def delete_registry_policy(self, account_id: str) -> str:
        with self.ctx.write(invalidates=True) as conn:
            text = conn.execute(
                sa.select(registry_policies.c.policy_text).where(registry_policies.c.account_id == account_id)
            ).scalar()
            if not text:
                raise self._registry_policy_missing(account_id)
            conn.execute(sa.delete(registry_policies).where(registry_policies.c.account_id == account_id))
        return text
