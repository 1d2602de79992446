"""ECR lifecycle policy model and validation.

Schema-level messages reuse the wording ECR returns (it validates with a JSON-schema library, so clients see
e.g. ``object has missing required properties (["rules"])``); cross-rule checks that the schema cannot
express get plain sentences in the same style. The ECR front end wraps every message with
:func:`invalid_parameter_message`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_POLICY_CHARS = 30_720
MAX_RULES = 50
MAX_WILDCARDS = 4
# ECR maps integers onto Java ints; anything larger cannot be stored, so refuse it up front.
MAX_INT = 2**31 - 1
# AWS bills archive for 90 days and refuses rules that would delete archived images sooner.
MIN_ARCHIVE_DAYS = 90

TAG_STATUSES = ("tagged", "untagged", "any")
COUNT_TYPES = ("imageCountMoreThan", "sinceImagePushed", "sinceImagePulled", "sinceImageTransitioned")
SINCE_COUNT_TYPES = frozenset(COUNT_TYPES[1:])
COUNT_UNITS = ("days",)
STORAGE_CLASSES = ("standard", "archive")
ACTION_TYPES = ("expire", "transition")
TARGET_STORAGE_CLASSES = ("archive",)

_POLICY_KEYS = ("rules",)
_RULE_KEYS = ("rulePriority", "description", "selection", "action")
_SELECTION_KEYS = (
    "tagStatus",
    "tagPrefixList",
    "tagPatternList",
    "countType",
    "countUnit",
    "countNumber",
    "storageClass",
)
_ACTION_KEYS = ("type", "targetStorageClass")
_UNMAPPABLE = "Could not map policyString into LifecyclePolicy."


class LifecyclePolicyError(ValueError):
    """A lifecycle policy failed validation; ``message`` is the ECR-style detail."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def ecr_message(self) -> str:
        return invalid_parameter_message(self.message)


def invalid_parameter_message(detail: str) -> str:
    """The full InvalidParameterException message ECR sends for a rejected lifecycle policy."""
    return (
        "Invalid parameter at 'LifecyclePolicyText' failed to satisfy constraint: "
        f"'Lifecycle policy validation failure: {detail}'"
    )


@dataclass(frozen=True)
class Selection:
    tag_status: str
    count_type: str
    count_number: int
    count_unit: str | None = None
    tag_prefix_list: tuple[str, ...] = ()
    tag_pattern_list: tuple[str, ...] = ()
    storage_class: str = "standard"


@dataclass(frozen=True)
class RuleAction:
    type: str  # "expire" | "transition"
    target_storage_class: str | None = None


@dataclass(frozen=True)
class Rule:
    rule_priority: int
    selection: Selection
    action: RuleAction
    description: str | None = None


@dataclass(frozen=True)
class LifecyclePolicy:
    rules: tuple[Rule, ...]  # sorted by rule_priority, lowest (applied first) first


# --- JSON-schema style checks ------------------------------------------------------------------------------


def _json_type(value: Any) -> str:
    # The primitive type names JSON schema (and so ECR's messages) use.
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _expect(value: Any, json_type: str) -> None:
    if _json_type(value) != json_type:
        raise LifecyclePolicyError(
            f'instance type ({_json_type(value)}) does not match any allowed primitive type (allowed: ["{json_type}"])'
        )


def _object(value: Any, allowed: tuple[str, ...], required: tuple[str, ...]) -> dict[str, Any]:
    _expect(value, "object")
    unknown = sorted(k for k in value if k not in allowed)
    if unknown:
        raise LifecyclePolicyError(
            f"object instance has properties which are not allowed by the schema: {_json_list(unknown)}"
        )
    missing = sorted(k for k in required if k not in value)
    if missing:
        raise LifecyclePolicyError(f"object has missing required properties ({_json_list(missing)})")
    return value


def _json_list(items: list[str] | tuple[str, ...]) -> str:
    return json.dumps(list(items), separators=(",", ":"))


def _integer(value: Any, minimum: int) -> int:
    _expect(value, "integer")
    if value < minimum:
        raise _below_minimum(minimum, value)
    if value > MAX_INT:
        raise LifecyclePolicyError(
            f"numeric instance is greater than the required maximum (maximum: {MAX_INT}, found: {value})"
        )
    return value


def _below_minimum(minimum: int, found: int) -> LifecyclePolicyError:
    return LifecyclePolicyError(
        f"numeric instance is lower than the required minimum (minimum: {minimum}, found: {found})"
    )


def _enum(value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed or not isinstance(value, str):
        shown = json.dumps(value) if isinstance(value, str | int | bool) or value is None else _json_type(value)
        raise LifecyclePolicyError(
            f"instance value ({shown}) not found in enum (possible values: {_json_list(allowed)})"
        )
    return value


def _string_list(value: Any) -> tuple[str, ...]:
    _expect(value, "array")
    if not value:
        raise LifecyclePolicyError("array is too short: must have at least 1 elements but instance has 0 elements")
    for item in value:
        _expect(item, "string")
        if not item:
            raise LifecyclePolicyError('string "" is too short (length: 0, required minimum: 1)')
    if len(set(value)) != len(value):
        raise LifecyclePolicyError("array must not contain duplicate elements")
    return tuple(value)


# --- parsing -----------------------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    # json accepts NaN/Infinity by default; they are not JSON and ECR refuses them.
    raise LifecyclePolicyError(_UNMAPPABLE)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A repeated key would let two readers of the same text disagree about what it says.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise LifecyclePolicyError(f'{_UNMAPPABLE} Duplicate field "{key}"')
        result[key] = value
    return result


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # e.g. 1e999
        raise LifecyclePolicyError(_UNMAPPABLE)
    return value


def _load_json(text: str) -> Any:
    try:
        return json.loads(
            text,
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_reject_constant,
            parse_float=_parse_float,
        )
    except LifecyclePolicyError:
        raise
    # RecursionError: deeply nested arrays/objects; ValueError: bad JSON or an int too long to convert.
    except (ValueError, RecursionError, MemoryError) as exc:
        raise LifecyclePolicyError(_UNMAPPABLE) from exc


def parse_lifecycle_policy(text: str, *, ecr_strict: bool = False) -> LifecyclePolicy:
    """Parse and validate lifecycle policy text; raises :class:`LifecyclePolicyError` and nothing else.

    ``ecr_strict`` (the ``lifecycle_ecr_strict`` setting) refuses, besides what ECR refuses, Soko's extension
    (``sinceImagePulled`` with ``expire``) and what ECR may refuse (tag prefix lists of one storage class sharing a
    prefix), so a policy that passes applies unchanged on ECR."""
    if not isinstance(text, str):
        raise LifecyclePolicyError(_UNMAPPABLE)
    if len(text) > MAX_POLICY_CHARS:
        raise LifecyclePolicyError(f"string is too long (length: {len(text)}, maximum allowed: {MAX_POLICY_CHARS})")
    doc = _object(_load_json(text), _POLICY_KEYS, _POLICY_KEYS)
    raw_rules = doc["rules"]
    _expect(raw_rules, "array")
    if not raw_rules:
        raise LifecyclePolicyError("array is too short: must have at least 1 elements but instance has 0 elements")
    if len(raw_rules) > MAX_RULES:
        raise LifecyclePolicyError(
            f"array is too long: must have at most {MAX_RULES} elements but instance has {len(raw_rules)} elements"
        )
    rules = sorted((_parse_rule(raw, ecr_strict) for raw in raw_rules), key=lambda r: r.rule_priority)
    _check_rule_set(rules, ecr_strict)
    return LifecyclePolicy(tuple(rules))


def _parse_rule(raw: Any, ecr_strict: bool = False) -> Rule:
    obj = _object(raw, _RULE_KEYS, ("rulePriority", "selection", "action"))
    priority = _integer(obj["rulePriority"], 1)
    description = obj.get("description")
    if "description" in obj:
        _expect(description, "string")
    selection = _parse_selection(obj["selection"])
    action = _parse_action(obj["action"])
    _check_rule(selection, action, ecr_strict)
    return Rule(priority, selection, action, description)


def _parse_selection(raw: Any) -> Selection:
    obj = _object(raw, _SELECTION_KEYS, ("tagStatus", "countType", "countNumber"))
    tag_status = _enum(obj["tagStatus"], TAG_STATUSES)
    count_type = _enum(obj["countType"], COUNT_TYPES)
    _expect(obj["countNumber"], "integer")
    if obj["countNumber"] < 1:  # ECR's schema message does not say which number; this one does
        raise LifecyclePolicyError(f"countNumber must be at least 1: {_below_minimum(1, obj['countNumber']).message}")
    count_number = _integer(obj["countNumber"], 1)
    prefixes = _string_list(obj["tagPrefixList"]) if "tagPrefixList" in obj else None
    patterns = _string_list(obj["tagPatternList"]) if "tagPatternList" in obj else None
    count_unit = _enum(obj["countUnit"], COUNT_UNITS) if "countUnit" in obj else None
    storage_class = _enum(obj["storageClass"], STORAGE_CLASSES) if "storageClass" in obj else None

    if tag_status == "tagged":
        if prefixes is not None and patterns is not None:
            raise LifecyclePolicyError("A rule may specify either tagPatternList or tagPrefixList, but not both")
        if prefixes is None and patterns is None:
            raise LifecyclePolicyError('A rule with tagStatus "tagged" requires a tagPrefixList or a tagPatternList')
    elif prefixes is not None or patterns is not None:
        raise LifecyclePolicyError('tagPrefixList and tagPatternList may only be used when tagStatus is "tagged"')
    for pattern in patterns or ():
        if pattern.count("*") > MAX_WILDCARDS:
            raise LifecyclePolicyError(
                f'tagPatternList entry "{pattern}" has {pattern.count("*")} wildcards; '
                f"at most {MAX_WILDCARDS} are allowed per pattern"
            )

    if count_type in SINCE_COUNT_TYPES and count_unit is None:
        raise LifecyclePolicyError(f'countUnit is required when countType is "{count_type}"')
    if count_type == "imageCountMoreThan" and count_unit is not None:
        raise LifecyclePolicyError('countUnit must not be specified when countType is "imageCountMoreThan"')
    if count_type == "sinceImageTransitioned":
        if storage_class != "archive":
            raise LifecyclePolicyError('countType "sinceImageTransitioned" requires storageClass "archive"')
        if count_number < MIN_ARCHIVE_DAYS:
            raise LifecyclePolicyError(
                f'countNumber must be at least {MIN_ARCHIVE_DAYS} with countType "sinceImageTransitioned" (archived '
                f"images are kept at least {MIN_ARCHIVE_DAYS} days): "
                + _below_minimum(MIN_ARCHIVE_DAYS, count_number).message
            )
    elif storage_class == "archive":
        raise LifecyclePolicyError('storageClass "archive" may only be used with countType "sinceImageTransitioned"')

    return Selection(
        tag_status=tag_status,
        count_type=count_type,
        count_number=count_number,
        count_unit=count_unit,
        tag_prefix_list=prefixes or (),
        tag_pattern_list=patterns or (),
        storage_class=storage_class or "standard",
    )


def _parse_action(raw: Any) -> RuleAction:
    obj = _object(raw, _ACTION_KEYS, ("type",))
    action_type = _enum(obj["type"], ACTION_TYPES)
    target = _enum(obj["targetStorageClass"], TARGET_STORAGE_CLASSES) if "targetStorageClass" in obj else None
    if action_type == "transition" and target is None:
        raise LifecyclePolicyError('targetStorageClass is required when the action type is "transition"')
    if action_type == "expire" and target is not None:
        raise LifecyclePolicyError('targetStorageClass may only be specified when the action type is "transition"')
    return RuleAction(action_type, target)


def _check_rule(selection: Selection, action: RuleAction, ecr_strict: bool = False) -> None:
    # Archived images can only be expired (there is nowhere further to transition them).
    if selection.count_type == "sinceImageTransitioned" and action.type != "expire":
        raise LifecyclePolicyError('countType "sinceImageTransitioned" may only be used with action type "expire"')
    # sinceImagePulled: ECR allows only "transition"; Soko also allows "expire" (aws/containers-roadmap#921), an
    # extension the lifecycle_ecr_strict setting refuses.
    if ecr_strict and selection.count_type == "sinceImagePulled" and action.type != "transition":
        raise LifecyclePolicyError(
            'countType "sinceImagePulled" may only be used with action type "transition" on ECR (expiring by pull '
            "time is a Soko extension, refused because lifecycle_ecr_strict is set)"
        )


def _check_rule_set(rules: list[Rule], ecr_strict: bool = False) -> None:
    """Cross-rule constraints; ``rules`` is sorted by priority."""
    seen: set[int] = set()
    for rule in rules:
        if rule.rule_priority in seen:
            raise LifecyclePolicyError(f"rulePriority {rule.rule_priority} is used by more than one rule")
        seen.add(rule.rule_priority)
    # AWS scopes these per storage class: its own "archive then expire" example has an "any" rule for each
    # storage class, at priorities 1 and 2.
    for storage_class in STORAGE_CLASSES:
        scoped = [r for r in rules if r.selection.storage_class == storage_class]
        _check_scoped(scoped, storage_class, ecr_strict)


def _check_scoped(rules: list[Rule], storage_class: str, ecr_strict: bool = False) -> None:
    def first(pred: Callable[[Rule], bool]) -> list[Rule]:
        return [r for r in rules if pred(r)]

    any_rules = first(lambda r: r.selection.tag_status == "any")
    if any_rules and (len(any_rules) > 1 or any_rules[0] is not rules[-1]):
        raise LifecyclePolicyError('The rule with tagStatus "any" must have the highest rulePriority')
    if len(first(lambda r: r.selection.tag_status == "untagged")) > 1:
        raise LifecyclePolicyError(
            f'Only one rule selecting storageClass "{storage_class}" may have tagStatus "untagged"'
        )
    prefix_sets: set[frozenset[str]] = set()
    for rule in first(lambda r: bool(r.selection.tag_prefix_list)):
        key = frozenset(rule.selection.tag_prefix_list)
        if key in prefix_sets:
            raise LifecyclePolicyError(
                f'Rules selecting storageClass "{storage_class}" must use unique tag prefixes: '
                f"{_json_list(sorted(key))} appears in more than one rule"
            )
        prefix_sets.add(key)
    if ecr_strict:
        # AWS documents only that prefixes be unique per storage class; whether ECR's validator refuses two lists
        # sharing one prefix is not documented, so the strict setting refuses that too.
        seen: dict[str, int] = {}
        for rule in first(lambda r: bool(r.selection.tag_prefix_list)):
            for prefix in rule.selection.tag_prefix_list:
                if prefix in seen:
                    raise LifecyclePolicyError(
                        f'Rules selecting storageClass "{storage_class}" must use unique tag prefixes: "{prefix}" '
                        f"appears in rules {seen[prefix]} and {rule.rule_priority} (refused because "
                        "lifecycle_ecr_strict is set)"
                    )
                seen[prefix] = rule.rule_priority
