"""A real S3-compatible server for tests: moto's standalone server (``moto_server``), one per test process, and a
fresh bucket per test. Soko talks to it over HTTP with botocore exactly as it talks to AWS S3 or MinIO."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import botocore.session
import pytest
from botocore.config import Config

from soko.storage.s3 import S3Driver, S3Location

KEY_ID, SECRET = "AKIAS3TEST0000000000", "s3-test-secret-0000000000000000000000000"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory) -> Iterator[str]:
    binary = shutil.which("moto_server") or os.path.join(os.path.dirname(sys.executable), "moto_server")
    port = _free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"moto_server exited with {proc.returncode}; see {log.name}")
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("moto_server did not start within 30 s")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)
    log.close()


def s3_client(endpoint: str):
    return botocore.session.Session().create_client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


@pytest.fixture
def s3_driver(s3_endpoint) -> S3Driver:
    """An S3Driver on a new, empty bucket (under a key prefix, as deployments often use one)."""
    client = s3_client(s3_endpoint)
    bucket = f"soko-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    location = S3Location.parse(f"s3://{bucket}/registry?endpoint_url={s3_endpoint}&addressing_style=path")
    return S3Driver(location, client=client)
