"""The account's signing configuration (ECR's Put/Get/DeleteSigningConfiguration) and image signing statuses.

Shapes, lengths and patterns are botocore's model's, checked by the front end before this runs; here the rules only
Soko can judge: a signing profile must be one of this registry's account and region, since Soko's signer holds keys
for its own profiles only (there is no AWS Signer behind it to sign with another account's). Putting a configuration
makes a key for each profile it names (in the same transaction), so the trust store can be exported before the first
push. Deleting it stops signing and leaves existing signatures and keys as they are (as ECR leaves signatures).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from soko.access import Authorizer, Principal, RequestContext
from soko.errors import AccessDenied, SokoError
from soko.iam.secrets import MasterKey
from soko.kernel.context import DomainContext
from soko.meta.schema import image_signing_status, signing_configurations
from soko.signing.keys import SigningKeys

PROFILE_ARN = re.compile(r"arn:aws(?:-[a-z]+)*:signer:(?P<region>[a-z0-9-]+):(?P<account>[0-9]{12}):"
                         r"/signing-profiles/(?P<name>[a-zA-Z0-9_]{2,})")


SIGN_PAYLOAD = "signer:SignPayload"


def sign_payload_check(authorizer: Authorizer, principal: Principal,
                       context: RequestContext) -> Callable[[str], str | None]:
    """What a push passes to ``Manifests.put``: whether the pusher may sign with a profile, decided by the one
    authorizer (action ``signer:SignPayload`` on the profile's ARN, audited like every decision), as ECR's managed
    signing requires of the pusher. Returns None when allowed, else the denial's message."""

    def check(profile_arn: str) -> str | None:
        try:
            authorizer.authorize(principal, SIGN_PAYLOAD, profile_arn, profile_arn.split(":")[4], context)
        except AccessDenied as exc:
            return exc.message
        return None

    return check


class SigningConfigurationInvalid(SokoError):
    """ECR: InvalidParameterException."""


class SigningConfigurationNotFound(SokoError):
    """ECR: SigningConfigurationNotFoundException."""


@dataclass(frozen=True)
class SigningStatus:
    profile_arn: str
    status: str
    failure_code: str | None
    failure_reason: str | None
    signature_digest: str | None


def _not_found(account_id: str) -> SigningConfigurationNotFound:
    return SigningConfigurationNotFound(
        f"Signing configuration does not exist for the registry with id '{account_id}'"
    )


class SigningConfigurations:
    def __init__(self, ctx: DomainContext, master: MasterKey) -> None:
        self.ctx = ctx
        self.keys = SigningKeys(ctx, master)

    def validate(self, account_id: str, rules: list[dict]) -> list[dict]:
        region = self.ctx.settings.region
        clean = []
        for index, rule in enumerate(rules, 1):
            arn = rule["signingProfileArn"]
            match = PROFILE_ARN.fullmatch(arn)
            if match is None:  # the model's pattern is checked first; this is the same pattern, for the parts
                raise SigningConfigurationInvalid(f"Invalid parameter at 'rules.{index}.signingProfileArn': "
                                                  f"'{arn}' is not a signing profile ARN")
            if match["account"] != account_id or match["region"] != region:
                raise SigningConfigurationInvalid(
                    f"Invalid parameter at 'rules.{index}.signingProfileArn': the signing profile must be in this "
                    f"registry's account ({account_id}) and region ({region}): Soko signs with keys it holds for "
                    "its own signing profiles"
                )
            out: dict = {"signingProfileArn": arn}
            filters = rule.get("repositoryFilters")
            if filters:
                out["repositoryFilters"] = [{"filter": f["filter"], "filterType": f["filterType"]} for f in filters]
            clean.append(out)
        return clean

    def put(self, account_id: str, rules: list[dict]) -> list[dict]:
        rules = self.validate(account_id, rules)
        with self.ctx.write() as conn:
            for arn in sorted({rule["signingProfileArn"] for rule in rules}):  # (in order: ensure locks each)
                self.keys.ensure(conn, account_id, arn)
            conn.execute(
                self.ctx.db.upsert(signing_configurations, ["account_id"], {"rules": None, "updated_at": None})
                .values(account_id=account_id, rules=json.dumps(rules), updated_at=self.ctx.clock())
            )
        return rules

    def get(self, account_id: str) -> list[dict]:
        with self.ctx.db.read() as conn:
            rules = conn.execute(sa.select(signing_configurations.c.rules)
                                 .where(signing_configurations.c.account_id == account_id)).scalar()
        if rules is None:
            raise _not_found(account_id)
        return json.loads(rules)

    def delete(self, account_id: str) -> list[dict]:
        with self.ctx.write() as conn:
            rules = conn.execute(
                sa.select(signing_configurations.c.rules).where(signing_configurations.c.account_id == account_id)
            ).scalar()
            if rules is None:
                raise _not_found(account_id)
            conn.execute(sa.delete(signing_configurations).where(signing_configurations.c.account_id == account_id))
        return json.loads(rules)

    def statuses(self, repo_id: int, digest: str) -> list[SigningStatus]:
        t = image_signing_status.c
        with self.ctx.db.read() as conn:
            rows = conn.execute(
                sa.select(t.profile_arn, t.status, t.failure_code, t.failure_reason, t.signature_digest)
                .where(t.repository_id == repo_id, t.manifest_digest == digest)
                .order_by(t.id)
            ).all()
        return [SigningStatus(r.profile_arn, r.status, r.failure_code, r.failure_reason, r.signature_digest)
                for r in rows]
