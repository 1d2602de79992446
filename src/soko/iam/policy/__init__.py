"""The IAM policy language and evaluator: one engine for identity, repository, registry and trust policies.

Pure: no I/O. Callers parse each stored document once (parse_policy), cache the Policy, and call evaluate() per
request.
"""

from soko.iam.policy.document import Policy, Statement, parse_policy, parse_policy_document
from soko.iam.policy.evaluate import evaluate, evaluate_key_policy, evaluate_trust
from soko.iam.policy.model import AuthzRequest, Decision, MalformedPolicy, PolicyKind, Principal

__all__ = [
    "AuthzRequest",
    "Decision",
    "MalformedPolicy",
    "Policy",
    "PolicyKind",
    "Principal",
    "Statement",
    "evaluate",
    "evaluate_key_policy",
    "evaluate_trust",
    "parse_policy",
    "parse_policy_document",
]
