"""GetAuthorizationToken: the 12-hour registry password bound to the caller's access key."""

from __future__ import annotations

from soko.ecr.api import Call


def proxy_endpoint(call: Call, registry_id: str, bare_host_ok: bool = True) -> str:
    """Where clients reach that account's registry: when the caller addressed Soko by a bare host and asks for its
    own registry, the same host (the bare host serves the caller's own account: no DNS set-up needed); otherwise
    the account's own host name under the configured domain, as ECR answers."""
    settings = call.api.settings
    host = call.context.host
    if bare_host_ok and registry_id == call.caller.account_id and ".dkr.ecr." not in host:
        return f"{call.context.scheme}://{host}"
    port = f":{host.rsplit(':', 1)[1]}" if ":" in host else ""
    return f"{call.context.scheme}://{registry_id}.dkr.ecr.{settings.region}.{settings.domain}{port}"


def get_authorization_token(call: Call) -> dict:
    call.authorize("ecr:GetAuthorizationToken")
    identity = call.api.identity
    key_id = call.context.extra["access_key_id"]
    resolved = identity.credentials.lookup(key_id)
    not_after = resolved.expires_at if resolved else None
    token, expires_at = identity.tokens.issue(key_id, call.api.identity.ctx.clock(), not_after)
    registry_ids = call.params.get("registryIds") or [call.caller.account_id]
    return {
        "authorizationData": [
            {"authorizationToken": token, "expiresAt": expires_at, "proxyEndpoint": proxy_endpoint(call, rid)}
            for rid in registry_ids
        ]
    }


OPERATIONS = {"GetAuthorizationToken": get_authorization_token}
