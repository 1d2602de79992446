"""The AWS front door at ``POST /``: SigV4 authentication, then ECR or KMS (JSON 1.1, X-Amz-Target) or IAM/STS
(Query).

Every AWS-protocol request goes through here: the body is read (bounded), hashed, the signature verified against
the credential store, and the caller's principal handed to the service with the request context.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Protocol

from soko.access import Principal, RequestContext
from soko.aws import json_protocol, query_protocol, sigv4
from soko.aws.errors import AwsAuthError, ServiceError
from soko.ecr.errors import from_domain
from soko.errors import SokoError
from soko.http.bodies import BODY_BUDGET, BodyBudget, BodyRefused, whole_body
from soko.http.context import make_context
from soko.http.messages import Request, Response
from soko.http.threads import offload
from soko.iam.credentials import CredentialStore, Resolved
from soko.storage_full import storage_full

log = logging.getLogger("soko.aws")
GLOBAL_SIGNING_REGION = "us-east-1"  # the credential-scope region of AWS's global IAM and STS endpoints
MAX_BODY = 32 << 20  # UploadLayerPart carries up to 20 MiB, base64-encoded
UNAUTHENTICATED_BODY = 64 << 10  # read from a request whose key is refused before its body (for a precise error)
# A SigV4 body is held before its signature can be checked: anyone who knows an access key id (not a secret) can
# send one. Such bodies fill at most this share of the process's budget; the rest stays for bodies of
# authenticated clients (manifest PUTs).
UNVERIFIED_SHARE = 0.75
# BodyRefused.reason → (ECR JSON error type, IAM/STS Query error code, status)
_BODY_ERRORS = {
    "too_large": ("SerializationException", "InvalidInput", 413),
    "busy": ("ServiceUnavailable", "ServiceUnavailable", 503),
    "slow": ("RequestTimeoutException", "RequestTimeout", 408),
    "interrupted": ("SerializationException", "InvalidInput", 400),
}


class JsonService(Protocol):
    service: str  # the SigV4 service name and metrics prefix: ecr | kms
    target_prefix: str  # X-Amz-Target: <prefix>.<Operation>
    internal_error: str  # the __type of a 500 (ServerException, KMSInternalException)

    def check_supported(self, operation: str) -> None: ...
    def validate(self, operation: str, params: object) -> dict: ...
    def call(self, operation: str, params: dict, caller: Principal, context: RequestContext) -> dict: ...


class QueryService(Protocol):
    def call(
        self,
        service: str,
        operation: str,
        params: dict,
        caller: Principal,
        context: RequestContext,
        verified: sigv4.Verified,
    ) -> dict: ...


class AwsFrontDoor:
    def __init__(
        self,
        credentials: CredentialStore,
        ecr: JsonService,
        query: QueryService | None,
        audit_authn: Callable[..., None],
        endpoints: dict[tuple[str, int], str] | None = None,
        region: str = "us-east-1",
        bodies: BodyBudget | None = None,
        kms: JsonService | None = None,
        secrets: JsonService | None = None,
    ) -> None:
        self.credentials = credentials
        # A deployment serves one region: ECR requests must be signed for it. IAM is global in AWS (its one
        # endpoint's scope is us-east-1, which SDKs that know IAM use whatever their region) and STS's global
        # endpoint is us-east-1 too, while SDKs pointed at a custom endpoint sign with their configured region:
        # IAM/STS accept both, nothing else.
        self.ecr_regions = frozenset({region})
        self.query_regions = frozenset({region, GLOBAL_SIGNING_REGION})
        self.ecr = ecr
        # JSON services by X-Amz-Target prefix (ECR's is also the answer for a target no service claims)
        self.json_services: dict[str, JsonService] = {ecr.target_prefix: ecr}
        for extra in (kms, secrets):  # KMS (TrentService), Secrets Manager (secretsmanager)
            if extra is not None:
                self.json_services[extra.target_prefix] = extra
        self.query = query
        self.audit_authn = audit_authn
        self.endpoints = endpoints or {}
        self.bodies = bodies or BodyBudget(BODY_BUDGET)

    async def handle(self, request: Request) -> Response:
        context = make_context(request, self.endpoints)
        is_json = "x-amz-target" in request.headers
        signed = sigv4.SignedRequest(
            method=request.method,
            path=request.path,  # always "/" here: decoded and raw agree
            query=request.query_string,
            headers=request.headers,
            body_sha256="",  # given to checked.verify once the body is in
            host=request.authority,  # what the client signed: never a proxy's X-Forwarded-Host
        )
        presented_token = request.headers.get("x-amz-security-token") or request.query.get("X-Amz-Security-Token")
        resolved_box: dict = {}

        # The key's lookup reads the database unless cached: then it runs on a thread, before the checks use it.
        tried = sigv4.key_id_tried(signed)
        fetched: dict[str, Resolved | None] = {}
        if tried and not self.credentials.cached(tried):
            fetched[tried] = await offload(self.credentials.lookup, tried)

        def lookup(key_id: str) -> sigv4.Credentials | None:
            resolved = fetched[key_id] if key_id in fetched else self.credentials.lookup(key_id)
            if resolved is None:
                return None
            resolved_box["r"] = resolved
            return resolved.credentials(key_id, presented_token)

        json_service = self._json_service(request) if is_json else None
        expected = json_service.service if json_service is not None else {"iam", "sts"}
        regions = self.ecr_regions if is_json else self.query_regions
        # Everything but the signature itself is checked before the body is read: a request with no valid key may
        # send a small body (read, so that its error names the right service), never a large one.
        refused: AwsAuthError | None = None
        checked: sigv4.Checked | None = None
        try:
            checked = sigv4.check_head(signed, lookup, expected_service=expected, expected_regions=regions)
        except AwsAuthError as exc:
            refused = exc
        try:
            limit = MAX_BODY if refused is None else UNAUTHENTICATED_BODY
            async with whole_body(request, limit, self.bodies, share=UNVERIFIED_SHARE) as body:
                if checked is None:
                    assert refused is not None
                    return self._auth_failed(refused, body, resolved_box, context, is_json)
                try:  # the one signature computation: the head's checks are not repeated
                    verified = checked.verify(hashlib.sha256(body).hexdigest())
                except AwsAuthError as exc:
                    return self._auth_failed(exc, body, resolved_box, context, is_json)
                principal: Principal = resolved_box["r"].principal
                context.extra["access_key_id"] = verified.access_key_id
                self.audit_authn(principal.arn, "allow", f"SigV4 {verified.service}", context)
                if json_service is not None:
                    return await self._json(json_service, request, body, principal, context)
                return await self._query(request, body, principal, context, verified)
        except BodyRefused as exc:  # the rest stays unread: rsgi says Connection: close (HTTP/1.1) with the answer
            if refused is not None:
                return self._auth_failed(refused, b"", resolved_box, context, is_json)
            json_code, query_code, status = _BODY_ERRORS[exc.reason]
            response = self._error(is_json, json_code if is_json else query_code, exc.message, context, status)
            if exc.reason == "busy":
                response = Response(response.status, {**response.headers, "Retry-After": "1"}, response.body)
            return response

    def _auth_failed(
        self, exc: AwsAuthError, body: bytes, resolved_box: dict, context: RequestContext, is_json: bool
    ) -> Response:
        owner = resolved_box["r"].principal.arn if "r" in resolved_box else None  # whose key was tried
        self.audit_authn(owner, "deny", exc.audit_reason, context)
        if is_json:
            return self._json_error(exc.code, exc.message, context, exc.status)
        status, payload = query_protocol.auth_error_response(_query_service(body), exc, context.request_id)
        return self._query_response(status, payload, context)

    def _json_service(self, request: Request) -> JsonService:
        """The JSON service an X-Amz-Target names (``TrentService.*`` is KMS); ECR for anything else, which then
        answers UnknownOperationException."""
        target = (request.headers.get("x-amz-target") or "").strip()
        return self.json_services.get(target.rpartition(".")[0], self.ecr)

    async def _json(
        self, api: JsonService, request: Request, body: bytes, principal: Principal, context: RequestContext
    ) -> Response:
        try:
            operation = json_protocol.parse_target(request.headers.get("x-amz-target"), api.target_prefix)
            params = json_protocol.load_body(body)
            api.check_supported(operation)
            params = api.validate(operation, params)
            request.operation = f"{api.service}:{operation}"  # (a known operation now: a bounded metrics label)
            result = await offload(api.call, operation, params, principal, context)
        except ServiceError as exc:  # InvalidRequest included
            return self._json_error(exc.type_name, exc.message, context, exc.status or 400, **exc.extra)
        except SokoError as exc:
            mapped = from_domain(exc)
            return self._json_error(mapped.type_name, mapped.message, context, mapped.status or 400, **mapped.extra)
        except Exception as exc:
            full = storage_full(exc)
            if full is not None:
                return self._json_error("ServiceUnavailableException", full.message, context, 503)
            log.exception("%s request %s failed", api.service, context.request_id)
            message = f"internal error (request {context.request_id})"
            return self._json_error(api.internal_error, message, context, 500)
        return Response(
            200, {"x-amzn-RequestId": context.request_id}, json_protocol.dumps(result), "application/x-amz-json-1.1"
        )

    async def _query(
        self,
        request: Request,
        body: bytes,
        principal: Principal,
        context: RequestContext,
        verified: sigv4.Verified,
    ) -> Response:
        service = verified.service
        if self.query is None:
            status, payload = query_protocol.error_response(
                service, "InvalidAction", "not available", context.request_id
            )
            return self._query_response(status, payload, context)
        try:
            form = query_protocol.parse_form(body)
            operation, params = query_protocol.parse_request(service, form)
            request.operation = f"{service}:{operation}"
            result = await offload(self.query.call, service, operation, params, principal, context, verified)
            payload = query_protocol.serialize_response(service, operation, result, context.request_id)
        except ServiceError as exc:  # InvalidRequest, and services' errors with Query codes
            status, payload = query_protocol.error_response(
                service, exc.type_name, exc.message, context.request_id, status=exc.status
            )
            return self._query_response(status, payload, context)
        except Exception as exc:
            full = storage_full(exc)
            if full is not None:
                status, payload = query_protocol.error_response(
                    service, "ServiceUnavailable", full.message, context.request_id, status=503
                )
                return self._query_response(status, payload, context)
            log.exception("%s request %s failed", service, context.request_id)
            status, payload = query_protocol.error_response(
                service, "ServiceFailure", "internal error", context.request_id, status=500
            )
            return self._query_response(status, payload, context)
        return self._query_response(200, payload, context)

    @staticmethod
    def _query_response(status: int, payload: bytes, context: RequestContext) -> Response:
        return Response(status, {"x-amzn-RequestId": context.request_id}, payload, "text/xml")

    @staticmethod
    def _json_error(
        type_name: str, message: str, context: RequestContext, status: int = 400, **extra: object
    ) -> Response:
        return Response(
            status,
            {"x-amzn-RequestId": context.request_id},
            json_protocol.error_body(type_name, message, **extra),
            "application/x-amz-json-1.1",
        )

    def _error(self, is_json: bool, code: str, message: str, context: RequestContext, status: int) -> Response:
        if is_json:
            return self._json_error(code, message, context, status)
        status, payload = query_protocol.error_response("iam", code, message, context.request_id, status=status)
        return self._query_response(status, payload, context)


def _query_service(body: bytes) -> str:
    """Best guess of iam vs sts for an unauthenticated error (STS actions are few and distinctive)."""
    text = body[:200].decode(errors="replace")
    return "sts" if any(a in text for a in ("AssumeRole", "GetCallerIdentity", "GetSessionToken")) else "iam"
