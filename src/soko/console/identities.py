"""The IAM page: the account's users and roles, and the caller's own access keys (create, delete).

Every read and change goes through ``soko.iam.api.IamApi`` — the operation the IAM API runs for the same request
(ListUsers, ListRoles, ListAccessKeys, CreateAccessKey, DeleteAccessKey with no UserName: the caller's own keys) —
so the console authorizes exactly as the API does (``iam:ListUsers`` on ``user/``, ``iam:ListRoles`` on ``role/``,
``iam:ListAccessKeys`` / ``iam:CreateAccessKey`` / ``iam:DeleteAccessKey`` on the caller's ARN).
"""

from __future__ import annotations

import re

from soko.aws.errors import ServiceError
from soko.console.pages import BadInput, Denied, Viewer, when
from soko.errors import AccessDenied
from soko.iam.api import IamApi

LIST_MAX = 100
KEY_ID = re.compile(r"[A-Z0-9]{16,128}")
MARKER = re.compile(r"[\x20-\x7e]{1,512}")


class KeyRefused(Exception):
    """A key change the console will not make (shown as a message on the page, nothing changed)."""


def _refusal(exc: ServiceError) -> Exception:
    """The API's refusal: AccessDenied stays one (the console's "not allowed" page), anything else is shown."""
    return AccessDenied(exc.message) if exc.type_name == "AccessDenied" else KeyRefused(exc.message)


def _call(iam: IamApi, viewer: Viewer, operation: str, params: dict) -> dict:
    return iam.call("iam", operation, params, viewer.principal, viewer.context)


def _listing(iam: IamApi, viewer: Viewer, operation: str, action: str, resource: str, params: dict) -> dict:
    """{"denied": Denied} when the API refuses the caller, else the API's answer."""
    try:
        return _call(iam, viewer, operation, params)
    except ServiceError as exc:
        if exc.type_name == "AccessDenied":
            return {"denied": Denied(action, resource)}
        raise BadInput(exc.message) from None


def iam_page(iam: IamApi, viewer: Viewer, query: dict[str, str], session_key: str) -> dict:
    account = viewer.account
    out: dict = {"caller": viewer.principal.arn, "session_key": session_key}
    params: dict = {"MaxItems": LIST_MAX}
    marker = query.get("users_after", "")
    if marker:
        if not MARKER.fullmatch(marker):
            raise BadInput("the page position ('users_after') is not one this console made")
        params["Marker"] = marker
    users = _listing(iam, viewer, "ListUsers", "iam:ListUsers", f"arn:aws:iam::{account}:user/", params)
    out["users_denied"] = users.get("denied")
    out["users"] = [
        {"name": u["UserName"], "arn": u["Arn"], "created": when(u["CreateDate"].timestamp())}
        for u in users.get("Users", [])
    ]
    out["users_next"] = users.get("Marker")
    roles = _listing(iam, viewer, "ListRoles", "iam:ListRoles", f"arn:aws:iam::{account}:role/", {"MaxItems": LIST_MAX})
    out["roles_denied"] = roles.get("denied")
    out["roles"] = [
        {
            "name": r["RoleName"],
            "arn": r["Arn"],
            "created": when(r["CreateDate"].timestamp()),
            "description": r.get("Description", ""),
        }
        for r in roles.get("Roles", [])
    ]
    out["roles_more"] = bool(roles.get("IsTruncated"))
    if viewer.principal.type == "AssumedRole":
        out["keys_note"] = "A role session has no access keys of its own (its credentials are temporary)."
        out["keys"] = []
        return out
    keys = _listing(iam, viewer, "ListAccessKeys", "iam:ListAccessKeys", viewer.principal.arn, {})
    out["keys_denied"] = keys.get("denied")
    out["keys"] = [
        {"id": k["AccessKeyId"], "status": k["Status"], "created": when(k["CreateDate"].timestamp())}
        for k in keys.get("AccessKeyMetadata", [])
    ]
    return out


def create_key(iam: IamApi, viewer: Viewer) -> dict:
    """CreateAccessKey for the caller: {"id", "secret"} (the secret is shown once, on the page that answers)."""
    if viewer.principal.type == "AssumedRole":
        raise KeyRefused("a role session has no access keys of its own")
    try:
        key = _call(iam, viewer, "CreateAccessKey", {})["AccessKey"]
    except ServiceError as exc:
        raise _refusal(exc) from None
    return {"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}


def delete_key(iam: IamApi, viewer: Viewer, key_id: str, session_key: str) -> None:
    """DeleteAccessKey of one of the caller's keys — not the one this console session signed in with."""
    if not KEY_ID.fullmatch(key_id):
        raise KeyRefused("that is not an access key id")
    if key_id == session_key:
        raise KeyRefused("this session signed in with that key: sign in with another key to delete it")
    try:
        _call(iam, viewer, "DeleteAccessKey", {"AccessKeyId": key_id})
    except ServiceError as exc:
        raise _refusal(exc) from None
