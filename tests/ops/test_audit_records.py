"""The audit log tells an attack from a login: the anonymous /v2/ challenge is no denial, a failed SigV4 names the
access key that was tried (never the signature)."""

from __future__ import annotations

import json

import botocore.exceptions
import httpx
import pytest

from soko.audit import AuditQuery
from soko.cli import main
from tests.conftest import ROOT_KEY_ID


def _cli_audit(settings, capsys, *args: str) -> list[dict]:
    common = ["--data-dir", settings.data_dir, "--database-url", settings.effective_database_url]
    assert main(["audit", *common, "--format", "json", *args]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_anonymous_challenge_is_recorded_as_such_and_hidden_by_default(server, settings, capsys):
    for _ in range(3):  # what every client does first
        r = httpx.get(server.url + "/v2/", timeout=10)
        assert r.status_code == 401 and "WWW-Authenticate" in r.headers
    r = httpx.get(server.url + "/v2/", headers={"Authorization": "Basic QVdTOm5vdC1hLXRva2Vu"}, timeout=10)
    assert r.status_code == 401
    server.identity.audit.flush()

    shown = server.identity.audit.query(AuditQuery())  # what `soko audit` shows without --decision
    assert [row["decision"] for row in shown] == ["deny"]  # the wrong password only
    challenges = _cli_audit(settings, capsys, "--decision", "challenge")
    assert {row["decision"] for row in challenges} == {"challenge"}
    assert sum(row["count"] for row in challenges) == 3  # merged per flush window (the server flushes each second)
    assert server.identity.audit.query(AuditQuery(decision="challenge"))[0]["principal"] is None


def test_failed_sigv4_records_the_key_id_tried_and_not_the_signature(server, aws):
    with pytest.raises(botocore.exceptions.ClientError) as unknown:
        aws("ecr", key_id="AKIANOSUCHKEY0000001").describe_repositories()
    assert unknown.value.response["Error"]["Code"] == "UnrecognizedClientException"
    with pytest.raises(botocore.exceptions.ClientError) as forged:
        aws("ecr", secret="not-the-secret-0000000000000000000000000").describe_repositories()
    assert forged.value.response["Error"]["Code"] == "InvalidSignatureException"
    server.identity.audit.flush()

    denials = server.identity.audit.query(AuditQuery(decision="deny"))
    reasons = {row["reason"]: row for row in denials}
    assert reasons["UnrecognizedClientException (access key AKIANOSUCHKEY0000001)"]["principal"] is None
    tried_root = reasons[f"InvalidSignatureException (access key {ROOT_KEY_ID})"]
    assert tried_root["principal"] == "arn:aws:iam::000000000000:root"  # whose key it was
    assert all("Signature=" not in row["reason"] and "not-the-secret" not in row["reason"] for row in denials)
