"""AWS Signature Version 4 verification (Authorization header and presigned query forms).

The canonical request, string to sign and signature come from botocore's own `SigV4Auth`, so whatever botocore
(boto3, the aws cli) signs verifies here byte for byte; this module only parses what the client sent, rebuilds the
signer's inputs from it and applies AWS's checks and error wording. Secrets never reach a message or a log.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Protocol
from urllib.parse import unquote

from botocore.auth import UNSIGNED_PAYLOAD, SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import ReadOnlyCredentials

from soko.aws.errors import AwsAuthError

__all__ = [
    "ALGORITHM",
    "AwsAuthError",
    "Checked",
    "Credentials",
    "SignedRequest",
    "Verified",
    "check_head",
    "verify",
]

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_PRESIGNED_EXPIRES = 604800  # one week, AWS's ceiling for X-Amz-Expires
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_AMZ_DATE_RE = re.compile(r"\d{8}T\d{6}Z")

MISSING_TOKEN = "Missing Authentication Token"
INVALID_TOKEN = "The security token included in the request is invalid."
EXPIRED_TOKEN = "The security token included in the request is expired"
BAD_SIGNATURE = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)


class HeaderItems(Protocol):
    """Request headers as the HTTP layer holds them (a mapping, or soko.http.messages.Headers)."""

    def items(self) -> Iterable[tuple[str, str]]: ...


@dataclass(frozen=True)
class SignedRequest:
    """What the HTTP layer hands in. `path` is the path without the query (the AWS APIs live at "/", where the
    raw and the decoded path agree); `query` the raw query string; `host` the value to verify the signed `host`
    header against (usually the Host header; empty means "take it from `headers`"). `headers.items()` may yield a
    repeated header once per value: the values are canonicalised comma-joined, as SigV4 requires."""

    method: str
    path: str
    query: str
    headers: HeaderItems
    body_sha256: str
    host: str = ""


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None
    expires_at: datetime | None = None  # temporary (STS) credentials stop working here


@dataclass(frozen=True)
class Verified:
    access_key_id: str
    region: str
    service: str
    signed_at: datetime
    session_token: str | None


@dataclass(frozen=True)
class _Auth:
    """The signature parameters, parsed from either form."""

    access_key_id: str
    scope_date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: str
    session_token: str | None
    expires: int | None  # presigned only


def _incomplete(message: str) -> AwsAuthError:
    return AwsAuthError("IncompleteSignatureException", message, 400)


def _invalid(message: str = BAD_SIGNATURE) -> AwsAuthError:
    return AwsAuthError("InvalidSignatureException", message, 400)


def _header_index(headers: HeaderItems) -> dict[str, list[str]]:
    """Lower-cased name -> every value, in arrival order (`items()` may yield a name more than once)."""
    index: dict[str, list[str]] = {}
    for name, value in headers.items():
        index.setdefault(name.lower(), []).append(value)
    return index


def _query_pairs(query: str) -> list[tuple[str, str]]:
    """Decoded (key, value) pairs in order. '+' stays a literal plus: SigV4 clients percent-encode spaces."""
    pairs = []
    for part in query.split("&"):
        if part:
            key, _, value = part.partition("=")
            pairs.append((unquote(key), unquote(value)))
    return pairs


def _parse_credential(credential: str) -> tuple[str, str, str, str]:
    parts = credential.split("/")
    if len(parts) != 5 or not all(parts):
        raise _incomplete(
            "Credential must have exactly 5 slash-delimited elements, "
            f"e.g. keyid/date/region/service/term, got '{credential}'"
        )
    key_id, scope_date, region, service, terminator = parts
    if terminator != "aws4_request":
        raise _invalid(f"Credential should be scoped with a valid terminator: 'aws4_request', not '{terminator}'.")
    return key_id, scope_date, region, service


def _parse_signed_headers(value: str) -> tuple[str, ...]:
    return tuple(h for h in value.lower().split(";") if h)


def _amz_date_from_http_date(value: str) -> str:
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        parsed = None
    if parsed is None:
        raise _incomplete(
            f"Date must be in ISO-8601 'basic format'. Got '{value}'. See http://en.wikipedia.org/wiki/ISO_8601"
        )
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime(_AMZ_DATE)


def _parse_header_auth(authorization: str, headers: dict[str, list[str]]) -> _Auth:
    scheme, _, rest = authorization.strip().partition(" ")
    if scheme.startswith("AWS4-") and scheme != ALGORITHM:
        raise _incomplete(f"Unsupported AWS 'algorithm': '{scheme}'.")
    params: dict[str, str] = {}
    if scheme == ALGORITHM:
        # AWS tokenises on commas *and* whitespace, so "Credential= AKID/..." reports the stray token.
        for token in re.split(r"[,\s]+", rest.strip()):
            if not token:
                continue
            if "=" not in token:
                raise _incomplete(
                    f"'{token}' not a valid key=value pair (missing equal-sign) in Authorization header: "
                    f"'{authorization}'."
                )
            key, _, value = token.partition("=")
            params[key] = value
    date_header = headers.get("x-amz-date", headers.get("date"))
    problems = [
        f"Authorization header requires '{name}' parameter."
        for name in ("Credential", "Signature", "SignedHeaders")
        if name not in params
    ]
    if not date_header:
        problems.append("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
    if problems:
        raise _incomplete(" ".join([*problems, f"Authorization={authorization}"]))
    assert date_header is not None
    # botocore signs with the Date header's instant when a client set one instead of X-Amz-Date.
    amz_date = date_header[0].strip() if "x-amz-date" in headers else _amz_date_from_http_date(date_header[0])
    key_id, scope_date, region, service = _parse_credential(params["Credential"])
    token = headers.get("x-amz-security-token")
    return _Auth(
        access_key_id=key_id,
        scope_date=scope_date,
        region=region,
        service=service,
        signed_headers=_parse_signed_headers(params["SignedHeaders"]),
        signature=params["Signature"],
        amz_date=amz_date,
        session_token=token[0] if token else None,
        expires=None,
    )


_PRESIGN_PARAMS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Signature",
    "X-Amz-Date",
    "X-Amz-SignedHeaders",
)


def _parse_query_auth(query: dict[str, str]) -> _Auth:
    missing = [f"AWS query-string parameters must include '{p}'." for p in _PRESIGN_PARAMS if p not in query]
    if missing:
        raise _incomplete(" ".join([*missing, "Re-examine the query-string parameters."]))
    if query["X-Amz-Algorithm"] != ALGORITHM:
        raise _incomplete(f"Unsupported AWS 'algorithm': '{query['X-Amz-Algorithm']}'.")
    expires: int | None = None
    if "X-Amz-Expires" in query:
        raw = query["X-Amz-Expires"]
        if not raw.isdigit():
            raise _incomplete("X-Amz-Expires should be a number")
        expires = int(raw)
        if expires > MAX_PRESIGNED_EXPIRES:
            raise _incomplete(f"X-Amz-Expires must be less than a week (in seconds) that is {MAX_PRESIGNED_EXPIRES}")
    key_id, scope_date, region, service = _parse_credential(query["X-Amz-Credential"])
    return _Auth(
        access_key_id=key_id,
        scope_date=scope_date,
        region=region,
        service=service,
        signed_headers=_parse_signed_headers(query["X-Amz-SignedHeaders"]),
        signature=query["X-Amz-Signature"],
        amz_date=query["X-Amz-Date"],
        session_token=query.get("X-Amz-Security-Token"),
        expires=expires,
    )


def _check_time(auth: _Auth, now: datetime, max_skew: timedelta) -> datetime:
    if not _AMZ_DATE_RE.fullmatch(auth.amz_date):
        raise _incomplete(
            f"Date must be in ISO-8601 'basic format'. Got '{auth.amz_date}'. See http://en.wikipedia.org/wiki/ISO_8601"
        )
    try:
        signed_at = datetime.strptime(auth.amz_date, _AMZ_DATE).replace(tzinfo=UTC)
    except ValueError:
        raise _incomplete(
            f"Date must be in ISO-8601 'basic format'. Got '{auth.amz_date}'. See http://en.wikipedia.org/wiki/ISO_8601"
        ) from None
    if auth.scope_date != auth.amz_date[:8]:
        raise _invalid(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            f"'{auth.scope_date}' != '{auth.amz_date[:8]}', from '{auth.amz_date}'."
        )
    stamp = now.strftime(_AMZ_DATE)
    minutes = int(max_skew.total_seconds() // 60)
    if signed_at > now + max_skew:
        later = (now + max_skew).strftime(_AMZ_DATE)
        raise _invalid(
            f"Signature not yet current: {auth.amz_date} is still later than {later} ({stamp} + {minutes} min.)"
        )
    if auth.expires is None and signed_at < now - max_skew:
        earlier = (now - max_skew).strftime(_AMZ_DATE)
        raise _invalid(f"Signature expired: {auth.amz_date} is now earlier than {earlier} ({stamp} - {minutes} min.)")
    if auth.expires is not None and signed_at + timedelta(seconds=auth.expires) < now:
        earlier = (now - timedelta(seconds=auth.expires)).strftime(_AMZ_DATE)
        raise _invalid(
            f"Signature expired: {auth.amz_date} is now earlier than {earlier} ({stamp} - {auth.expires} sec.)"
        )
    return signed_at


class _Canonicaliser(SigV4Auth):
    """botocore's signer, fed with exactly what the client signed instead of what it would sign itself."""

    def __init__(
        self,
        credentials: ReadOnlyCredentials,
        auth: _Auth,
        headers: list[tuple[str, str]],
        query: list[tuple[str, str]],
        payload_hash: str,
    ) -> None:
        super().__init__(credentials, auth.service, auth.region)
        self._signed = headers
        self._query = query
        self._payload_hash = payload_hash
        self._s3 = auth.service == "s3"

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        header_map = HTTPHeaders()
        for name, value in self._signed:
            header_map[name] = value  # Message.__setitem__ appends, keeping repeated headers
        return header_map

    def canonical_query_string(self, request: AWSRequest) -> str:
        return self._canonical_query_string_params(self._query)

    def payload(self, request: AWSRequest) -> str:
        return self._payload_hash

    def _normalize_url_path(self, path: str) -> str:
        # S3 signs the path as sent; every other service normalises and encodes it once more.
        return path if self._s3 else super()._normalize_url_path(path)

    def compute(self, request: AWSRequest, amz_date: str) -> str:
        request.context["timestamp"] = amz_date
        canonical = self.canonical_request(request)
        return self.signature(self.string_to_sign(request, canonical), request)


def _signed_header_values(auth: _Auth, headers: dict[str, list[str]], host: str) -> list[tuple[str, str]]:
    if "host" not in auth.signed_headers:
        raise _incomplete("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
    values: list[tuple[str, str]] = []
    for name in auth.signed_headers:
        if name == "host" and host:
            values.append((name, host))
        elif name in headers:
            values.extend((name, v) for v in headers[name])
        else:
            raise _invalid()  # AWS simply fails to match: the client signed a header we never received
    return values


def verify(
    req: SignedRequest,
    lookup: Callable[[str], Credentials | None],
    *,
    now: datetime | None = None,
    expected_service: str | Iterable[str] | None = None,
    expected_regions: Iterable[str] | None = None,
    max_skew: timedelta = timedelta(minutes=15),
) -> Verified:
    """Verify a SigV4-signed request; return who signed it or raise `AwsAuthError` (naming the key id tried).

    ``expected_service`` and ``expected_regions`` are what the credential scope may name: a request signed for
    another service or region is refused before its key is even looked up, in AWS's words."""
    checked = check_head(
        req, lookup, now=now, expected_service=expected_service, expected_regions=expected_regions, max_skew=max_skew
    )
    return checked.verify(req.body_sha256)


_KEY_ID = re.compile(r"Credential=([A-Za-z0-9]{1,128})(?=/)")


def key_id_tried(req: SignedRequest) -> str | None:
    """The access key id in the Authorization header or X-Amz-Credential, if it has the form of one."""
    headers = _header_index(req.headers)
    source = (headers.get("authorization") or [""])[0]
    if not source:
        source = "Credential=" + dict(_query_pairs(req.query or req.path.partition("?")[2])).get("X-Amz-Credential", "")
    match = _KEY_ID.search(source)
    return match.group(1) if match else None


def check_head(
    req: SignedRequest,
    lookup: Callable[[str], Credentials | None],
    *,
    now: datetime | None = None,
    expected_service: str | Iterable[str] | None = None,
    expected_regions: Iterable[str] | None = None,
    max_skew: timedelta = timedelta(minutes=15),
) -> Checked:
    """Every check that needs no body (``req.body_sha256`` is ignored): the signature's form, the credential scope,
    the time, the key, its token and expiry. Raises what ``verify`` would, so the caller can refuse a request
    before reading a large body; once the body is in, ``Checked.verify(body_sha256)`` checks the signature itself
    without parsing or looking anything up again."""
    try:
        return _check_head(req, lookup, _now(now), expected_service, expected_regions, max_skew)
    except AwsAuthError as exc:
        exc.access_key_id = key_id_tried(req)
        raise


def _now(now: datetime | None) -> datetime:
    return (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Checked:
    """A request that passed every check but the signature itself (``check_head``)."""

    method: str
    auth: _Auth
    presigned: bool
    headers: dict[str, list[str]]
    path: str
    query_pairs: list[tuple[str, str]]
    signed: list[tuple[str, str]]
    signed_at: datetime
    creds: Credentials

    @property
    def access_key_id(self) -> str:
        return self.auth.access_key_id

    def verify(self, body_sha256: str) -> Verified:
        """The signature over this request with a body of that SHA-256 (hex): who signed it, or AwsAuthError."""
        try:
            return self._verify(body_sha256)
        except AwsAuthError as exc:
            exc.access_key_id = self.auth.access_key_id
            raise

    def _verify(self, body_sha256: str) -> Verified:
        auth = self.auth
        declared = self.headers.get("x-amz-content-sha256")
        if declared:
            payloads = _declared_payload(declared[0].strip(), body_sha256, self.presigned)
        elif self.presigned:
            # botocore presigns non-S3 services over the (empty) body hash and S3 over UNSIGNED-PAYLOAD.
            payloads = [body_sha256, UNSIGNED_PAYLOAD]
        else:
            payloads = [body_sha256]
        creds = self.creds
        botocreds = ReadOnlyCredentials(creds.access_key_id, creds.secret_access_key, creds.session_token)
        request = AWSRequest(method=self.method.upper(), url=f"http://signing.invalid{self.path or '/'}")
        provided = auth.signature.lower().encode()
        for payload in payloads:
            signer = _Canonicaliser(botocreds, auth, self.signed, self.query_pairs, payload)
            if hmac.compare_digest(signer.compute(request, auth.amz_date).encode(), provided):
                return Verified(auth.access_key_id, auth.region, auth.service, self.signed_at, auth.session_token)
        raise _invalid()


def _check_head(
    req: SignedRequest,
    lookup: Callable[[str], Credentials | None],
    now: datetime,
    expected_service: str | Iterable[str] | None,
    expected_regions: Iterable[str] | None,
    max_skew: timedelta,
) -> Checked:
    headers = _header_index(req.headers)
    path, _, extra_query = req.path.partition("?")
    raw_query = req.query or extra_query
    query_pairs = _query_pairs(raw_query)
    query = dict(query_pairs)

    authorization = headers.get("authorization")
    if authorization:
        auth = _parse_header_auth(authorization[0], headers)
        presigned = False
    elif query.keys() & {"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature"}:
        auth = _parse_query_auth(query)
        presigned = True
        query_pairs = [(k, v) for k, v in query_pairs if k != "X-Amz-Signature"]
    else:
        raise AwsAuthError("MissingAuthenticationTokenException", MISSING_TOKEN, 403)

    if expected_regions is not None and auth.region not in expected_regions:
        raise _invalid(f"Credential should be scoped to a valid region, not '{auth.region}'. ")
    if expected_service is not None:
        allowed = {expected_service} if isinstance(expected_service, str) else set(expected_service)
        if auth.service not in allowed:
            raise _invalid(f"Credential should be scoped to correct service: '{sorted(allowed)[0]}'. ")
    signed_at = _check_time(auth, now, max_skew)
    signed = _signed_header_values(auth, headers, req.host.strip())
    if not path.startswith("/"):
        raise _invalid()  # origin-form only: "*" or absolute URLs would canonicalise as "/" and replay its signature

    creds = lookup(auth.access_key_id)
    if creds is None:
        raise AwsAuthError("UnrecognizedClientException", INVALID_TOKEN, 400)
    if not _token_matches(creds.session_token, auth.session_token):
        raise AwsAuthError("UnrecognizedClientException", INVALID_TOKEN, 400)
    if creds.expires_at is not None and now >= creds.expires_at:
        raise AwsAuthError("ExpiredTokenException", EXPIRED_TOKEN, 400)

    return Checked(req.method, auth, presigned, headers, path, query_pairs, signed, signed_at, creds)


def _token_matches(expected: str | None, provided: str | None) -> bool:
    """Temporary credentials need their exact token; long-term keys must come without one."""
    if expected is None or provided is None:
        return expected is None and provided is None
    return hmac.compare_digest(expected.encode(), provided.encode())


def _declared_payload(declared: str, body_sha256: str, presigned: bool) -> list[str]:
    if declared == UNSIGNED_PAYLOAD and presigned:
        return [declared]
    if not hmac.compare_digest(declared.lower().encode(), body_sha256.lower().encode()):
        raise _invalid("The provided 'x-amz-content-sha256' header does not match what was computed.")
    return [declared]
