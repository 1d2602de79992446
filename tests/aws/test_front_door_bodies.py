"""``POST /`` holds no body it has no reason to hold (issue 11, item 3): a request whose key is refused is answered
before its body is read, the bodies held at once have a memory budget, and a body that trickles in is cut off.
The figure under 20 concurrent 31 MiB bodies is ``bench/unauthenticated_bodies.py``."""

from __future__ import annotations

import time

import pytest

from soko.aws import sigv4
from tests.conftest import ROOT_KEY_ID
from tests.rawhttp import answer, connect, trickle, wait_until


@pytest.fixture
def database_url(tmp_path) -> str:
    """HTTP-layer behaviour, no metadata question: SQLite only (the rest of the suite covers PostgreSQL)."""
    return f"sqlite:///{tmp_path / 'metadata.db'}"


BIG = 31 << 20
TARGET = "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories"


def _head(host: str, length: int, authorization: str | None, target: str | None = TARGET) -> bytes:
    lines = ["POST / HTTP/1.1", f"Host: {host}", f"Content-Length: {length}", "X-Amz-Date: " + _now()]
    if target:
        lines += [f"X-Amz-Target: {target}", "Content-Type: application/x-amz-json-1.1"]
    else:
        lines += ["Content-Type: application/x-www-form-urlencoded"]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _now() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def _auth(key_id: str, service: str = "ecr") -> str:
    scope = f"{key_id}/{time.strftime('%Y%m%d', time.gmtime())}/us-east-1/{service}/aws4_request"
    return f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host;x-amz-date, Signature={'0' * 64}"


def test_a_refused_key_is_answered_before_a_large_body(server) -> None:
    for authorization, status, error in [
        (None, 403, "MissingAuthenticationTokenException"),
        ("AWS4-HMAC-SHA256 Credential=oops", 400, "IncompleteSignatureException"),
        (_auth("AKIAUNKNOWN000000000"), 400, "UnrecognizedClientException"),
    ]:
        with connect(server) as sock:
            sock.sendall(_head(server.host, BIG, authorization))  # and not one byte of the 31 MiB
            got, headers, body = answer(sock)
        assert (got, body.get("__type")) == (status, error), body
        assert headers.get("connection") == "close"


def test_a_small_body_with_a_refused_key_still_gets_its_services_error(server) -> None:
    form = b"Action=GetCallerIdentity&Version=2011-06-15"
    with connect(server) as sock:
        sock.sendall(_head(server.host, len(form), _auth("AKIAUNKNOWN000000000", "sts"), target=None) + form)
        got, _, body = answer(sock)
    assert got == 403 and "<Code>InvalidClientTokenId</Code>" in body["raw"], body
    assert "sts.amazonaws.com/doc/2011-06-15" in body["raw"]  # the service is told from the body


def test_bodies_held_at_once_have_a_budget(server) -> None:
    budget = server.app.bodies
    budget.limit = 4 << 20  # (this app's own budget: 4 MiB keeps the test small; POST / may fill 3 MiB of it)
    waiting = []
    try:
        for _ in range(3):  # 3 bodies of 1 MiB, all but their last byte sent: 3 MiB held
            sock = connect(server)
            sock.sendall(_head(server.host, 1 << 20, _auth(ROOT_KEY_ID)) + b" " * ((1 << 20) - 1))
            waiting.append(sock)
        wait_until(lambda: budget.used == 3 * ((1 << 20) - 1), f"the bodies never arrived ({budget.used})")
        with connect(server) as sock:  # a fourth that cannot fit is refused before its body
            sock.sendall(_head(server.host, 1 << 20, _auth(ROOT_KEY_ID)))
            got, headers, body = answer(sock)
        assert (got, body.get("__type")) == (503, "ServiceUnavailable"), body
        assert headers.get("retry-after") == "1"
        with connect(server) as sock:  # one that grows past it is refused as it does
            sock.sendall(_head(server.host, 1000, _auth(ROOT_KEY_ID)) + b" " * 1000)
            got, headers, body = answer(sock)
        assert (got, body.get("__type")) == (503, "ServiceUnavailable"), body
    finally:
        for sock in waiting:
            sock.close()
    wait_until(lambda: budget.used == 0, f"bodies of closed connections are still held ({budget.used})")


def test_declared_lengths_reserve_nothing(server, aws) -> None:
    """Headers alone, even with a real key id, must not spend the budget: 4 x 32 MiB declared once took all of it
    (and 64 KiB per unauthenticated head), so one client with a few connections refused everyone."""
    heads = [_head(server.host, 32 << 20, _auth(ROOT_KEY_ID))] * 4 + [_head(server.host, 64 << 10, None)] * 20
    waiting = []
    try:
        for head in heads:
            sock = connect(server)
            sock.sendall(head + b"{")  # one byte, so the server is seen to hold these requests
            waiting.append(sock)
        wait_until(lambda: server.app.bodies.used >= 4, "the heads never reached the server")
        assert aws("ecr").describe_repositories()["repositories"] == []
        assert server.app.bodies.used < 1024
    finally:
        for sock in waiting:
            sock.close()


@pytest.mark.parametrize("every", [0.2, None])  # a byte every 0.2 s, or nothing more at all
def test_a_trickling_body_is_cut_off(server, monkeypatch, every) -> None:
    monkeypatch.setattr("soko.http.bodies.GRACE", 0.5)
    with connect(server) as sock:
        sock.sendall(_head(server.host, 1000, _auth(ROOT_KEY_ID)) + b"{")
        trickle(sock, every)
        got, headers, body = answer(sock)
    assert (got, body.get("__type")) == (408, "RequestTimeoutException"), body
    assert headers.get("connection") == "close"


def test_a_body_that_stops_is_cut_off_however_fast_it_began(server, monkeypatch) -> None:
    """The average rate alone let a client that sent 1 MiB at once then stop hold its connection for 37 s."""
    monkeypatch.setattr("soko.http.bodies.GRACE", 5.0)
    monkeypatch.setattr("soko.http.bodies.MAX_GAP", 0.5)
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(_head(server.host, 2 << 20, _auth(ROOT_KEY_ID)) + b" " * (1 << 20))
        got, headers, body = answer(sock)
    assert (got, body.get("__type")) == (408, "RequestTimeoutException"), body
    assert "no byte of the request body arrived for" in body["message"]
    assert headers.get("connection") == "close"
    assert time.monotonic() - started < 5


def test_a_request_is_verified_once(server, aws, monkeypatch) -> None:
    """The checks that need no body run before it is read, and the signature once it is in: one key lookup, one
    pass over the head (they once ran twice)."""
    credentials = server.app.aws.credentials
    looked_up = []

    def counting(key_id):
        looked_up.append(key_id)
        return type(credentials).lookup(credentials, key_id)

    monkeypatch.setattr(credentials, "lookup", counting)
    calls = []
    real = sigv4._check_head
    monkeypatch.setattr(sigv4, "_check_head", lambda *args: calls.append(1) or real(*args))
    aws("ecr").describe_repositories()
    assert (len(calls), looked_up) == (1, [ROOT_KEY_ID])


def test_unauthenticated_registry_uploads_are_refused_before_their_body(server) -> None:
    with connect(server) as sock:
        sock.sendall(
            f"POST /v2/team/app/blobs/uploads/ HTTP/1.1\r\nHost: {server.host}\r\nContent-Length: {BIG}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n".encode()
        )
        got, _, body = answer(sock)
    assert got == 401 and body["errors"][0]["code"] == "UNAUTHORIZED", body
