"""An expired ECR token is told apart from a wrong one: ECR's own answer (403 DENIED, "Your authorization token has
expired. Reauthenticate and try again.", which docker prints as "denied: …") versus 401 UNAUTHORIZED."""

from __future__ import annotations

import base64

import httpx

from soko.iam.tokens import TOKEN_LIFETIME
from tests.conftest import ROOT_KEY_ID
from tests.oci.helpers import assert_oci_error

EXPIRED = "Your authorization token has expired. Reauthenticate and try again."


def basic(token: str) -> dict[str, str]:
    return {"Authorization": f"Basic {token}"}


def test_expired_token_has_its_own_answer(server):
    now = server.registry.ctx.clock()
    expired, expires_at = server.identity.tokens.issue(ROOT_KEY_ID, now - TOKEN_LIFETIME - 60)
    assert expires_at < now
    for method in ("GET", "HEAD"):
        r = httpx.request(method, f"{server.url}/v2/", headers=basic(expired))
        assert_oci_error(r, 403, "DENIED")
    r = httpx.get(f"{server.url}/v2/team/app/tags/list", headers=basic(expired))
    assert assert_oci_error(r, 403, "DENIED")["errors"][0]["message"] == EXPIRED
    # the same token while it was fresh was fine: a fresh one works
    assert httpx.get(f"{server.url}/v2/", headers=server.basic_auth).status_code == 200


def test_wrong_token_is_unauthorized_not_expired(server):
    user, _, password = base64.b64decode(server.token).decode().partition(":")
    version, payload, mac = password.split(".")
    forged = f"{version}.{payload}.{mac[:-2]}{'AA' if mac[-2:] != 'AA' else 'BB'}"
    for password in (forged, "not-a-token"):
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        r = httpx.get(f"{server.url}/v2/", headers=basic(token))
        body = assert_oci_error(r, 401, "UNAUTHORIZED")
        assert "expired" not in body["errors"][0]["message"]
        assert "not valid" in body["errors"][0]["message"]
        assert r.headers["WWW-Authenticate"].startswith("Basic realm=")
