"""The IAM authorizer: the ``authorize`` hook backed by the policy engine.

For a repository resource it gathers the caller's identity policies, the repository policy and the registry
policy of the repository's account, and lets the engine apply AWS's rules (explicit Deny wins; same account needs
one Allow; cross-account needs both sides). Parsed policies are cached by document text, lookups by generation.
"""

from __future__ import annotations

import re
import threading
import time

import sqlalchemy as sa

from soko.access import Principal, RequestContext
from soko.audit import AuditLog
from soko.errors import AccessDenied
from soko.iam.credentials import CredentialStore
from soko.iam.policy import (
    AuthzRequest,
    Decision,
    MalformedPolicy,
    Policy,
    PolicyKind,
    evaluate,
    evaluate_key_policy,
    parse_policy,
)
from soko.iam.policy import Principal as PolicyPrincipal
from soko.kernel.context import DomainContext
from soko.meta.schema import registry_policies, repositories, repository_tags


def policy_principal(principal: Principal) -> PolicyPrincipal:
    """The policy engine's view of an authenticated caller."""
    return PolicyPrincipal(
        arn=principal.arn,
        account=principal.account_id,
        type=principal.type,
        user_id=principal.user_id,
        username=principal.username,
        role_arn=principal.role_arn,
        tags=principal.tags,
        token_issued_at=principal.token_issued_at,
    )


_IAM_PRINCIPAL_ARN = re.compile(r"arn:aws:iam::(\d{12}):(user|role)/(?:.*/)?([^/]+)")


def requested_region(action: str, region: str) -> str:
    """aws:RequestedRegion: IAM is a global service answered from us-east-1; everything else is this region."""
    return "us-east-1" if action[:4].lower() == "iam:" else region


def _hashable(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


def _reads_clock(policy_text: str) -> bool:
    lowered = policy_text.lower()
    return "aws:currenttime" in lowered or "aws:epochtime" in lowered


class _ParsedPolicies:
    def __init__(self) -> None:
        self._items: dict[tuple[str, PolicyKind], Policy | None] = {}
        self._lock = threading.Lock()

    def get(self, text: str, kind: PolicyKind) -> Policy | None:
        key = (text, kind)
        if key in self._items:
            return self._items[key]
        try:
            policy: Policy | None = parse_policy(text, kind)
        except MalformedPolicy:
            policy = None  # stored documents were validated on write; an unparsable one grants nothing
        with self._lock:
            if len(self._items) > 4096:
                self._items.clear()
            self._items[key] = policy
        return policy


class IamAuthorizer:
    def __init__(self, ctx: DomainContext, credentials: CredentialStore, audit: AuditLog) -> None:
        self.ctx = ctx
        self.credentials = credentials
        self.audit = audit
        self._parsed = _ParsedPolicies()
        # (account, repository) -> (generation, [repository policy, registry policy], repository tags)
        self._resource_cache: dict[tuple[str, str], tuple[int, list[str], dict[str, str]]] = {}
        # Decisions for identical requests, valid for one metadata generation. Only used when no policy involved
        # reads the clock (aws:CurrentTime / aws:EpochTime), so the answer depends on nothing outside the key.
        self._decisions: dict[tuple, tuple[int, Decision]] = {}

    def authorize(
        self,
        principal: Principal,
        action: str,
        resource_arn: str,
        resource_account: str | None,
        context: RequestContext,
    ) -> None:
        decision = self.decide(principal, action, resource_arn, resource_account, context)
        self.audit.record(
            "authz",
            principal.arn,
            action,
            resource_arn,
            "allow" if decision.allowed else "deny",
            decision.reason,
            context,
        )
        if not decision.allowed:
            raise AccessDenied(
                f"User: {principal.arn} is not authorized to perform: {action} on resource: {resource_arn} "
                f"because {decision.reason}"
            )

    def authorize_key(
        self,
        principal: Principal,
        action: str,
        key_arn: str,
        key_account: str,
        key_policy: str,
        context: RequestContext,
        condition_keys: dict | None = None,
    ) -> None:
        """A KMS request on a key: its key policy and the caller's identity policies under KMS's rules
        (``evaluate_key_policy``); audited like ``authorize``, AccessDenied when refused."""
        identity = [
            p
            for p in (self._parsed.get(t, PolicyKind.IDENTITY) for t in self.credentials.identity_policies(principal))
            if p is not None
        ]
        keys = self.condition_keys(context, action, key_arn, key_account)
        keys.update(condition_keys or {})
        request = AuthzRequest(policy_principal(principal), action, key_arn, key_account, keys)
        decision = evaluate_key_policy(
            request, key_policy=self._parsed.get(key_policy, PolicyKind.KEY), identity_policies=identity
        )
        allowed = "allow" if decision.allowed else "deny"
        self.audit.record("authz", principal.arn, action, key_arn, allowed, decision.reason, context)
        if not decision.allowed:
            raise AccessDenied(
                f"User: {principal.arn} is not authorized to perform: {action} on resource: {key_arn} "
                f"because {decision.reason}"
            )

    def cached(
        self,
        principal: Principal,
        action: str,
        resource_arn: str,
        resource_account: str | None,
        context: RequestContext,
    ) -> bool:
        """Whether ``authorize`` would answer from this process's decision cache (no database read)."""
        hit = self._decisions.get(self._decision_key(principal, action, resource_arn, resource_account, context))
        return hit is not None and hit[0] == self.ctx.generation.current()

    @staticmethod
    def _decision_key(
        principal: Principal,
        action: str,
        resource_arn: str,
        resource_account: str | None,
        context: RequestContext,
    ) -> tuple:
        # Everything the decision can depend on: two sessions of one role share an ARN but not their issue time
        # (aws:TokenIssueTime, how sessions are revoked) or, after a tag change, their tags. The user agent goes in
        # hashed, so a caller cannot fill the cache with long strings.
        return (
            principal.arn,
            principal.token_issued_at,
            principal.tags,
            action,
            resource_arn,
            resource_account,
            context.source_ip,
            context.endpoint,
            context.secure_transport,
            hash(context.user_agent),
            tuple(sorted((k, _hashable(v)) for k, v in context.extra.get("condition_keys", {}).items())),
        )

    def decide(
        self,
        principal: Principal,
        action: str,
        resource_arn: str,
        resource_account: str | None,
        context: RequestContext,
    ) -> Decision:
        generation = self.ctx.generation.current()
        key = self._decision_key(principal, action, resource_arn, resource_account, context)
        hit = self._decisions.get(key)
        if hit is not None and hit[0] == generation:
            return hit[1]
        identity_texts = self.credentials.identity_policies(principal)
        identity = [p for p in (self._parsed.get(t, PolicyKind.IDENTITY) for t in identity_texts) if p is not None]
        resource: list[Policy] = []
        resource_texts: list[str] = []
        repo = self._repository_of(resource_arn, resource_account)
        if repo is not None:
            for text, kind in self._resource_policies(*repo):
                resource_texts.append(text)
                parsed = self._parsed.get(text, kind)
                if parsed is not None:
                    resource.append(parsed)
        request = AuthzRequest(
            principal=policy_principal(principal),
            action=action,
            resource=resource_arn,
            resource_account=resource_account,
            context=self.condition_keys(context, action, resource_arn, resource_account),
        )
        decision = evaluate(request, identity_policies=identity, resource_policies=resource)
        if not any(_reads_clock(t) for t in (*identity_texts, *resource_texts)):
            if len(self._decisions) > 50_000:
                self._decisions.clear()
            self._decisions[key] = (generation, decision)
        return decision

    def condition_keys(
        self,
        context: RequestContext,
        action: str = "",
        resource_arn: str = "*",
        resource_account: str | None = None,
    ) -> dict:
        """The global condition keys of a request (docs/iam-conditions.md); the principal's own keys
        (aws:PrincipalArn, aws:PrincipalTag/...) are derived from the principal by the policy engine."""
        keys: dict = {
            "aws:SecureTransport": context.secure_transport,
            "aws:CurrentTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "aws:EpochTime": int(time.time()),
            "aws:RequestedRegion": requested_region(action, self.ctx.settings.region),
            "aws:ViaAWSService": False,  # no AWS service calls Soko on a principal's behalf
        }
        if context.user_agent:
            keys["aws:UserAgent"] = context.user_agent
        if context.endpoint == "public":
            keys["aws:SourceIp"] = context.source_ip
        else:  # AWS: through a VPC endpoint the caller's address is aws:VpcSourceIp, and aws:SourceIp is absent
            keys["aws:SourceVpce"] = context.endpoint
            keys["aws:VpcSourceIp"] = context.source_ip
        if resource_account and resource_arn != "*":
            keys["aws:ResourceAccount"] = resource_account
        repo = self._repository_of(resource_arn, resource_account)
        if repo is not None:
            for tag, value in self._resource_state(*repo)[1].items():
                keys[f"aws:ResourceTag/{tag}"] = value
                keys[f"ecr:ResourceTag/{tag}"] = value
        elif resource_arn.startswith("arn:aws:iam::"):
            m = _IAM_PRINCIPAL_ARN.fullmatch(resource_arn)
            if m is not None:
                for tag, value in self.credentials.principal_tags(*m.groups()):
                    keys[f"aws:ResourceTag/{tag}"] = value
                    keys[f"iam:ResourceTag/{tag}"] = value
        keys.update(context.extra.get("condition_keys", {}))
        return keys

    @staticmethod
    def _repository_of(resource_arn: str, resource_account: str | None) -> tuple[str, str] | None:
        if resource_account and ":repository/" in resource_arn:
            return resource_account, resource_arn.split(":repository/", 1)[1]
        return None

    def _resource_state(self, account_id: str, repo_name: str) -> tuple[list[str], dict[str, str]]:
        """The repository's and registry's policy texts and the repository's tags, cached per generation."""
        key = (account_id, repo_name)
        generation = self.ctx.generation.current()
        hit = self._resource_cache.get(key)
        if hit is not None and hit[0] == generation:
            return hit[1], hit[2]
        with self.ctx.db.read() as conn:
            repo = conn.execute(
                sa.select(repositories.c.id, repositories.c.policy_text).where(
                    repositories.c.account_id == account_id, repositories.c.name == repo_name
                )
            ).first()
            registry_policy = conn.execute(
                sa.select(registry_policies.c.policy_text).where(registry_policies.c.account_id == account_id)
            ).scalar()
            tags: dict[str, str] = {}
            if repo is not None:
                rows = conn.execute(
                    sa.select(repository_tags.c.key, repository_tags.c.value).where(
                        repository_tags.c.repository_id == repo.id
                    )
                )
                tags = {k: v for k, v in rows}
        texts = [(repo.policy_text if repo is not None else None) or "", registry_policy or ""]
        if len(self._resource_cache) > 10_000:
            self._resource_cache.clear()
        self._resource_cache[key] = (generation, texts, tags)
        return texts, tags

    def _resource_policies(self, account_id: str, repo_name: str) -> list[tuple[str, PolicyKind]]:
        texts = self._resource_state(account_id, repo_name)[0]
        result = []
        if texts[0]:
            result.append((texts[0], PolicyKind.RESOURCE))
        if texts[1]:
            result.append((texts[1], PolicyKind.REGISTRY))
        return result
