"""IAM and STS over the AWS Query protocol: parameters in, botocore output shapes out.

A thin layer: each handler authorizes the IAM action on the target's ARN (the account root may do anything in its
own account; users and roles need an identity-policy Allow), then calls ``soko.iam.directory.Directory`` and shapes
its answer like IAM's. Domain errors become Query errors with IAM's codes (``ServiceError(code, message)``; the front
door serialises them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from soko.access import Principal, RequestContext
from soko.aws.errors import ServiceError
from soko.config import Settings
from soko.errors import AccessDenied
from soko.iam import ids
from soko.iam.directory import Directory, IamError, Page, ValidationError, parse_policy_arn
from soko.iam.policy.keys import request_tag_keys
from soko.iam.service import Identity


def _time(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _tags(tags: list[dict] | None) -> list[dict] | None:
    return [{"Key": t["Key"], "Value": t["Value"]} for t in tags] if tags else None


@dataclasses.dataclass
class Call:
    api: IamApi
    params: dict
    caller: Principal
    context: RequestContext

    @property
    def account(self) -> str:
        return self.caller.account_id

    def authorize(self, action: str, resource_arn: str, **condition_keys: Any) -> None:
        context = self.context
        if condition_keys:
            extra = dict(context.extra)
            extra["condition_keys"] = {**extra.get("condition_keys", {}), **condition_keys}
            context = context.with_extra(extra)
        self.api.identity.authorizer.authorize(self.caller, action, resource_arn, self.account, context)

    def target_user(self, action: str) -> str | None:
        """The user an operation with an optional UserName acts on (None: the account root), authorized."""
        name = self.params.get("UserName")
        if name is not None:
            self.authorize(action, self.api.directory.user_arn(self.account, name))
            return name
        if self.caller.type == "User" and self.caller.username:
            self.authorize(action, self.caller.arn)
            return self.caller.username
        if self.caller.type == "Account":
            self.authorize(action, self.caller.arn)
            return None
        raise ValidationError("Must specify userName when calling with non-User credentials")


def _page(page: Page, key: str, items: list[dict]) -> dict:
    out: dict[str, Any] = {key: items, "IsTruncated": page.marker is not None}
    if page.marker is not None:
        out["Marker"] = page.marker
    return out


def _list_args(p: dict) -> tuple[str | None, str | None, int | None]:
    return p.get("PathPrefix"), p.get("Marker"), p.get("MaxItems")


class _Unsupported(IamError):
    code = "InvalidInput"


def _refuse(p: dict, *names: str) -> None:
    for name in names:
        if p.get(name):
            raise _Unsupported(f"{name} is not supported by this registry.")


class IamApi:
    def __init__(self, settings: Settings, identity: Identity) -> None:
        self.settings = settings
        self.identity = identity
        self.directory = Directory(identity.ctx, identity.master, identity.credentials)
        self.operations: dict[tuple[str, str], Callable[[Call], dict]] = {}
        for name in dir(self):
            if name.startswith(("iam_", "sts_")):
                service, _, operation = name.partition("_")
                self.operations[(service, operation)] = getattr(self, name)

    # ---- entry points ----------------------------------------------------------------------------------------------
    def call(
        self,
        service: str,
        operation: str,
        params: dict,
        caller: Principal,
        context: RequestContext,
        verified: object = None,
    ) -> dict:
        handler = self.operations.get((service, operation))
        if handler is None:
            raise ServiceError("InvalidAction", f"The action {operation} is not supported by this registry.")
        try:
            return handler(Call(self, params, caller, context))
        except IamError as exc:
            raise ServiceError(exc.code, exc.message) from None
        except AccessDenied as exc:
            raise ServiceError("AccessDenied", exc.message, 403) from None

    def create_account(self, account_id: str) -> dict[str, str]:
        """A new account and its root access key: {"AccountId", "AccessKeyId", "SecretAccessKey"}."""
        return self.directory.create_account(account_id)

    # ---- shapes ----------------------------------------------------------------------------------------------------
    @staticmethod
    def _user(row: dict) -> dict:
        out = {
            "Path": row["path"],
            "UserName": row["name"],
            "UserId": row["user_id"],
            "Arn": ids.user_arn(row["account_id"], row["name"], row["path"]),
            "CreateDate": _time(row["created_at"]),
        }
        if row.get("tags"):
            out["Tags"] = _tags(row["tags"])
        return out

    @staticmethod
    def _role(row: dict) -> dict:
        out = {
            "Path": row["path"],
            "RoleName": row["name"],
            "RoleId": row["role_id"],
            "Arn": ids.role_arn(row["account_id"], row["name"], row["path"]),
            "CreateDate": _time(row["created_at"]),
            "AssumeRolePolicyDocument": row["trust_policy"],
            "MaxSessionDuration": row["max_session_duration"],
        }
        if row.get("description"):
            out["Description"] = row["description"]
        if row.get("tags"):
            out["Tags"] = _tags(row["tags"])
        return out

    @staticmethod
    def _policy(row: dict) -> dict:
        out = {
            "PolicyName": row["name"],
            "PolicyId": row["policy_id"],
            "Arn": row["arn"],
            "Path": row["path"],
            "DefaultVersionId": "v1",
            "AttachmentCount": row.get("attachment_count", 0),
            "PermissionsBoundaryUsageCount": 0,
            "IsAttachable": True,
            "CreateDate": _time(row["created_at"]),
            "UpdateDate": _time(row["updated_at"]),
        }
        if row.get("description"):
            out["Description"] = row["description"]
        if row.get("tags"):
            out["Tags"] = _tags(row["tags"])
        return out

    @staticmethod
    def _key(row: dict) -> dict:
        out = {"AccessKeyId": row["access_key_id"], "Status": row["status"], "CreateDate": _time(row["created_at"])}
        if row.get("user_name"):
            out["UserName"] = row["user_name"]
        return out

    # ---- users -----------------------------------------------------------------------------------------------------
    def iam_CreateUser(self, c: Call) -> dict:
        p = c.params
        _refuse(p, "PermissionsBoundary")
        path = p.get("Path", "/")
        arn = ids.user_arn(c.account, p["UserName"], path)
        c.authorize("iam:CreateUser", arn, **request_tag_keys(p.get("Tags")))
        if p.get("Tags"):  # AWS: creating with tags needs iam:TagUser as well
            c.authorize("iam:TagUser", arn, **request_tag_keys(p["Tags"]))
        return {"User": self._user(self.directory.create_user(c.account, p["UserName"], path, p.get("Tags")))}

    def iam_GetUser(self, c: Call) -> dict:
        name = c.target_user("iam:GetUser")
        if name is None:  # the root "user"
            return {
                "User": {
                    "UserId": c.account,
                    "Arn": ids.root_arn(c.account),
                    "CreateDate": _time(self.directory.account_created_at(c.account)),
                }
            }
        return {"User": self._user(self.directory.get_user(c.account, name))}

    def iam_ListUsers(self, c: Call) -> dict:
        prefix, marker, max_items = _list_args(c.params)
        c.authorize("iam:ListUsers", f"arn:aws:iam::{c.account}:user{prefix or '/'}")
        page = self.directory.list_users(c.account, prefix, marker, max_items)
        return _page(page, "Users", [self._user(r) for r in page.items])

    def iam_DeleteUser(self, c: Call) -> dict:
        name = c.params["UserName"]
        c.authorize("iam:DeleteUser", self.directory.user_arn(c.account, name))
        self.directory.delete_user(c.account, name)
        return {}

    # ---- access keys -----------------------------------------------------------------------------------------------
    def iam_CreateAccessKey(self, c: Call) -> dict:
        name = c.target_user("iam:CreateAccessKey")
        row, secret = self.directory.create_access_key(c.account, name)
        return {"AccessKey": {**self._key(row), "SecretAccessKey": secret}}

    def iam_ListAccessKeys(self, c: Call) -> dict:
        name = c.target_user("iam:ListAccessKeys")
        page = self.directory.list_access_keys(c.account, name, c.params.get("Marker"), c.params.get("MaxItems"))
        return _page(page, "AccessKeyMetadata", [self._key(r) for r in page.items])

    def iam_UpdateAccessKey(self, c: Call) -> dict:
        name = c.target_user("iam:UpdateAccessKey")
        self.directory.update_access_key(c.account, name, c.params["AccessKeyId"], c.params["Status"])
        return {}

    def iam_DeleteAccessKey(self, c: Call) -> dict:
        name = c.target_user("iam:DeleteAccessKey")
        self.directory.delete_access_key(c.account, name, c.params["AccessKeyId"])
        return {}

    # ---- inline policies -------------------------------------------------------------------------------------------
    def _put_inline(self, c: Call, kind: str, action: str, name_param: str) -> dict:
        p = c.params
        c.authorize(action, self.directory.principal_arn(c.account, kind, p[name_param]))
        self.directory.put_inline_policy(c.account, kind, p[name_param], p["PolicyName"], p["PolicyDocument"])
        return {}

    def _get_inline(self, c: Call, kind: str, action: str, name_param: str) -> dict:
        p = c.params
        c.authorize(action, self.directory.principal_arn(c.account, kind, p[name_param]))
        row = self.directory.get_inline_policy(c.account, kind, p[name_param], p["PolicyName"])
        return {name_param: row["principal_name"], "PolicyName": row["policy_name"], "PolicyDocument": row["document"]}

    def _list_inline(self, c: Call, kind: str, action: str, name_param: str) -> dict:
        p = c.params
        c.authorize(action, self.directory.principal_arn(c.account, kind, p[name_param]))
        page = self.directory.list_inline_policies(c.account, kind, p[name_param], p.get("Marker"), p.get("MaxItems"))
        return _page(page, "PolicyNames", [r["policy_name"] for r in page.items])

    def _delete_inline(self, c: Call, kind: str, action: str, name_param: str) -> dict:
        p = c.params
        c.authorize(action, self.directory.principal_arn(c.account, kind, p[name_param]))
        self.directory.delete_inline_policy(c.account, kind, p[name_param], p["PolicyName"])
        return {}

    def iam_PutUserPolicy(self, c: Call) -> dict:
        return self._put_inline(c, "user", "iam:PutUserPolicy", "UserName")

    def iam_GetUserPolicy(self, c: Call) -> dict:
        return self._get_inline(c, "user", "iam:GetUserPolicy", "UserName")

    def iam_ListUserPolicies(self, c: Call) -> dict:
        return self._list_inline(c, "user", "iam:ListUserPolicies", "UserName")

    def iam_DeleteUserPolicy(self, c: Call) -> dict:
        return self._delete_inline(c, "user", "iam:DeleteUserPolicy", "UserName")

    def iam_PutRolePolicy(self, c: Call) -> dict:
        return self._put_inline(c, "role", "iam:PutRolePolicy", "RoleName")

    def iam_GetRolePolicy(self, c: Call) -> dict:
        return self._get_inline(c, "role", "iam:GetRolePolicy", "RoleName")

    def iam_ListRolePolicies(self, c: Call) -> dict:
        return self._list_inline(c, "role", "iam:ListRolePolicies", "RoleName")

    def iam_DeleteRolePolicy(self, c: Call) -> dict:
        return self._delete_inline(c, "role", "iam:DeleteRolePolicy", "RoleName")

    # ---- managed policies ------------------------------------------------------------------------------------------
    def _authorize_policy(self, c: Call, action: str, arn: str) -> None:
        account, _, _ = parse_policy_arn(arn)
        # AWS managed policies ("arn:aws:iam::aws:policy/...") are readable from every account (none exist here).
        self.identity.authorizer.authorize(c.caller, action, arn, c.account if account == "aws" else account, c.context)

    def iam_CreatePolicy(self, c: Call) -> dict:
        p = c.params
        path = p.get("Path", "/")
        c.authorize("iam:CreatePolicy", ids.policy_arn(c.account, p["PolicyName"], path))
        row = self.directory.create_policy(
            c.account, p["PolicyName"], path, p["PolicyDocument"], p.get("Description"), p.get("Tags")
        )
        return {"Policy": self._policy(row)}

    def iam_GetPolicy(self, c: Call) -> dict:
        arn = c.params["PolicyArn"]
        self._authorize_policy(c, "iam:GetPolicy", arn)
        return {"Policy": self._policy(self.directory.get_policy(arn))}

    def iam_GetPolicyVersion(self, c: Call) -> dict:
        arn, version = c.params["PolicyArn"], c.params["VersionId"]
        self._authorize_policy(c, "iam:GetPolicyVersion", arn)
        row = self.directory.get_policy(arn)
        if version != "v1":
            raise ServiceError("NoSuchEntity", f"Policy {arn} version {version} does not exist or is not attachable.")
        return {
            "PolicyVersion": {
                "Document": row["document"],
                "VersionId": "v1",
                "IsDefaultVersion": True,
                "CreateDate": _time(row["created_at"]),
            }
        }

    def iam_ListPolicyVersions(self, c: Call) -> dict:
        arn = c.params["PolicyArn"]
        self._authorize_policy(c, "iam:ListPolicyVersions", arn)
        row = self.directory.get_policy(arn)
        return {
            "Versions": [{"VersionId": "v1", "IsDefaultVersion": True, "CreateDate": _time(row["created_at"])}],
            "IsTruncated": False,
        }

    def iam_DeletePolicy(self, c: Call) -> dict:
        arn = c.params["PolicyArn"]
        self._authorize_policy(c, "iam:DeletePolicy", arn)
        self.directory.delete_policy(arn)
        return {}

    def iam_ListPolicies(self, c: Call) -> dict:
        p = c.params
        prefix, marker, max_items = _list_args(p)
        c.authorize("iam:ListPolicies", f"arn:aws:iam::{c.account}:policy{prefix or '/'}")
        page = self.directory.list_policies(
            c.account, p.get("Scope", "All"), bool(p.get("OnlyAttached")), prefix, marker, max_items
        )
        return _page(page, "Policies", [self._policy(r) for r in page.items])

    def _attach(self, c: Call, kind: str, action: str, name_param: str, attach: bool) -> dict:
        p = c.params
        arn = p["PolicyArn"]
        parse_policy_arn(arn)
        c.authorize(action, self.directory.principal_arn(c.account, kind, p[name_param]), **{"iam:PolicyARN": arn})
        if attach:
            self.directory.attach_policy(c.account, kind, p[name_param], arn)
        else:
            self.directory.detach_policy(c.account, kind, p[name_param], arn)
        return {}

    def _list_attached(self, c: Call, kind: str, action: str, name_param: str) -> dict:
        p = c.params
        c.authorize(action, self.directory.principal_arn(c.account, kind, p[name_param]))
        prefix, marker, max_items = _list_args(p)
        page = self.directory.list_attached(c.account, kind, p[name_param], prefix, marker, max_items)
        return _page(page, "AttachedPolicies", [{"PolicyName": r["name"], "PolicyArn": r["arn"]} for r in page.items])

    def iam_AttachUserPolicy(self, c: Call) -> dict:
        return self._attach(c, "user", "iam:AttachUserPolicy", "UserName", True)

    def iam_DetachUserPolicy(self, c: Call) -> dict:
        return self._attach(c, "user", "iam:DetachUserPolicy", "UserName", False)

    def iam_AttachRolePolicy(self, c: Call) -> dict:
        return self._attach(c, "role", "iam:AttachRolePolicy", "RoleName", True)

    def iam_DetachRolePolicy(self, c: Call) -> dict:
        return self._attach(c, "role", "iam:DetachRolePolicy", "RoleName", False)

    def iam_ListAttachedUserPolicies(self, c: Call) -> dict:
        return self._list_attached(c, "user", "iam:ListAttachedUserPolicies", "UserName")

    def iam_ListAttachedRolePolicies(self, c: Call) -> dict:
        return self._list_attached(c, "role", "iam:ListAttachedRolePolicies", "RoleName")

    # ---- roles -----------------------------------------------------------------------------------------------------
    def iam_CreateRole(self, c: Call) -> dict:
        p = c.params
        _refuse(p, "PermissionsBoundary")
        path = p.get("Path", "/")
        arn = ids.role_arn(c.account, p["RoleName"], path)
        c.authorize("iam:CreateRole", arn, **request_tag_keys(p.get("Tags")))
        if p.get("Tags"):
            c.authorize("iam:TagRole", arn, **request_tag_keys(p["Tags"]))
        row = self.directory.create_role(
            c.account,
            p["RoleName"],
            path,
            p["AssumeRolePolicyDocument"],
            p.get("Description"),
            p.get("MaxSessionDuration"),
            p.get("Tags"),
        )
        return {"Role": self._role(row)}

    def iam_GetRole(self, c: Call) -> dict:
        name = c.params["RoleName"]
        c.authorize("iam:GetRole", self.directory.role_arn(c.account, name))
        return {"Role": self._role(self.directory.get_role(c.account, name))}

    def iam_ListRoles(self, c: Call) -> dict:
        prefix, marker, max_items = _list_args(c.params)
        c.authorize("iam:ListRoles", f"arn:aws:iam::{c.account}:role{prefix or '/'}")
        page = self.directory.list_roles(c.account, prefix, marker, max_items)
        return _page(page, "Roles", [self._role(r) for r in page.items])

    def iam_DeleteRole(self, c: Call) -> dict:
        name = c.params["RoleName"]
        c.authorize("iam:DeleteRole", self.directory.role_arn(c.account, name))
        self.directory.delete_role(c.account, name)
        return {}

    # ---- tags of users and roles ------------------------------------------------------------------------------------
    def _tag(self, c: Call, kind: str, action: str, name_param: str) -> dict:
        p = c.params
        arn = self.directory.principal_arn(c.account, kind, p[name_param])
        c.authorize(action, arn, **request_tag_keys(p["Tags"]))
        self.directory.tag_principal(c.account, kind, p[name_param], p["Tags"])
        return {}

    def _untag(self, c: Call, kind: str, action: str, name_param: str) -> dict:
        p = c.params
        arn = self.directory.principal_arn(c.account, kind, p[name_param])
        c.authorize(action, arn, **request_tag_keys(keys=p["TagKeys"]))
        self.directory.untag_principal(c.account, kind, p[name_param], p["TagKeys"])
        return {}

    def _list_tags(self, c: Call, kind: str, action: str, name_param: str) -> dict:
        p = c.params
        c.authorize(action, self.directory.principal_arn(c.account, kind, p[name_param]))
        page = self.directory.list_tags(c.account, kind, p[name_param], p.get("Marker"), p.get("MaxItems"))
        return _page(page, "Tags", _tags(page.items) or [])

    def iam_TagUser(self, c: Call) -> dict:
        return self._tag(c, "user", "iam:TagUser", "UserName")

    def iam_UntagUser(self, c: Call) -> dict:
        return self._untag(c, "user", "iam:UntagUser", "UserName")

    def iam_ListUserTags(self, c: Call) -> dict:
        return self._list_tags(c, "user", "iam:ListUserTags", "UserName")

    def iam_TagRole(self, c: Call) -> dict:
        return self._tag(c, "role", "iam:TagRole", "RoleName")

    def iam_UntagRole(self, c: Call) -> dict:
        return self._untag(c, "role", "iam:UntagRole", "RoleName")

    def iam_ListRoleTags(self, c: Call) -> dict:
        return self._list_tags(c, "role", "iam:ListRoleTags", "RoleName")

    # ---- STS -------------------------------------------------------------------------------------------------------
    def sts_GetCallerIdentity(self, c: Call) -> dict:
        return {"UserId": c.caller.user_id or c.caller.account_id, "Account": c.caller.account_id, "Arn": c.caller.arn}

    def sts_AssumeRole(self, c: Call) -> dict:
        p = c.params
        for name in ("Policy", "PolicyArns", "Tags", "TransitiveTagKeys", "ProvidedContexts"):
            if p.get(name):
                raise ValidationError(f"{name} is not supported by this registry.")
        # The role is the resource: its account and tags (aws:ResourceAccount, aws:ResourceTag/iam:ResourceTag).
        role_account = p["RoleArn"][13:25] if p["RoleArn"].startswith("arn:aws:iam::") else ""
        role_account = role_account if role_account.isdigit() and len(role_account) == 12 else None
        authorizer = self.identity.authorizer
        keys: dict[str, Any] = dict(authorizer.condition_keys(c.context, "sts:AssumeRole", p["RoleArn"], role_account))
        keys["sts:RoleSessionName"] = p["RoleSessionName"]
        if p.get("ExternalId") is not None:
            keys["sts:ExternalId"] = p["ExternalId"]
        if p.get("SourceIdentity") is not None:
            keys["sts:SourceIdentity"] = p["SourceIdentity"]
        try:
            session = self.directory.assume_role(
                c.caller, p["RoleArn"], p["RoleSessionName"], p.get("DurationSeconds"), keys
            )
        except AccessDenied as exc:
            self.identity.audit.record(
                "authz", c.caller.arn, "sts:AssumeRole", p["RoleArn"], "deny", exc.message, c.context
            )
            raise
        self.identity.audit.record(
            "authz", c.caller.arn, "sts:AssumeRole", p["RoleArn"], "allow", "trust policy", c.context
        )
        out: dict[str, Any] = {
            "Credentials": {
                "AccessKeyId": session["access_key_id"],
                "SecretAccessKey": session["secret_access_key"],
                "SessionToken": session["session_token"],
                "Expiration": _time(session["expires_at"]),
            },
            "AssumedRoleUser": {"AssumedRoleId": session["assumed_role_id"], "Arn": session["arn"]},
        }
        if p.get("SourceIdentity") is not None:
            out["SourceIdentity"] = p["SourceIdentity"]
        return out
