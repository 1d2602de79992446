"""EventBridge event patterns, the subset Soko matches (docs: EventBridge "Content filtering in event patterns").

A pattern mirrors the event's nesting; its leaves are arrays of match values, of which any may match; every named
field must match (AND); fields the pattern does not name are ignored. An event array matches when any element
does. Leaf values: a string, number, ``null`` (exact, typed: ``"5"`` is not ``5``), and the operators
``{"prefix": s}``, ``{"suffix": s}``, ``{"equals-ignore-case": s}``, ``{"anything-but": v | [v…] | {"prefix": s} |
{"suffix": s}}``, ``{"numeric": [op, n, (op, n)]}`` and ``{"exists": bool}``. Anything else (``wildcard``,
``cidr``, ``$or``…) is refused when the pattern is set, never matched loosely.
"""

from __future__ import annotations

import json
from typing import Any

from soko.errors import SokoError

MAX_PATTERN = 4096  # characters of JSON, as EventBridge's limit for a rule's pattern
MAX_DEPTH = 8
_NUMERIC_OPS = {"<", "<=", "=", ">", ">="}
_NUMERIC_LIMIT = 5e9


class InvalidPattern(SokoError):
    """An event pattern Soko cannot match (malformed, or an operator outside the subset)."""


def parse(text: str) -> dict:
    """Check ``text`` is a pattern Soko matches; returns it parsed."""
    if len(text) > MAX_PATTERN:
        raise InvalidPattern(f"the event pattern is longer than {MAX_PATTERN} characters")
    try:
        pattern = json.loads(text, parse_constant=_not_json)
    except ValueError as exc:
        raise InvalidPattern(f"the event pattern is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidPattern(f"the event pattern nests deeper than {MAX_DEPTH} levels") from None
    if not isinstance(pattern, dict) or not pattern:
        raise InvalidPattern("the event pattern must be a non-empty JSON object")
    _check_object(pattern, "", 1)
    return pattern


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not a JSON number")


def _check_object(pattern: dict, path: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InvalidPattern(f"the event pattern nests deeper than {MAX_DEPTH} levels")
    for key, value in pattern.items():
        where = f"{path}.{key}" if path else key
        if key.startswith("$"):
            raise InvalidPattern(
                f"{where}: '{key}' is not supported (Soko matches exact, prefix, suffix, "
                "equals-ignore-case, anything-but, numeric and exists)"
            )
        if isinstance(value, dict):
            if not value:
                raise InvalidPattern(f"{where}: an empty object matches nothing")
            _check_object(value, where, depth + 1)
        elif isinstance(value, list):
            if not value:
                raise InvalidPattern(f"{where}: a match list must not be empty")
            for item in value:
                _check_leaf(item, where)
        else:
            raise InvalidPattern(f"{where}: match values must be in an array, e.g. [{json.dumps(value)}]")


def _check_leaf(item: Any, where: str) -> None:
    if item is None or isinstance(item, str | bool):
        return
    if isinstance(item, int | float):
        if abs(item) > _NUMERIC_LIMIT:
            raise InvalidPattern(f"{where}: numbers must lie within ±5e9")
        return
    if not isinstance(item, dict) or len(item) != 1:
        raise InvalidPattern(f"{where}: each match value is a string, number, null or one operator object")
    ((op, arg),) = item.items()
    if op in ("prefix", "suffix", "equals-ignore-case"):
        if not isinstance(arg, str):
            raise InvalidPattern(f"{where}: {op} takes a string")
    elif op == "exists":
        if not isinstance(arg, bool):
            raise InvalidPattern(f"{where}: exists takes true or false")
    elif op == "numeric":
        _check_numeric(arg, where)
    elif op == "anything-but":
        if isinstance(arg, dict):
            if (
                len(arg) != 1
                or next(iter(arg)) not in ("prefix", "suffix")
                or not isinstance(next(iter(arg.values())), str)
            ):
                raise InvalidPattern(f"{where}: anything-but takes a value, a list of values, or a prefix or suffix")
        elif isinstance(arg, list):
            if not arg or not all(v is None or isinstance(v, str | int | float) for v in arg):
                raise InvalidPattern(f"{where}: anything-but's list holds strings or numbers")
        elif not (arg is None or isinstance(arg, str | int | float)):
            raise InvalidPattern(f"{where}: anything-but takes a value, a list of values, or a prefix or suffix")
    else:
        raise InvalidPattern(
            f"{where}: the operator '{op}' is not supported (Soko matches exact, prefix, suffix, "
            "equals-ignore-case, anything-but, numeric and exists)"
        )


def _check_numeric(arg: Any, where: str) -> None:
    if not isinstance(arg, list) or len(arg) not in (2, 4):
        raise InvalidPattern(f"{where}: numeric takes [op, n] or [op, n, op, n]")
    for i in range(0, len(arg), 2):
        op, number = arg[i], arg[i + 1]
        if op not in _NUMERIC_OPS or isinstance(number, bool) or not isinstance(number, int | float):
            raise InvalidPattern(f"{where}: numeric takes operators {sorted(_NUMERIC_OPS)} each followed by a number")
        if abs(number) > _NUMERIC_LIMIT:
            raise InvalidPattern(f"{where}: numbers must lie within ±5e9")


_MISSING = object()


def matches(pattern: dict, event: Any) -> bool:
    """Whether ``event`` (a decoded envelope) matches a ``parse``d ``pattern``."""
    if isinstance(event, list):  # an array of objects: some one element must match the whole sub-pattern
        return any(matches(pattern, item) for item in event)
    for key, sub in pattern.items():
        value = event.get(key, _MISSING) if isinstance(event, dict) else _MISSING
        if isinstance(sub, dict):
            if value is _MISSING or not isinstance(value, dict | list):
                if not _only_absent(sub):
                    return False
                continue
            if not matches(sub, value):
                return False
        elif not _leaf(sub, value):
            return False
    return True


def _only_absent(pattern: dict) -> bool:
    """A sub-pattern a missing object satisfies: only ``exists: false`` leaves."""
    for sub in pattern.values():
        if isinstance(sub, dict):
            if not _only_absent(sub):
                return False
        elif not any(isinstance(m, dict) and m.get("exists") is False for m in sub):
            return False
    return True


def _leaf(candidates: list, value: Any) -> bool:
    for match in candidates:
        if isinstance(match, dict) and "exists" in match:
            present = value is not _MISSING and not isinstance(value, dict)
            if match["exists"] == present:
                return True
            continue
        if value is _MISSING or isinstance(value, dict):
            continue
        values = value if isinstance(value, list) else [value]
        if any(_one(match, v) for v in values):
            return True
    return False


def _same(a: Any, b: Any) -> bool:
    """Exact, typed equality (numbers compare as numbers, never as strings or booleans)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return float(a) == float(b)
    return type(a) is type(b) and a == b


def _one(match: Any, value: Any) -> bool:
    if not isinstance(match, dict):
        return _same(match, value)
    ((op, arg),) = match.items()
    if op == "numeric":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return all(_compare(value, arg[i], arg[i + 1]) for i in range(0, len(arg), 2))
    if op == "anything-but":
        if isinstance(arg, dict):
            if not isinstance(value, str):
                return False
            ((kind, text),) = arg.items()
            return not (value.startswith(text) if kind == "prefix" else value.endswith(text))
        excluded = arg if isinstance(arg, list) else [arg]
        return not any(_same(x, value) for x in excluded)
    if not isinstance(value, str):  # string operators skip non-strings
        return False
    if op == "prefix":
        return value.startswith(arg)
    if op == "suffix":
        return value.endswith(arg)
    return value.casefold() == arg.casefold()  # equals-ignore-case


def _compare(value: float, op: str, number: float) -> bool:
    if op == "<":
        return value < number
    if op == "<=":
        return value <= number
    if op == "=":
        return value == number
    if op == ">":
        return value > number
    return value >= number
