"""Pattern matching shared by the policy elements: wildcards, ARNs and principals."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from soko.iam.policy.model import Principal

NO_MATCH, ACCOUNT_MATCH, DIRECT_MATCH = 0, 1, 2

ACCOUNT_ID = re.compile(r"\d{12}")
_ROOT_ARN = re.compile(r"arn:[a-z0-9-]+:iam::(\d{12}):root")
_PRINCIPAL_ARN = re.compile(r"arn:[a-z0-9-]+:(?:iam|sts)::(\d{12}):[^\s*?]+")


def has_wildcard(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern


def glob_regex_parts(parts: Iterable[tuple[str, bool]], any_char: str = ".") -> str:
    """Regex source for an IAM glob given as (text, wildcards_active) parts: `*` any run of characters, `?` one.

    Policy authors control these patterns, so the regex must not backtrack catastrophically (`a*a*a*…b` as
    `.*a.*a.*…b` takes minutes on a 40-character string). Every segment between two stars is fixed-length, so
    placing each at its earliest possible position is optimal; atomic groups commit to that placement, which
    keeps matching O(len(pattern) * len(value)).
    """
    segments: list[list[str]] = [[]]
    for text, wild in parts:
        if not wild:
            segments[-1].append(re.escape(text))
            continue
        for chunk in _GLOB_TOKEN.split(text):
            if chunk == "*":
                segments.append([])
            elif chunk == "?":
                segments[-1].append(any_char)
            elif chunk:
                segments[-1].append(re.escape(chunk))
    joined = ["".join(seg) for seg in segments]
    if len(joined) == 1:
        return joined[0]
    star = any_char + "*"
    middle = "".join(f"(?>{star}?{seg})" for seg in joined[1:-1] if seg)
    return joined[0] + middle + star + joined[-1]


_GLOB_TOKEN = re.compile(r"([*?])")


def glob_regex(pattern: str, any_char: str = ".") -> str:
    """Regex source for a glob whose `*` and `?` are all wildcards (see glob_regex_parts)."""
    return glob_regex_parts([(pattern, True)], any_char)


def arn_regex(pattern: str) -> str | None:
    """Regex source for ArnLike: the six colon-separated parts are matched separately, so wildcards in the first
    five cannot swallow a colon; the resource part may contain colons. None if the pattern is not an ARN."""
    parts = pattern.split(":", 5)
    if len(parts) != 6:
        return None
    return ":".join([*(glob_regex(p, "[^:]") for p in parts[:5]), glob_regex(parts[5])])


@lru_cache(maxsize=2048)
def compiled(source: str) -> re.Pattern[str]:
    """Compile (and cache) a regex built at evaluation time from a pattern with policy variables."""
    return re.compile(source, re.DOTALL)


class WildcardSet:
    """Several glob patterns matched as one: exact strings by set lookup, the rest by a single regex.

    With fold_case the patterns are lower-cased here and callers pass lower-cased values (IAM actions are
    case-insensitive); that is cheaper than re.IGNORECASE.
    """

    __slots__ = ("exact", "match_all", "regex")

    def __init__(self, patterns: Iterable[str], *, fold_case: bool = False) -> None:
        pats = [p.lower() for p in patterns] if fold_case else list(patterns)
        self.match_all = "*" in pats
        self.exact = frozenset(p for p in pats if not has_wildcard(p))
        wild = sorted({p for p in pats if has_wildcard(p)})
        self.regex = re.compile("|".join(glob_regex(p) for p in wild), re.DOTALL) if wild else None

    def matches(self, value: str) -> bool:
        if self.match_all or value in self.exact:
            return True
        return self.regex is not None and self.regex.fullmatch(value) is not None


def principal_value_account(value: str) -> str | None:
    """The account an AWS principal value names as a whole (`111122223333` or its root ARN), else None."""
    if ACCOUNT_ID.fullmatch(value):
        return value
    m = _ROOT_ARN.fullmatch(value)
    return m.group(1) if m else None


def valid_aws_principal(value: str) -> bool:
    # AWS allows no partial wildcards in principals: "*" alone, an account, or a concrete IAM/STS ARN.
    return value == "*" or principal_value_account(value) is not None or bool(_PRINCIPAL_ARN.fullmatch(value))


class PrincipalSet:
    """The principals a Principal/NotPrincipal element names."""

    __slots__ = ("accounts", "arns", "services", "wildcard")

    def __init__(self, aws: Iterable[str], services: Iterable[str]) -> None:
        aws = list(aws)
        self.wildcard = "*" in aws
        self.accounts = frozenset(a for a in map(principal_value_account, aws) if a is not None)
        self.arns = frozenset(v for v in aws if v != "*" and principal_value_account(v) is None)
        self.services = frozenset(services)

    def level(self, p: Principal) -> int:
        """How the element names the caller: DIRECT (the caller itself, its role, or everyone), ACCOUNT (only the
        caller's account, which delegates to the account's identity policies) or NO_MATCH."""
        if self.wildcard:
            return DIRECT_MATCH
        if p.type == "Service":
            return DIRECT_MATCH if p.arn in self.services else NO_MATCH
        if p.arn in self.arns or (p.role_arn is not None and p.role_arn in self.arns):
            return DIRECT_MATCH
        if p.account in self.accounts:
            return DIRECT_MATCH if p.type == "Account" else ACCOUNT_MATCH
        return NO_MATCH

    def exempts(self, p: Principal) -> bool:
        """NotPrincipal: is the caller exempt from the statement? AWS checks the account and then the identity,
        so a user or role session is exempt only when its account is listed too."""
        if self.wildcard:
            return True
        if p.type == "Service":
            return p.arn in self.services
        if p.account not in self.accounts:
            return False
        if p.type == "Account":
            return True
        return p.arn in self.arns or (p.role_arn is not None and p.role_arn in self.arns)
