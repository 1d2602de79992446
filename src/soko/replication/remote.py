"""Destinations in other regions: other Soko deployments, listed in the ``regions`` setting with a key of a principal
of each destination account there. A copy logs in as ECR clients do (GetAuthorizationToken over SigV4 for that
region, then Basic ``AWS:<token>`` on /v2/) and pushes with the shared OCI client (``soko.remote``), each request
marked ``Soko-Replicated-From: <region>/<account>``: the destination then authorizes ``ecr:ReplicateImage``, creates
a missing repository as replication does (its REPLICATION template, else defaults) and records the copy as an
``ECR Replication Action``, not a push (no chaining)."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as AwsCredentials

from soko.remote import Credentials, RegistryClient, UpstreamError

HEADER = "Soko-Replicated-From"
TARGET = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken"
REFRESH_BEFORE = 600.0  # seconds before a token's expiry that a new one is asked for


@dataclass(frozen=True)
class _Login:
    client: RegistryClient
    expires_at: float


class RemoteRegions:
    def __init__(self, regions: dict, source_region: str) -> None:
        self.regions = regions
        self.source_region = source_region
        self._logins: dict[tuple[str, str, str], _Login] = {}
        self._lock = threading.Lock()

    def reachable(self, region: str, account: str) -> bool:
        return account in (self.regions.get(region) or {}).get("accounts", {})

    def client(self, region: str, account: str, source_account: str) -> RegistryClient:
        """A logged-in client of ``account`` in ``region`` (a new token once the last one nears its expiry)."""
        key = (region, account, source_account)
        with self._lock:
            login = self._logins.get(key)
        if login is not None and login.expires_at - REFRESH_BEFORE > time.time():
            return login.client
        entry = self.regions[region]
        verify = entry.get("tls_verify", True)
        password, expires_at = self._token(entry["url"], region, entry["accounts"][account], verify)
        client = RegistryClient(
            entry["url"],
            Credentials("AWS", password),
            verify=verify,
            headers={HEADER: f"{self.source_region}/{source_account}"},
        )
        with self._lock:
            old = self._logins.get(key)
            self._logins[key] = _Login(client, expires_at)
        if old is not None:
            old.client.close()
        return client

    @staticmethod
    def _token(url: str, region: str, key: dict, verify: bool | str) -> tuple[str, float]:
        with open(key["secret_access_key_file"], encoding="utf-8") as f:
            secret = f.read().strip()
        body = b"{}"
        endpoint = url.rstrip("/") + "/"
        request = AWSRequest(
            "POST",
            endpoint,
            data=body,
            headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": TARGET},
        )
        SigV4Auth(AwsCredentials(key["access_key_id"], secret), "ecr", region).add_auth(request)
        try:
            with httpx.Client(timeout=30.0, verify=verify, trust_env=False) as http:
                response = http.post(endpoint, content=body, headers=dict(request.headers.items()))
        except httpx.HTTPError as exc:
            raise UpstreamError(
                "UpstreamUnavailable", f"the {region} deployment is unreachable ({type(exc).__name__})"
            ) from None
        if response.status_code in (400, 403):
            try:
                kind = response.json().get("__type", "")
            except ValueError:
                kind = ""
            if kind in ("UnrecognizedClientException", "InvalidSignatureException", "AccessDeniedException"):
                raise UpstreamError(
                    "UpstreamAccessDenied",
                    f"the {region} deployment refused the configured key ({kind}): check regions.{region}",
                    status=response.status_code,
                )
        if response.status_code != 200:
            raise UpstreamError(
                "UpstreamUnavailable",
                f"the {region} deployment failed to issue a token (HTTP {response.status_code})",
                status=response.status_code,
            )
        try:
            data = response.json()["authorizationData"][0]
            user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
            expires_at = float(data["expiresAt"])
        except (ValueError, KeyError, IndexError, TypeError, UnicodeDecodeError, json.JSONDecodeError):
            raise UpstreamError("UpstreamUnavailable", f"the {region} deployment answered without a token") from None
        if user != "AWS" or not password:
            raise UpstreamError("UpstreamUnavailable", f"the {region} deployment answered without a token")
        return password, expires_at

    def close(self) -> None:
        with self._lock:
            logins, self._logins = list(self._logins.values()), {}
        for login in logins:
            login.client.close()


def pieces(reader, size: int = 1 << 20) -> Iterator[bytes]:
    """A stored blob's content, piece by piece (closing the reader at the end)."""
    try:
        while True:
            piece = reader.read(size)
            if not piece:
                return
            yield piece
    finally:
        reader.close()
