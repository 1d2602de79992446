"""ECR lifecycle policies: validation (:mod:`.policy`) and evaluation (:mod:`.evaluate`). Pure Python."""

from soko.lifecycle.evaluate import (
    EXPIRE,
    TRANSITION,
    ImageRecord,
    LifecycleAction,
    LifecyclePreview,
    evaluate,
    glob_matcher,
    preview,
)
from soko.lifecycle.policy import (
    MAX_POLICY_CHARS,
    MAX_RULES,
    LifecyclePolicy,
    LifecyclePolicyError,
    Rule,
    RuleAction,
    Selection,
    invalid_parameter_message,
    parse_lifecycle_policy,
)

__all__ = [
    "EXPIRE",
    "MAX_POLICY_CHARS",
    "MAX_RULES",
    "TRANSITION",
    "ImageRecord",
    "LifecycleAction",
    "LifecyclePolicy",
    "LifecyclePolicyError",
    "LifecyclePreview",
    "Rule",
    "RuleAction",
    "Selection",
    "evaluate",
    "glob_matcher",
    "invalid_parameter_message",
    "parse_lifecycle_policy",
    "preview",
]
