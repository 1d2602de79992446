from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soko.aws.sigv4 import (
    BAD_SIGNATURE,
    EXPIRED_TOKEN,
    INVALID_TOKEN,
    AwsAuthError,
    Credentials,
    SignedRequest,
    check_head,
    verify,
)

from ._helpers import AKID, NOW, SECRET, TEMP_AKID, TOKEN, capture, lookup, presign, sign, to_signed


def fails(req: SignedRequest, code: str, **kwargs: object) -> AwsAuthError:
    kwargs.setdefault("now", NOW)
    with pytest.raises(AwsAuthError) as info:
        verify(req, lookup, **kwargs)  # type: ignore[arg-type]
    assert info.value.code == code, info.value.message
    return info.value


def with_headers(req: SignedRequest, **changes: str | None) -> SignedRequest:
    headers = {k: v for k, v in req.headers.items() if k.lower() not in {c.lower() for c in changes}}
    headers.update({k: v for k, v in changes.items() if v is not None})
    return replace(req, headers=headers)


# --- what real clients send -------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["https://api.ecr.us-east-1.amazonaws.com", "http://localhost:5000"])
def test_boto3_ecr_request_verifies(endpoint: str) -> None:
    sent = capture("ecr", "describe_repositories", {"repositoryNames": ["team/app"]}, endpoint_url=endpoint)
    verified = verify(to_signed(sent), lookup, expected_service="ecr")
    assert (verified.access_key_id, verified.region, verified.service) == (AKID, "us-east-1", "ecr")
    assert verified.session_token is None


def test_boto3_request_with_session_token_verifies() -> None:
    sent = capture(
        "ecr",
        "get_authorization_token",
        {},
        endpoint_url="http://127.0.0.1:8080",
        aws_access_key_id=TEMP_AKID,
        aws_session_token=TOKEN,
        region_name="eu-west-1",
    )
    verified = verify(to_signed(sent), lookup, expected_service={"ecr", "api.ecr"})
    assert verified.session_token == TOKEN and verified.region == "eu-west-1"


def test_boto3_iam_query_request_verifies() -> None:
    sent = capture(
        "iam",
        "create_user",
        {"UserName": "alice", "Tags": [{"Key": "team", "Value": "a b/c+d"}]},
        endpoint_url="http://localhost:5000",
    )
    assert verify(to_signed(sent), lookup, expected_service="iam").service == "iam"


def test_boto3_upload_layer_part_with_binary_body_verifies() -> None:
    params = {
        "repositoryName": "app",
        "uploadId": "0f2cbbb5-8c8d-4b7e-9a61-3e35a7d2b3f1",
        "partFirstByte": 0,
        "partLastByte": 255,
        "layerPartBlob": bytes(range(256)),
    }
    sent = capture("ecr", "upload_layer_part", params, endpoint_url="http://localhost:5000")
    verify(to_signed(sent), lookup)


def test_sts_presigned_url_verifies() -> None:
    import boto3

    client = boto3.session.Session().client(
        "sts",
        region_name="us-east-1",
        aws_access_key_id=AKID,
        aws_secret_access_key=SECRET,
        endpoint_url="https://sts.us-east-1.amazonaws.com",
    )
    # Presigned as `aws eks get-token` does it: GET, so the URL works from any HTTP client.
    url = client.generate_presigned_url("get_caller_identity", ExpiresIn=60, HttpMethod="GET")
    from botocore.awsrequest import AWSRequest

    verified = verify(to_signed(AWSRequest(method="GET", url=url)), lookup, expected_service="sts")
    assert verified.service == "sts"


def test_s3_presigned_url_with_non_ascii_key_verifies() -> None:
    import boto3
    from botocore.awsrequest import AWSRequest
    from botocore.config import Config

    client = boto3.session.Session().client(
        "s3",
        region_name="us-east-1",
        aws_access_key_id=AKID,
        aws_secret_access_key=SECRET,
        endpoint_url="http://localhost:9000",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    url = client.generate_presigned_url(
        "get_object", Params={"Bucket": "blobs", "Key": "dir/café ünï +x~y.txt"}, ExpiresIn=300
    )
    assert verify(to_signed(AWSRequest(method="GET", url=url)), lookup).service == "s3"


@pytest.mark.parametrize(
    "url",
    [
        "https://h.example/v2/caf%C3%A9/blobs/a%20b",
        "https://h.example/v2/café/ü",
        "https://h.example/a/./b/../c//d/",
        "https://h.example/?b=2&a=2&a=1&c=x%20y&d=&e&%E2%9C%93=%2F",
        "http://h.example:8443/x?list-type=2&prefix=a%2Fb&prefix=a",
    ],
)
def test_paths_and_queries_verify(url: str) -> None:
    req = to_signed(sign("GET", url, body=b""))
    verify(req, lookup, now=NOW)


def test_query_order_on_the_wire_does_not_matter() -> None:
    req = to_signed(sign("GET", "https://h.example/?b=2&a=2&a=1", body=b""))
    verify(replace(req, query="a=1&b=2&a=2"), lookup, now=NOW)


def test_date_header_instead_of_x_amz_date() -> None:
    signed = sign(headers={"Date": "whatever", "Content-Type": "application/x-amz-json-1.1"})
    req = to_signed(signed)
    assert "X-Amz-Date" not in req.headers
    verify(req, lookup, now=NOW)


def test_repeated_header_values_are_joined_like_the_signer_does() -> None:
    signed = sign(headers={"X-Amz-Meta-A": "1"})
    signed.headers["X-Amz-Meta-A"] = "two  spaces"  # HTTPHeaders appends: a second value
    signed.headers["Authorization"] = ""
    del signed.headers["Authorization"]
    from botocore.auth import SigV4Auth
    from botocore.credentials import Credentials as BotoCredentials

    from ._helpers import frozen

    with frozen(NOW):
        SigV4Auth(BotoCredentials(AKID, SECRET), "ecr", "us-east-1").add_auth(signed)
    plain = to_signed(signed)
    pairs = [(name, value.decode() if isinstance(value, bytes) else value) for name, value in signed.headers.items()]
    pairs.append(("host", plain.headers["Host"]))
    verify(replace(plain, headers=RepeatedHeaders(pairs)), lookup, now=NOW)


class RepeatedHeaders:
    """Headers as the server hands them over: lower-case names, a repeated header once per value (granian's RSGI
    headers behave so)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = [(name.lower(), value) for name, value in pairs]

    def items(self) -> list[tuple[str, str]]:
        return list(self._pairs)

    def get(self, key: str, default: object = None) -> object:
        return next((value for name, value in self._pairs if name == key.lower()), default)

    def __contains__(self, key: str) -> bool:
        return any(name == key.lower() for name, _ in self._pairs)


def test_explicit_host_overrides_header() -> None:
    req = to_signed(sign(), with_host_header=False)
    verify(req, lookup, now=NOW)
    fails(replace(req, host="evil.example"), "InvalidSignatureException")


def test_the_head_is_checked_once_and_the_body_hash_finishes_it() -> None:
    """check_head parses, looks the key up and checks the time once; Checked.verify only adds the body's hash."""
    body = b'{"repositoryNames":["a"]}'
    looked_up: list[str] = []

    def counting(key_id: str) -> Credentials | None:
        looked_up.append(key_id)
        return lookup(key_id)

    checked = check_head(replace(to_signed(sign(body=body)), body_sha256=""), counting, now=NOW)
    assert checked.access_key_id == AKID
    assert checked.verify(hashlib.sha256(body).hexdigest()).access_key_id == AKID
    with pytest.raises(AwsAuthError) as info:
        checked.verify(hashlib.sha256(body + b" ").hexdigest())
    assert (info.value.code, info.value.access_key_id) == ("InvalidSignatureException", AKID)
    assert looked_up == [AKID]


def test_matching_content_sha256_header_is_accepted() -> None:
    body = b'{"repositoryNames":["a"]}'
    headers = {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest(),
    }
    verify(to_signed(sign(headers=headers, body=body)), lookup, now=NOW)


# --- tampering and wrong keys ----------------------------------------------------------------------------


def test_wrong_secret() -> None:
    err = fails(to_signed(sign(secret="not-the-secret")), "InvalidSignatureException")
    assert err.message == BAD_SIGNATURE and err.status == 400
    assert err.query_code == "SignatureDoesNotMatch" and err.query_status == 403
    assert SECRET not in err.message


def test_tampered_header() -> None:
    req = to_signed(sign())
    fails(
        with_headers(req, **{"X-Amz-Target": "AmazonEC2ContainerRegistry_V20150921.DeleteRepository"}),
        "InvalidSignatureException",
    )


def test_tampered_body() -> None:
    req = to_signed(sign())
    fails(
        replace(req, body_sha256=hashlib.sha256(b'{"repositoryNames":["b"]}').hexdigest()), "InvalidSignatureException"
    )


def test_tampered_query() -> None:
    req = to_signed(sign("GET", "https://h.example/x?a=1&b=2", body=b""))
    fails(replace(req, query="a=1&b=3"), "InvalidSignatureException")
    fails(replace(req, query="a=1&b=2&c=3"), "InvalidSignatureException")


def test_tampered_method_and_path() -> None:
    req = to_signed(sign("GET", "https://h.example/x", body=b""))
    fails(replace(req, method="DELETE"), "InvalidSignatureException")
    fails(replace(req, path="/y"), "InvalidSignatureException")
    root = to_signed(sign("GET", "https://h.example/", body=b""))
    fails(replace(root, path="*"), "InvalidSignatureException")


def test_missing_signed_header() -> None:
    req = to_signed(sign())
    fails(with_headers(req, **{"X-Amz-Target": None}), "InvalidSignatureException")


def test_host_must_be_signed() -> None:
    req = to_signed(sign())
    auth = req.headers["Authorization"].replace("host;", "")
    err = fails(with_headers(req, Authorization=auth), "IncompleteSignatureException")
    assert err.message == "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."


def test_content_sha256_header_must_match_body() -> None:
    headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Content-SHA256": "0" * 64}
    err = fails(to_signed(sign(headers=headers)), "InvalidSignatureException")
    assert "x-amz-content-sha256" in err.message


def test_unsigned_payload_only_for_presigned() -> None:
    headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}
    fails(to_signed(sign(headers=headers)), "InvalidSignatureException")


def test_unknown_key_id() -> None:
    err = fails(to_signed(sign(key="AKIAUNKNOWNKEY000000")), "UnrecognizedClientException")
    assert err.message == INVALID_TOKEN and err.query_code == "InvalidClientTokenId"


# --- session tokens ---------------------------------------------------------------------------------------


def test_session_token_verifies() -> None:
    assert verify(to_signed(sign(key=TEMP_AKID, token=TOKEN)), lookup, now=NOW).session_token == TOKEN


def test_session_token_missing() -> None:
    fails(to_signed(sign(key=TEMP_AKID)), "UnrecognizedClientException")


def test_session_token_wrong() -> None:
    fails(to_signed(sign(key=TEMP_AKID, token="not-the-token")), "UnrecognizedClientException")


def test_session_token_on_long_term_key() -> None:
    fails(to_signed(sign(key=AKID, token=TOKEN)), "UnrecognizedClientException")


def test_expired_credentials() -> None:
    def expired(key: str) -> Credentials:
        return Credentials(TEMP_AKID, SECRET, TOKEN, expires_at=NOW - timedelta(seconds=1))

    with pytest.raises(AwsAuthError) as info:
        verify(to_signed(sign(key=TEMP_AKID, token=TOKEN)), expired, now=NOW)
    assert info.value.code == "ExpiredTokenException" and info.value.message == EXPIRED_TOKEN
    assert info.value.query_code == "ExpiredToken"


# --- clock --------------------------------------------------------------------------------------------------


def test_signature_expired_wording() -> None:
    err = fails(to_signed(sign()), "InvalidSignatureException", now=NOW + timedelta(minutes=16))
    assert err.message == (
        "Signature expired: 20260101T120000Z is now earlier than 20260101T120100Z (20260101T121600Z - 15 min.)"
    )


def test_signature_not_yet_current_wording() -> None:
    err = fails(to_signed(sign()), "InvalidSignatureException", now=NOW - timedelta(minutes=16))
    assert err.message == (
        "Signature not yet current: 20260101T120000Z is still later than 20260101T115900Z (20260101T114400Z + 15 min.)"
    )


@pytest.mark.parametrize("offset", [timedelta(minutes=-14), timedelta(minutes=14)])
def test_within_skew(offset: timedelta) -> None:
    verify(to_signed(sign()), lookup, now=NOW + offset)


def test_custom_skew() -> None:
    fails(to_signed(sign()), "InvalidSignatureException", now=NOW + timedelta(minutes=6), max_skew=timedelta(minutes=5))


def test_scope_date_must_match_request_date() -> None:
    req = to_signed(sign())
    auth = req.headers["Authorization"].replace("/20260101/", "/20251231/")
    err = fails(with_headers(req, Authorization=auth), "InvalidSignatureException")
    assert err.message.startswith("Date in Credential scope does not match YYYYMMDD")


# --- presigned --------------------------------------------------------------------------------------------


def test_presigned_verifies_until_expiry() -> None:
    req = to_signed(presign("https://sts.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15", expires=60))
    assert verify(req, lookup, now=NOW + timedelta(seconds=60)).service == "sts"
    err = fails(req, "InvalidSignatureException", now=NOW + timedelta(seconds=61))
    assert err.message.startswith("Signature expired: 20260101T120000Z is now earlier than")


def test_presigned_not_yet_current() -> None:
    req = to_signed(presign("https://sts.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15"))
    fails(req, "InvalidSignatureException", now=NOW - timedelta(minutes=16))


def test_presigned_with_signed_extra_header_and_token() -> None:
    # The shape of an EKS token: GetCallerIdentity presigned with x-k8s-aws-id signed.
    req = to_signed(
        presign(
            "https://sts.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15",
            key=TEMP_AKID,
            token=TOKEN,
            headers={"x-k8s-aws-id": "cluster"},
        )
    )
    assert verify(req, lookup, now=NOW).session_token == TOKEN
    fails(with_headers(req, **{"x-k8s-aws-id": "other"}), "InvalidSignatureException")


def test_presigned_expires_ceiling() -> None:
    req = to_signed(presign("https://sts.amazonaws.com/?Action=GetCallerIdentity", expires=604801))
    err = fails(req, "IncompleteSignatureException")
    assert "604800" in err.message


def test_presigned_tampered_query() -> None:
    req = to_signed(presign("https://sts.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15"))
    fails(replace(req, query=req.query.replace("GetCallerIdentity", "AssumeRole")), "InvalidSignatureException")
    fails(
        replace(req, query=req.query.replace("X-Amz-Expires=3600", "X-Amz-Expires=7200")), "InvalidSignatureException"
    )


def test_presigned_missing_parameter() -> None:
    req = to_signed(presign("https://sts.amazonaws.com/?Action=GetCallerIdentity"))
    query = "&".join(p for p in req.query.split("&") if not p.startswith("X-Amz-Date="))
    err = fails(replace(req, query=query), "IncompleteSignatureException")
    assert (
        err.message == "AWS query-string parameters must include 'X-Amz-Date'. Re-examine the query-string parameters."
    )


# --- malformed Authorization headers ----------------------------------------------------------------------


def test_no_authentication_at_all() -> None:
    req = with_headers(to_signed(sign()), Authorization=None)
    err = fails(req, "MissingAuthenticationTokenException")
    assert err.message == "Missing Authentication Token" and err.status == 403
    assert err.query_code == "MissingAuthenticationToken"


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (
            "AWS4-HMAC-SHA256 SignedHeaders=host;x-amz-date, Signature=abc",
            "Authorization header requires 'Credential' parameter. "
            "Authorization=AWS4-HMAC-SHA256 SignedHeaders=host;x-amz-date, Signature=abc",
        ),
        (
            f"AWS4-HMAC-SHA256 Credential={AKID}/20260101/us-east-1/ecr/aws4_request, Signature=abc",
            "Authorization header requires 'SignedHeaders' parameter. "
            f"Authorization=AWS4-HMAC-SHA256 Credential={AKID}/20260101/us-east-1/ecr/aws4_request, Signature=abc",
        ),
        (
            f"AWS4-HMAC-SHA256 Credential={AKID}/20260101/us-east-1/ecr/aws4_request, SignedHeaders=host",
            "Authorization header requires 'Signature' parameter. "
            f"Authorization=AWS4-HMAC-SHA256 Credential={AKID}/20260101/us-east-1/ecr/aws4_request, SignedHeaders=host",
        ),
        (
            "Bearer eyJhbGciOi",
            "Authorization header requires 'Credential' parameter. Authorization header requires 'Signature' "
            "parameter. Authorization header requires 'SignedHeaders' parameter. Authorization=Bearer eyJhbGciOi",
        ),
        (
            f"AWS4-HMAC-SHA256 Credential= {AKID}/20260101/us-east-1/ecr/aws4_request, SignedHeaders=host, Signature=a",
            f"'{AKID}/20260101/us-east-1/ecr/aws4_request' not a valid key=value pair (missing equal-sign) in "
            f"Authorization header: 'AWS4-HMAC-SHA256 Credential= {AKID}/20260101/us-east-1/ecr/aws4_request, "
            "SignedHeaders=host, Signature=a'.",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1, SignedHeaders=host, Signature=a",
            "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, "
            "got 'AKID/20260101/us-east-1'",
        ),
        (
            "AWS4-HMAC-SHA512 Credential=AKID/20260101/us-east-1/ecr/aws4_request, SignedHeaders=host, Signature=a",
            "Unsupported AWS 'algorithm': 'AWS4-HMAC-SHA512'.",
        ),
    ],
)
def test_incomplete_authorization_header(authorization: str, message: str) -> None:
    err = fails(with_headers(to_signed(sign()), Authorization=authorization), "IncompleteSignatureException")
    assert err.message == message
    assert err.query_code == "IncompleteSignature"


def test_missing_date_is_reported() -> None:
    req = with_headers(to_signed(sign()), **{"X-Amz-Date": None})
    err = fails(req, "IncompleteSignatureException")
    assert "requires existence of either a 'X-Amz-Date' or a 'Date' header" in err.message


def test_malformed_date() -> None:
    err = fails(
        with_headers(to_signed(sign()), **{"X-Amz-Date": "2026-01-01T12:00:00Z"}), "IncompleteSignatureException"
    )
    assert err.message.startswith("Date must be in ISO-8601 'basic format'. Got '2026-01-01T12:00:00Z'.")


def test_wrong_terminator_and_service() -> None:
    req = to_signed(sign())
    auth = req.headers["Authorization"]
    fails(with_headers(req, Authorization=auth.replace("aws4_request", "aws4_requets")), "InvalidSignatureException")
    err = fails(req, "InvalidSignatureException", expected_service="iam")
    assert err.message.startswith("Credential should be scoped to correct service: 'iam'.")


def test_region_scope_is_checked_in_aws_words() -> None:
    req = to_signed(sign())  # signed for us-east-1
    assert verify(req, lookup, now=NOW, expected_regions={"us-east-1"}).region == "us-east-1"
    err = fails(req, "InvalidSignatureException", expected_regions={"eu-west-1"})
    assert err.message == "Credential should be scoped to a valid region, not 'us-east-1'. "
    assert err.access_key_id == AKID  # the audit log names the key that was tried


# --- properties -------------------------------------------------------------------------------------------

_header_text = st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=200)


@settings(max_examples=300, deadline=None)
@given(
    authorization=st.one_of(
        _header_text,
        st.builds(
            lambda *parts: "AWS4-HMAC-SHA256 " + ", ".join(parts),
            st.sampled_from(["Credential=", "Credential=" + AKID + "/20260101/us-east-1/ecr/aws4_request"]).flatmap(
                lambda c: st.just(c) | st.builds(lambda s: c + s, _header_text)
            ),
            st.builds(lambda s: "SignedHeaders=" + s, _header_text),
            st.builds(lambda s: "Signature=" + s, _header_text),
        ),
    ),
    amz_date=st.one_of(st.none(), _header_text, st.just("20260101T120000Z")),
    query=_header_text,
)
def test_random_input_only_raises_auth_errors(authorization: str, amz_date: str | None, query: str) -> None:
    headers = {"Host": "h.example", "Authorization": authorization}
    if amz_date is not None:
        headers["X-Amz-Date"] = amz_date
    req = SignedRequest("POST", "/", query, headers, hashlib.sha256(b"").hexdigest())
    try:
        verify(req, lookup, now=NOW)
    except AwsAuthError as err:
        assert SECRET not in err.message
    else:
        raise AssertionError("random input verified")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "X-Amz-Algorithm",
                    "X-Amz-Credential",
                    "X-Amz-Date",
                    "X-Amz-Expires",
                    "X-Amz-SignedHeaders",
                    "X-Amz-Signature",
                    "X-Amz-Security-Token",
                    "Action",
                ]
            ),
            st.text(max_size=40),
        ),
        max_size=8,
    )
)
def test_random_presigned_query_only_raises_auth_errors(pairs: list[tuple[str, str]]) -> None:
    from urllib.parse import quote

    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in pairs)
    req = SignedRequest("GET", "/", query, {"Host": "h.example"}, hashlib.sha256(b"").hexdigest())
    with pytest.raises(AwsAuthError):
        verify(req, lookup, now=NOW)


def test_aws_cli_request_verifies(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    from awscli.clidriver import create_clidriver

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", TEMP_AKID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-southeast-2")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    sent = []

    def stop(request: object, **_: object) -> None:
        sent.append(request)
        raise KeyboardInterrupt  # the cli's one exception that aborts without retrying or printing a trace

    driver = create_clidriver()
    driver.session.register("before-send", stop)
    driver.main(["ecr", "describe-images", "--repository-name", "team/app", "--endpoint-url", "http://localhost:5000"])
    verified = verify(to_signed(sent[0]), lookup, expected_service="ecr")
    assert (verified.region, verified.session_token) == ("ap-southeast-2", TOKEN)
