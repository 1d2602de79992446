"""Request validation against botocore's service models (the same models boto3 and the aws cli are built from).

`validate_request` does what the AWS front door does before an operation runs: decode the wire types (blobs
from base64, timestamps from epoch seconds), reject wrong JSON types (`SerializationException`) and report
constraint violations (required, length, range, enum, pattern) in AWS's words. Unknown members are dropped, as
AWS JSON services ignore them (forward compatibility), and JSON `null` counts as absent.
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
import re
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import botocore.session
from botocore.model import OperationNotFoundError, ServiceModel, Shape

from soko.aws.errors import InvalidRequest

__all__ = ["InvalidRequest", "get_service_model", "validate_params", "validate_request"]

# Members ECR checks itself (service-level wording, InvalidParameterException "Invalid parameter at …") rather than
# through the framework's "1 validation error detected: …" (which it uses for, e.g., ListImages' tagStatus).
_ECR_CHECKED_ENUMS = frozenset({"imageTagMutability"})
_INT_BOUNDS = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


@functools.cache
def _session() -> botocore.session.Session:
    return botocore.session.get_session()


@functools.cache
def get_service_model(service: str = "ecr") -> ServiceModel:
    """botocore's model for `service`, loaded once per process."""
    return _session().get_service_model(service)


@functools.cache
def _matcher(pattern: str) -> Callable[[str], bool]:
    """Full-string match like Java's `matches()`; models use Java regexes, so translate `[\\p{L}...]+` classes."""
    try:
        compiled = re.compile(pattern)
        return lambda s: compiled.fullmatch(s) is not None
    except re.error:
        pass
    categories = tuple(re.findall(r"\\p\{(\w+)\}", pattern))
    m = re.fullmatch(r"\[(.*)\]([+*])", re.sub(r"\\p\{\w+\}", "", pattern))
    if m is None:
        return lambda s: True  # a Java-only construct we cannot translate: accept rather than guess
    rest = re.compile(f"[{m.group(1)}]")
    plus = m.group(2) == "+"

    def match(s: str) -> bool:
        if plus and not s:
            return False
        return all(rest.fullmatch(c) or unicodedata.category(c).startswith(categories) for c in s)

    return match


def _member_path(parent: str, name: str) -> str:
    # AWS reports member paths with a lower-case first letter (IAM's UserName -> 'userName').
    name = name[:1].lower() + name[1:]
    return f"{parent}.{name}" if parent else name


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_show(v)}" for k, v in value.items()) + "}"
    return str(value)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "BOOLEAN_VALUE"
    if isinstance(value, int | float):
        return "NUMBER_VALUE"
    return "STRING_VALUE"


def _type_error(value: Any, type_name: str) -> InvalidRequest:
    """Wrong JSON type: AWS rejects these while deserialising, before any constraint is looked at."""
    if isinstance(value, dict):
        message = "Start of structure or map found where not expected."
    elif isinstance(value, list):
        message = "Start of list found where not expected"
    else:
        target = type_name.capitalize()
        article = "an" if target[0] in "AEIOU" else "a"
        message = f"{_kind(value)} can not be converted to {article} {target}"
    return InvalidRequest("SerializationException", message)


class _Validator:
    """One walk over the params: decode, type check, collect constraint violations."""

    def __init__(self, *, json_wire: bool, pattern_style: str) -> None:
        self.json_wire = json_wire  # blobs/timestamps still in their JSON encodings
        self.pattern_style = pattern_style  # "ecr" (service-level wording) or "coral" (framework wording)
        self.violations: list[str] = []
        self.pattern_violations: list[str] = []

    def fail(self, path: str, value: Any, shape: Shape, constraint: str) -> None:
        shown = "" if shape.metadata.get("sensitive") or shape.type_name == "blob" else f" '{_show(value)}'"
        if value is None:
            shown = " null"
        self.violations.append(f"Value{shown} at '{path}' failed to satisfy constraint: {constraint}")

    def check_length(self, path: str, value: Any, size: int, shape: Shape) -> bool:
        lo, hi = shape.metadata.get("min"), shape.metadata.get("max")
        if lo is not None and size < lo:
            self.fail(path, value, shape, f"Member must have length greater than or equal to {lo}")
            return False
        if hi is not None and size > hi:
            self.fail(path, value, shape, f"Member must have length less than or equal to {hi}")
            return False
        return True

    def walk(self, value: Any, shape: Shape, path: str) -> Any:
        return getattr(self, f"_{shape.type_name}", self._unsupported)(value, shape, path)

    def _unsupported(self, value: Any, shape: Shape, path: str) -> Any:
        return value  # document shapes and the like: pass through untouched

    def _structure(self, value: Any, shape: Shape, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _type_error(value, "structure")
        out: dict[str, Any] = {}
        required = set(shape.required_members)
        for name, member in shape.members.items():
            wire = member.serialization.get("name", name)
            raw = value.get(wire)
            if raw is None:
                if name in required:
                    self.fail(_member_path(path, name), None, member, "Member must not be null")
                continue
            out[name] = self.walk(raw, member, _member_path(path, name))
        return out

    def _list(self, value: Any, shape: Shape, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise _type_error(value, "list")
        self.check_length(path, value, len(value), shape)
        out = []
        for i, item in enumerate(value, start=1):
            item_path = f"{path}.{i}.member"
            if item is None:
                self.fail(item_path, None, shape.member, "Member must not be null")
                continue
            out.append(self.walk(item, shape.member, item_path))
        return out

    def _map(self, value: Any, shape: Shape, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _type_error(value, "map")
        self.check_length(path, value, len(value), shape)
        out = {}
        for key, item in value.items():
            self.walk(key, shape.key, f"{path}.key")
            if item is None:
                self.fail(f"{path}.{key}", None, shape.value, "Member must not be null")
                continue
            out[key] = self.walk(item, shape.value, f"{path}.{key}")
        return out

    def _string(self, value: Any, shape: Shape, path: str) -> str:
        if not isinstance(value, str):
            raise _type_error(value, "string")
        # Length before pattern: it bounds the regex's work on hostile input.
        if not self.check_length(path, value, len(value), shape):
            return value
        enum = shape.metadata.get("enum")
        if enum and value not in enum:
            constraint = f"Member must satisfy enum value set: [{', '.join(enum)}]"
            if self.pattern_style == "ecr" and path.rpartition(".")[2] in _ECR_CHECKED_ENUMS:
                self.pattern_violations.append(
                    f"Invalid parameter at '{path}' failed to satisfy constraint: '{constraint}'"
                )
            else:
                self.fail(path, value, shape, constraint)
        pattern = shape.metadata.get("pattern")
        if pattern and not _matcher(pattern)(value):
            if self.pattern_style == "ecr":
                self.pattern_violations.append(
                    f"Invalid parameter at '{path}' failed to satisfy constraint: "
                    f"'must satisfy regular expression '{pattern}''"
                )
            else:
                self.fail(path, value, shape, f"Member must satisfy regular expression pattern: {pattern}")
        return value

    def _number(self, value: Any, shape: Shape, path: str) -> int | float:
        lo, hi = shape.metadata.get("min"), shape.metadata.get("max")
        if lo is not None and value < lo:
            self.fail(path, value, shape, f"Member must have value greater than or equal to {lo}")
        elif hi is not None and value > hi:
            self.fail(path, value, shape, f"Member must have value less than or equal to {hi}")
        return value

    def _integer(self, value: Any, shape: Shape, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(value, shape.type_name)
        lo, hi = _INT_BOUNDS[shape.type_name]
        if not lo <= value <= hi:
            raise _type_error(value, shape.type_name)  # out of the wire type's range
        return int(self._number(value, shape, path))

    _long = _integer

    def _double(self, value: Any, shape: Shape, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise _type_error(value, shape.type_name)
        return float(self._number(value, shape, path))

    _float = _double

    def _boolean(self, value: Any, shape: Shape, path: str) -> bool:
        if not isinstance(value, bool):
            raise _type_error(value, "boolean")
        return value

    def _blob(self, value: Any, shape: Shape, path: str) -> bytes:
        if self.json_wire:
            if not isinstance(value, str):
                raise _type_error(value, "blob")
            try:
                value = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidRequest("SerializationException", "Base64 encoded value is not valid") from None
        elif not isinstance(value, bytes):
            raise _type_error(value, "blob")
        self.check_length(path, value, len(value), shape)
        return value

    def _timestamp(self, value: Any, shape: Shape, path: str) -> datetime:
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise _type_error(value, "timestamp")
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            raise InvalidRequest("SerializationException", "NUMBER_VALUE can not be converted to a Timestamp") from None


def validate_params(
    service: str,
    operation: str,
    params: Any,
    *,
    json_wire: bool,
    error_type: str,
    unknown_operation: str = "UnknownOperationException",
) -> dict[str, Any]:
    """Validate `params` for `service`'s `operation`; the shared core of the JSON and Query front ends."""
    model = get_service_model(service)
    try:
        op = model.operation_model(operation)
    except OperationNotFoundError:
        raise InvalidRequest(unknown_operation, f"Unknown operation {operation!r}") from None
    if not isinstance(params, dict):
        raise InvalidRequest("SerializationException", "Start of structure or map was expected, but not found.")
    if op.input_shape is None:
        return {}
    validator = _Validator(json_wire=json_wire, pattern_style="ecr" if service == "ecr" else "coral")
    out = validator.walk(params, op.input_shape, "")
    if validator.violations:
        n = len(validator.violations)
        raise InvalidRequest(
            error_type,
            f"{n} validation error{'s' if n > 1 else ''} detected: " + "; ".join(validator.violations),
        )
    if validator.pattern_violations:
        raise InvalidRequest(error_type, validator.pattern_violations[0])
    return out


def validate_request(operation: str, params: Any, *, service: str = "ecr") -> dict[str, Any]:
    """Validate a decoded awsJson body for `operation`; return it with blobs as bytes, timestamps as datetimes."""
    return validate_params(service, operation, params, json_wire=True, error_type="InvalidParameterException")
