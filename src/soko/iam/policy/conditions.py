"""The Condition element: operators, set qualifiers, IfExists and Null, compiled once at parse time.

AWS semantics: operators and keys within a block are ANDed, the values listed for one key are ORed (NOR for the
negated operators). A key missing from the request makes a condition false, except that negated operators are
then true, `...IfExists` is true and Null tests presence. ForAllValues over a missing/empty key is true,
ForAnyValue false.
"""

from __future__ import annotations

import ipaddress
import math
import operator
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import cast

from soko.iam.policy.context import RequestContext
from soko.iam.policy.matching import WildcardSet, arn_regex, compiled, glob_regex
from soko.iam.policy.model import MalformedPolicy, quote
from soko.iam.policy.variables import Template, parse_template

# matcher(context value, ctx) -> does the value match any of the policy's values (in the positive sense)?
Matcher = Callable[[object, RequestContext], bool]

_COMPARE = {
    "Equals": operator.eq,
    "LessThan": operator.lt,
    "LessThanEquals": operator.le,
    "GreaterThan": operator.gt,
    "GreaterThanEquals": operator.ge,
}

# operator -> (family, negated)
OPERATORS: dict[str, tuple[str, bool]] = {
    "StringEquals": ("string", False),
    "StringNotEquals": ("string", True),
    "StringEqualsIgnoreCase": ("string_ci", False),
    "StringNotEqualsIgnoreCase": ("string_ci", True),
    "StringLike": ("like", False),
    "StringNotLike": ("like", True),
    "ArnEquals": ("arn", False),
    "ArnLike": ("arn", False),
    "ArnNotEquals": ("arn", True),
    "ArnNotLike": ("arn", True),
    "Bool": ("bool", False),
    "BinaryEquals": ("binary", False),
    "IpAddress": ("ip", False),
    "NotIpAddress": ("ip", True),
    "Null": ("null", False),
    "NumericNotEquals": ("numeric:Equals", True),
    "DateNotEquals": ("date:Equals", True),
}
for _cmp in _COMPARE:
    OPERATORS[f"Numeric{_cmp}"] = (f"numeric:{_cmp}", False)
    OPERATORS[f"Date{_cmp}"] = (f"date:{_cmp}", False)

# Families whose values may hold policy variables (AWS: strings, ARNs, Bool).
_VARIABLE_FAMILIES = {"string", "string_ci", "like", "arn", "bool"}


class Clause:
    """One (operator, key, values) triple of a Condition block."""

    __slots__ = ("if_exists", "key", "matcher", "negated", "null_values", "operator", "qualifier")

    def __init__(
        self,
        operator: str,
        key: str,
        qualifier: str | None,
        if_exists: bool,
        negated: bool,
        matcher: Matcher | None,
        null_values: frozenset[bool] = frozenset(),
    ) -> None:
        self.operator = operator
        self.key = key
        self.qualifier = qualifier
        self.if_exists = if_exists
        self.negated = negated
        self.matcher = matcher
        self.null_values = null_values

    def test(self, ctx: RequestContext) -> bool:
        raw = ctx.get(self.key)
        missing = raw is None or (isinstance(raw, list | tuple) and not raw)
        if self.matcher is None:  # Null: "true" means the key must be absent
            return missing in self.null_values
        if missing:
            if self.if_exists or self.qualifier == "ForAllValues":
                return True
            if self.qualifier == "ForAnyValue":
                return False
            return self.negated
        match = self.matcher
        if not isinstance(raw, list | tuple):  # a single value: every qualifier reduces to one comparison
            return match(raw, ctx) != self.negated
        if self.qualifier == "ForAllValues":
            return all(match(v, ctx) != self.negated for v in raw)
        if self.qualifier == "ForAnyValue":
            return any(match(v, ctx) != self.negated for v in raw)
        # Multi-valued key without a qualifier: positive operators need some value to match, negated ones none.
        hit = any(match(v, ctx) for v in raw)
        return hit != self.negated


def parse_condition(block: object, where: str, variables: bool) -> tuple[Clause, ...]:
    if not isinstance(block, dict):
        raise MalformedPolicy(f"{where}: Condition must be an object")
    clauses: list[Clause] = []
    for op_name, keys in block.items():
        qualifier, if_exists, family, negated = _split_operator(op_name, where)
        if not isinstance(keys, dict) or not keys:
            raise MalformedPolicy(f"{where}: condition operator {quote(op_name)} must map condition keys to values")
        for key, raw_values in keys.items():
            if not isinstance(key, str) or not key.strip():
                raise MalformedPolicy(f"{where}: empty condition key under {op_name}")
            values = _values(raw_values, f"{where}: {op_name} {quote(key)}")
            if family == "null":
                clauses.append(
                    Clause(op_name, key.lower(), None, False, False, None, _null_values(values, where, op_name))
                )
                continue
            matcher = _build_matcher(family, values, f"{where}: {op_name} {quote(key)}", variables)
            clauses.append(Clause(op_name, key.lower(), qualifier, if_exists, negated, matcher))
    return tuple(clauses)


def _split_operator(name: object, where: str) -> tuple[str | None, bool, str, bool]:
    if not isinstance(name, str):
        raise MalformedPolicy(f"{where}: condition operators must be strings")
    prefix, sep, base = name.partition(":")
    qualifier: str | None = prefix
    if not sep:
        qualifier, base = None, name
    elif qualifier not in ("ForAnyValue", "ForAllValues"):
        raise MalformedPolicy(f"{where}: unknown condition set qualifier in {quote(name)}")
    if_exists = False
    if base not in OPERATORS and base.endswith("IfExists") and base != "NullIfExists":
        base, if_exists = base[: -len("IfExists")], True
    if base not in OPERATORS:
        raise MalformedPolicy(f"{where}: unknown condition operator {quote(name)}")
    family, negated = OPERATORS[base]
    if family == "null" and qualifier:
        raise MalformedPolicy(f"{where}: Null cannot take a set qualifier")
    return qualifier, if_exists, family, negated


def _values(raw: object, where: str) -> list[str | int | float | bool]:
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise MalformedPolicy(f"{where}: needs at least one value")
    for v in items:
        if not isinstance(v, str | int | float) or (isinstance(v, float) and not math.isfinite(v)):
            raise MalformedPolicy(f"{where}: condition values must be strings, numbers or booleans")
    return cast("list[str | int | float | bool]", items)


def _text(v: object) -> str:
    """A context or policy value as IAM compares strings."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    return str(v)


def _null_values(values: list[str | int | float | bool], where: str, op: str) -> frozenset[bool]:
    out = set()
    for v in values:
        t = _text(v).lower()
        if t not in ("true", "false"):
            raise MalformedPolicy(f"{where}: {op} values must be true or false")
        out.add(t == "true")
    return frozenset(out)


def _build_matcher(family: str, values: list[str | int | float | bool], where: str, variables: bool) -> Matcher:
    texts = [_text(v) for v in values]
    templates: list[Template] = []
    static: list[str] = []
    for t in texts:
        tpl = parse_template(t) if variables and family in _VARIABLE_FAMILIES else None
        if tpl is None:
            static.append(t)
        else:
            templates.append(tpl)

    if family in ("string", "binary", "bool", "string_ci"):
        fold = family in ("bool", "string_ci")
        exact = frozenset(s.lower() if fold else s for s in static)

        def match_exact(v: object, ctx: RequestContext) -> bool:
            s = _text(v).lower() if fold else _text(v)
            if s in exact:
                return True
            for tpl in templates:
                r = tpl.resolve(ctx)
                if r is not None and (r.lower() if fold else r) == s:
                    return True
            return False

        return match_exact

    if family in ("like", "arn"):
        to_regex = glob_regex if family == "like" else arn_regex
        sources = [r for r in map(to_regex, static) if r is not None]
        wild = WildcardSet(static) if family == "like" else None
        combined = compiled("|".join(sources)) if sources and family == "arn" else None

        def match_pattern(v: object, ctx: RequestContext) -> bool:
            s = _text(v)
            if wild is not None and wild.matches(s):
                return True
            if combined is not None and combined.fullmatch(s):
                return True
            for tpl in templates:
                if family == "like":
                    src = tpl.resolve_glob(ctx)
                else:
                    resolved = tpl.resolve(ctx)
                    src = arn_regex(resolved) if resolved is not None else None
                if src is not None and compiled(src).fullmatch(s):
                    return True
            return False

        return match_pattern

    if family == "ip":
        nets = []
        for t in texts:
            try:
                nets.append(ipaddress.ip_network(t.strip(), strict=False))
            except ValueError:
                raise MalformedPolicy(f"{where}: {quote(t)} is not an IP address or CIDR block") from None

        def match_ip(v: object, ctx: RequestContext) -> bool:
            addr = _ip(v)
            return addr is not None and any(addr.version == n.version and addr in n for n in nets)

        return match_ip

    kind, _, cmp_name = family.partition(":")
    convert = _number if kind == "numeric" else _epoch
    bounds = []
    for v in values:
        n = convert(v)
        if n is None:
            noun = "a number" if kind == "numeric" else "a date (ISO 8601 or epoch seconds)"
            raise MalformedPolicy(f"{where}: {quote(_text(v))} is not {noun}")
        bounds.append(n)
    cmp = _COMPARE[cmp_name]

    def match_ordered(v: object, ctx: RequestContext) -> bool:
        n = convert(v)
        return n is not None and any(cmp(n, b) for b in bounds)

    return match_ordered


def _ip(v: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    return _parse_ip(v) if isinstance(v, str) else None


@lru_cache(maxsize=4096)  # source addresses repeat; parsing one costs more than the rest of an evaluation
def _parse_ip(v: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(v.strip())
    except ValueError:
        return None


def _number(v: object) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        n = float(v) if not isinstance(v, int) or abs(v) < 2**1000 else None
    elif isinstance(v, str):
        try:
            n = float(v.strip())
        except ValueError:
            return None
    else:
        return None
    return n if n is not None and math.isfinite(n) else None


def _epoch(v: object) -> float | None:
    if isinstance(v, str):
        s = v.strip()
        if s.lstrip("-").replace(".", "", 1).isdigit():
            return _number(s)
        try:
            v = datetime.fromisoformat(s)
        except ValueError:
            return None
    if isinstance(v, datetime):
        try:
            return (v if v.tzinfo else v.replace(tzinfo=UTC)).timestamp()
        except (OverflowError, ValueError):  # offsets that push year 1 or 9999 out of range
            return None
    return None if isinstance(v, bool) else _number(v)
