"""The event delivery page: the account's webhook targets (``soko.events.targets``: status, backlog, lag, failures)
and their dead letters, with a redeliver action — what ``soko events targets``, ``dead-letters`` and ``redeliver``
do on the command line.

Soko's API has no operation for webhook targets (they are configured with ``soko events``), so the console names
its own actions: ``soko:ListEventDeliveries`` to see targets and dead letters and ``soko:RedeliverEvents`` to send
dead letters again, on ``arn:aws:soko:<region>:<account>:event-target/<name>`` (``event-target/*`` for the list).
"""

from __future__ import annotations

import json
import re

from soko.console.pages import BadInput, Viewer, when
from soko.events.targets import NAME, Targets

LIST_ACTION = "soko:ListEventDeliveries"
REDELIVER_ACTION = "soko:RedeliverEvents"
MAX_LETTERS = 200
EVENT_ID = re.compile(r"[A-Za-z0-9-]{1,64}")


def target_arn(viewer: Viewer, name: str) -> str:
    return f"arn:aws:soko:{viewer.region}:{viewer.account}:event-target/{name}"


def _summary(body: str) -> dict:
    try:
        event = json.loads(body)
    except ValueError:
        return {"detail_type": "?", "resources": [], "time": "", "text": body}
    if not isinstance(event, dict):
        event = {}
    detail = event.get("detail")
    if not isinstance(detail, dict):
        detail = {}
    return {
        "detail_type": str(event.get("detail-type", "")),
        "action": str(detail.get("action-type") or detail.get("action") or ""),
        "resources": [str(r) for r in event.get("resources") or [] if isinstance(r, str)],
        "time": str(event.get("time", "")),
        "text": json.dumps(event, indent=2),
    }


def events_page(viewer: Viewer, query: dict[str, str]) -> dict:
    out: dict = {"denied": viewer.allowed_on(LIST_ACTION, target_arn(viewer, "*"))}
    if out["denied"] is not None:
        return out
    chosen = query.get("target", "")
    if chosen and not NAME.fullmatch(chosen):
        raise BadInput("a target name is 1 to 64 letters, digits, '_', '.' or '-'")
    targets = Targets(viewer.registry.ctx)
    now = viewer.registry.ctx.clock()
    out["targets"] = [
        {
            "name": t.name,
            "url": t.url,
            "enabled": t.enabled,
            "delivered": t.delivered,
            "failures": t.failures,
            "dead": t.dead,
            "retrying": t.retrying,
            "backlog": t.backlog,
            "lag": f"{now - t.oldest_pending_at:.0f} s" if t.oldest_pending_at and t.backlog else "-",
            "last_delivered": when(t.last_delivered_at),
            "last_error": t.last_error if t.attempts else "",
            "next_attempt": when(t.next_attempt_at) if t.next_attempt_at else "-",
        }
        for t in targets.status(viewer.account)
    ]
    out["target"] = chosen
    letters = targets.dead_letters(viewer.account, chosen or None, MAX_LETTERS)
    out["letters"] = [
        {
            "target": r["target"],
            "event_id": r["event_id"],
            "status": r["status"],
            "attempts": r["attempts"],
            "dead_at": when(r["dead_at"]),
            "last_error": r["last_error"] or "",
            **_summary(r["body"]),
        }
        for r in letters
    ]
    out["letters_capped"] = len(letters) >= MAX_LETTERS
    return out


def redeliver(viewer: Viewer, form: dict[str, str]) -> int:
    """soko:RedeliverEvents on the target: all its dead letters, or one event (``event_id``)."""
    name = form.get("target", "")
    if not NAME.fullmatch(name):
        raise BadInput("a target name is 1 to 64 letters, digits, '_', '.' or '-'")
    event_id = form.get("event_id", "")
    if event_id and not EVENT_ID.fullmatch(event_id):
        raise BadInput("that is not an event id")
    viewer.authorize_on(REDELIVER_ACTION, target_arn(viewer, name))
    return Targets(viewer.registry.ctx).redeliver(viewer.account, name, [event_id] if event_id else None)
