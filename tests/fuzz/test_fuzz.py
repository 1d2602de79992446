"""Property: whatever arrives on the ECR JSON, IAM/STS Query or /v2/ APIs, Soko answers — never a 5xx, never a
hang (each request has a 10 s timeout). Brief here (SOKO_FUZZ_EXAMPLES, default 40 per API); `bench/fuzz.py` runs
the same properties for thousands of examples."""

from __future__ import annotations

import os

import httpx
import pytest
from hypothesis import HealthCheck, given, settings

from tests.fuzz import strategies as s
from tests.fuzz.wire import ecr_call, query_call

EXAMPLES = int(os.environ.get("SOKO_FUZZ_EXAMPLES", "40"))
fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=EXAMPLES <= 100,  # the brief CI run is the same every time; the long run explores
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


@pytest.fixture
def raw(server):
    with httpx.Client(timeout=10) as c:
        yield c


def _answered(response: httpx.Response, what: object) -> None:
    assert response.status_code < 500, (what, response.status_code, response.text[:500])


@fuzz
@given(request=s.ecr_requests())
def test_ecr_json_never_fails_on_the_server(server, raw, request) -> None:
    operation, body = request
    _answered(ecr_call(raw, server.url, operation, body), request)


@fuzz
@given(request=s.query_requests())
def test_iam_query_never_fails_on_the_server(server, raw, request) -> None:
    service, body = request
    _answered(query_call(raw, server.url, service, body), request)


@fuzz
@given(request=s.oci_requests())
def test_v2_never_fails_on_the_server(server, raw, request) -> None:
    response = raw.request(
        request.method,
        server.url + request.path,
        headers={**request.headers, **server.basic_auth},
        content=request.body,
    )
    _answered(response, request)
