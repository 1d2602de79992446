"""The access log: one JSON line per request with who, what, how much and how long — and never a secret."""

from __future__ import annotations

import json
import time
from pathlib import Path

import botocore.exceptions
import httpx
import pytest

from soko.http.access_log import open_access_log
from tests.conftest import ROOT_SECRET
from tests.oci.helpers import push_blob


@pytest.fixture
def settings(settings, tmp_path):
    settings.access_log = str(tmp_path / "access.log")
    return settings


def _lines(path, until) -> list[dict]:
    """The log's lines once ``until(lines)`` holds (the writer thread flushes about twice a second)."""
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        if until(lines) or time.monotonic() > deadline:
            return lines


def test_one_line_per_request_with_its_facts_and_no_secrets(server, client, settings, aws):
    blob = b"x" * 5000
    digest = push_blob(client, "logged/app", blob)
    assert client.get(f"/v2/logged/app/blobs/{digest}", headers={"User-Agent": "access-log-test"}).content == blob
    assert httpx.get(server.url + "/v2/?X-Amz-Signature=deadbeefsig&X-Amz-Credential=AKIAX", timeout=10).status_code \
        == 401
    assert httpx.get(server.url + "/layers/sekrit-presigned-token", timeout=10).status_code == 403
    assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200  # probes stay out of the log
    with pytest.raises(botocore.exceptions.ClientError):
        aws("ecr", secret=ROOT_SECRET[:-1] + "X").describe_repositories()

    log_path = Path(settings.access_log)
    lines = _lines(log_path, lambda lines: len(lines) >= 5)
    assert len(lines) == 5, lines
    upload, pull, anonymous, presigned, aws_call = lines
    assert set(upload) == {"time", "request_id", "source", "endpoint", "principal", "account", "method", "path",
                           "status", "bytes_in", "bytes_out", "duration_ms", "user_agent"}
    assert (upload["method"], upload["path"], upload["status"], upload["bytes_in"]) == (
        "POST", "/v2/logged/app/blobs/uploads/", 201, len(blob))
    assert upload["principal"] == "arn:aws:iam::000000000000:root" and upload["account"] == "000000000000"
    assert upload["time"].endswith("Z") and upload["duration_ms"] >= 0 and upload["source"] == "127.0.0.1"
    assert (pull["status"], pull["bytes_out"], pull["user_agent"]) == (200, len(blob), "access-log-test")
    assert (anonymous["path"], anonymous["principal"], anonymous["status"]) == ("/v2/", None, 401)
    assert presigned["path"] == "/layers/…"
    assert (aws_call["method"], aws_call["path"], aws_call["status"]) == ("POST", "/", 400)

    text = log_path.read_text()
    for secret in ("deadbeefsig", "AKIAX", "sekrit-presigned-token", "Signature=", server.token, ROOT_SECRET[:-1]):
        assert secret not in text


def test_off_and_unwritable_settings(tmp_path):
    assert open_access_log("off") is None and open_access_log("") is None
    with pytest.raises(ValueError, match="access_log"):
        open_access_log(str(tmp_path / "no" / "such" / "dir" / "access.log"))


def test_soko_serve_writes_it_to_stderr_by_default(tmp_path):
    """With no access_log setting, `soko serve` writes one JSON line per request to stderr (the issue's default)."""
    from tests.e2e.servers import start_soko

    server = start_soko(tmp_path / "data")  # stdout and stderr both go to the server's log file
    try:
        assert httpx.get(server.url + "/v2/", headers={"User-Agent": "default-stderr-test"}, timeout=10).status_code \
            == 401
        deadline = time.monotonic() + 10
        while True:
            lines = [line for line in server.log_path.read_text(errors="replace").splitlines()
                     if line.startswith("{") and "default-stderr-test" in line]
            if lines or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        assert server.stop() == 0, server.log_tail()
    assert len(lines) == 1, server.log_tail()
    line = json.loads(lines[0])
    assert (line["method"], line["path"], line["status"], line["principal"]) == ("GET", "/v2/", 401, None)
