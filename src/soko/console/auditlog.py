"""The audit log page: authentication and authorization decisions of the caller's account (``soko.audit``, what
``soko audit`` prints), searched by time range, principal, action, repository and decision, newest first, in keyset
pages.

Authorized as ``cloudtrail:LookupEvents`` on ``*``: looking up an account's recorded API decisions is what AWS's
CloudTrail answers under that action (which takes no resource); Soko's API has no operation of its own for it. A page
shows rows whose principal or resource belongs to the caller's account, never another account's.
"""

from __future__ import annotations

from datetime import UTC, datetime

from soko.audit import AuditLog, AuditQuery
from soko.console.pages import BadInput, Viewer, decode_position, encode_position, when
from soko.errors import NameInvalid
from soko.names import validate_repository_name

ACTION = "cloudtrail:LookupEvents"
PAGE = 50
MAX_FIELD = 2048
DECISIONS = ("", "allow", "deny")


def _time(text: str, name: str) -> float | None:
    """A ``datetime-local`` value (2026-12-06T20:15, UTC) or an ISO 8601 time with a zone."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(f"the {name} time is not a date and time (2026-12-06T20:15, UTC)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _local(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M")


def audit_page(viewer: Viewer, audit: AuditLog, query: dict[str, str]) -> dict:
    out: dict = {"denied": viewer.allowed_on(ACTION, "*"), "action_name": ACTION}
    if out["denied"] is not None:
        return out
    fields = {k: query.get(k, "").strip() for k in ("since", "until", "principal", "action", "repository", "decision")}
    for key, value in fields.items():
        if len(value) > MAX_FIELD:
            raise BadInput(f"the {key} filter is longer than {MAX_FIELD} characters")
    if fields["decision"] not in DECISIONS:
        raise BadInput("the decision is allow, deny or empty (both)")
    since, until = _time(fields["since"], "start"), _time(fields["until"], "end")
    resource = None
    if fields["repository"]:
        try:
            validate_repository_name(fields["repository"])
        except NameInvalid as exc:
            raise BadInput(exc.message) from None
        resource = viewer.arn(fields["repository"])
    token = query.get("before", "")
    before = decode_position(token, float, int, name="before") if token else None
    audit.flush()  # this process's decisions of the last second, this page's own among them
    rows = audit.query(
        AuditQuery(
            since=since,
            until=until,
            principal=fields["principal"] or None,
            action=fields["action"] or None,
            resource=resource,
            decision=fields["decision"] or None,
            account=viewer.account,
            before=before,
            limit=PAGE + 1,
        )
    )
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    out.update(
        filters={**fields, "since": _local(since) or fields["since"], "until": _local(until) or fields["until"]},
        decisions=DECISIONS,
        rows=[
            {
                "at": when(r["at"]),
                "event": r["event"],
                "decision": r["decision"],
                "count": r["count"],
                "principal": r["principal"] or "-",
                "action": r["action"] or "-",
                "resource": r["resource"] or "-",
                "source": r["source_ip"] or "-",
                "endpoint": r["endpoint"] or "-",
                "request_id": r["request_id"] or "",
                "reason": r["reason"] or "",
            }
            for r in rows
        ],
        next=encode_position(rows[-1]["at"], rows[-1]["id"]) if more and rows else None,
        paged=bool(token),
    )
    return out
