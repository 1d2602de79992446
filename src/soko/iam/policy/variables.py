"""Policy variables (`${aws:username}`, `${aws:PrincipalTag/team, 'none'}`) in Version 2012-10-17 documents.

A value with variables is kept as a Template and resolved per request. An unresolvable variable (key missing, no
default, or a multi-valued key) makes that value match nothing, as in AWS.
"""

from __future__ import annotations

import re

from soko.iam.policy.context import RequestContext
from soko.iam.policy.matching import glob_regex_parts

_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_DEFAULT = re.compile(r"\s*'([^']*)'\s*")
_SPECIAL = {"*": "*", "?": "?", "$": "$"}  # ${*} etc. stand for the literal character


Part = tuple[str, str] | tuple[str, str, str | None]


class Template:
    """A string with policy variables. Parts: ("text", s) glob/literal text, ("lit", s) always literal (`${*}`),
    ("var", key, default)."""

    __slots__ = ("parts", "source")

    def __init__(self, source: str, parts: tuple[Part, ...]) -> None:
        self.source = source
        self.parts = parts

    def _values(self, ctx: RequestContext) -> list[tuple[str, str]] | None:
        out: list[tuple[str, str]] = []
        for part in self.parts:
            if len(part) == 2:  # ("text", s) or ("lit", s)
                out.append((part[0], part[1]))
                continue
            _, key, default = part
            value = ctx.get(key)
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, int):
                value = str(value)
            if not isinstance(value, str):
                if default is None:
                    return None
                value = default
            out.append(("lit", value))
        return out

    def resolve(self, ctx: RequestContext) -> str | None:
        """The plain string, for exact comparisons (StringEquals, Bool)."""
        values = self._values(ctx)
        return None if values is None else "".join(v for _, v in values)

    def resolve_glob(self, ctx: RequestContext) -> str | None:
        """Regex source where the document's own `*`/`?` are wildcards and substituted values are literal."""
        values = self._values(ctx)
        if values is None:
            return None
        return glob_regex_parts((v, kind == "text") for kind, v in values)


def parse_template(value: str) -> Template | None:
    """A Template if the value contains policy variables, else None (use the string as it is)."""
    if "${" not in value:
        return None
    parts: list[Part] = []
    pos = 0
    for m in _VARIABLE.finditer(value):
        if m.start() > pos:
            parts.append(("text", value[pos : m.start()]))
        pos = m.end()
        inner = m.group(1)
        if inner in _SPECIAL:
            parts.append(("lit", _SPECIAL[inner]))
            continue
        key, sep, default = inner.partition(",")
        key = key.strip().lower()
        dm = _DEFAULT.fullmatch(default) if sep else None
        if not key or (sep and dm is None):
            # Not a variable after all ("${}", a bad default): keep it as text, like AWS does for 2008 docs.
            parts.append(("text", m.group(0)))
            continue
        parts.append(("var", key, dm.group(1) if dm else None))
    if pos < len(value):
        parts.append(("text", value[pos:]))
    if not any(p[0] == "var" or p[0] == "lit" for p in parts):
        return None
    return Template(value, tuple(parts))
