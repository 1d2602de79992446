"""Which condition keys Soko puts in a request's context, and a warning for policies that test any other key.

A condition on a key the request does not carry follows AWS's absent-key rule (conditions.py): false for positive
operators, true for negated ones, `...IfExists` and `ForAllValues:`, and Null tests presence. For keys AWS would
populate but Soko cannot know (organizations, service-to-service calls, MFA) that rule is the honest answer, but it
can surprise whoever wrote the policy, so storing such a policy logs a warning. docs/iam-conditions.md lists
these keys and when each is present.
"""

from __future__ import annotations

import logging
import re

from soko.iam.policy.document import Policy

log = logging.getLogger("soko.iam.policy")

# kms: keys the KMS service (soko.kms.service) sets; a key policy testing any other kms: key is refused there.
KMS_POPULATED: frozenset[str] = frozenset(
    {
        "kms:viaservice",
        "kms:calleraccount",
        "kms:encryptioncontextkeys",
        "kms:encryptionalgorithm",
        "kms:keyorigin",
        "kms:keyspec",
        "kms:keyusage",
        "kms:multiregion",
        "kms:grantisforawsresource",
        "kms:requestalias",
        "kms:schedulekeydeletionpendingwindowindays",
        "kms:rotationperiodindays",
    }
)
# Keys Soko sets (lower case). Some are present only for some requests, as in AWS (aws:username for IAM users,
# aws:TokenIssueTime for temporary credentials, aws:SourceIp on the public listener, aws:SourceVpce and
# aws:VpcSourceIp on private endpoints, aws:RequestTag/aws:TagKeys on tagging requests).
POPULATED: frozenset[str] = KMS_POPULATED | frozenset(
    {
        "aws:currenttime",
        "aws:epochtime",
        "aws:securetransport",
        "aws:sourceip",
        "aws:vpcsourceip",
        "aws:sourcevpce",
        "aws:principalaccount",
        "aws:principalarn",
        "aws:principaltype",
        "aws:principalisawsservice",
        "aws:principalservicename",
        "aws:userid",
        "aws:username",
        "aws:viaawsservice",
        "aws:requestedregion",
        "aws:resourceaccount",
        "aws:tagkeys",
        "aws:useragent",
        "aws:multifactorauthpresent",
        "aws:tokenissuetime",
        "iam:policyarn",
        "sts:rolesessionname",
        "sts:externalid",
        "sts:sourceidentity",
    }
)
POPULATED_PREFIXES: tuple[str, ...] = (
    "aws:resourcetag/",
    "ecr:resourcetag/",
    "iam:resourcetag/",
    "aws:requesttag/",
    "aws:principaltag/",
    "kms:encryptioncontext:",
)

_VARIABLE = re.compile(r"\$\{\s*([^},\s]+)")


def request_tag_keys(tags: list[dict] | None = None, keys: list[str] | None = None) -> dict:
    """aws:RequestTag/<key> for each tag a request sets and aws:TagKeys for the keys it sets or removes."""
    out: dict = {f"aws:RequestTag/{t['Key']}": t["Value"] for t in tags or [] if "Key" in t and "Value" in t}
    names = [t["Key"] for t in tags or [] if "Key" in t] if keys is None else list(keys)
    if names:
        out["aws:TagKeys"] = names
    return out


def is_populated(key: str) -> bool:
    key = key.lower()
    return key in POPULATED or (key.startswith(POPULATED_PREFIXES) and key.partition("/")[2] != "")


def unpopulated_keys(policy: Policy, text: str | None = None) -> list[str]:
    """Condition keys (and policy-variable keys in ``text``) the policy tests that Soko never puts in a request."""
    found: dict[str, str] = {}
    for st in policy.statements:
        for clause in st.conditions:
            found.setdefault(clause.key, clause.key)
    if text and policy.version == "2012-10-17":
        for m in _VARIABLE.finditer(text):
            key = m.group(1)
            if key not in ("*", "?", "$"):
                found.setdefault(key.lower(), key)
    return sorted(v for k, v in found.items() if not is_populated(k))


def warn_unpopulated(policy: Policy, what: str, text: str | None = None) -> list[str]:
    """Log (once per store) the keys of ``policy`` Soko never populates; returns them."""
    keys = unpopulated_keys(policy, text)
    if keys:
        log.warning(
            "%s tests condition keys this registry never puts in a request: %s. A condition on a key the request "
            "does not carry follows AWS's rule for absent keys (false, except negated operators, ...IfExists, "
            "ForAllValues and Null); check the policy does what you mean (supported keys: docs/iam-conditions.md)",
            what,
            ", ".join(keys),
        )
    return keys
