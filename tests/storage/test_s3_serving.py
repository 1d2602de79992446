"""The /v2/ upload and blob suites, served from S3-compatible storage instead of the filesystem: every push,
chunked or monolithic, resumed or cancelled, and every read (ranges included) behaves the same. On radosgw only
(the driver suite runs on moto too): a real S3 server is what these need, and CI time is better spent there."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

from soko.meta.db import Database
from soko.registry import Registry
from tests.migrated import migrated
from tests.oci.conftest import auth_header  # noqa: F401 - fixture
from tests.oci.helpers import push_blob
from tests.oci.test_blobs import *  # noqa: F403 - the same tests, on S3
from tests.oci.test_uploads import *  # noqa: F403
from tests.s3 import S3Server, rgw, s3_driver  # noqa: F401 - fixtures


@pytest.fixture(scope="session")
def s3_server(rgw: S3Server) -> S3Server:  # noqa: F811
    return rgw


@pytest.fixture
def database_url(tmp_path) -> Iterator[str]:  # the storage is what differs here: SQLite is enough
    yield f"sqlite:///{tmp_path / 'metadata.db'}"


@pytest.fixture
def registry(settings, s3_driver) -> Iterator[Registry]:  # noqa: F811
    os.makedirs(settings.data_dir, exist_ok=True)
    migrated(settings.effective_database_url)
    db = Database(settings.effective_database_url, pool_size=4)
    reg = Registry(settings, db, s3_driver)
    yield reg
    reg.close()


@pytest.fixture
def redirecting(server):
    """Turn on presigned redirects on the running server's S3 driver, as storage_redirect=true does."""
    storage = server.registry.ctx.storage
    storage.redirect_expiry = 600
    yield storage
    storage.redirect_expiry = None


def test_blob_get_redirects_to_a_presigned_object_url(client, redirecting):
    data = os.urandom(300_000)
    digest = push_blob(client, "repo", data)
    r = client.get(f"/v2/repo/blobs/{digest}")
    assert r.status_code == 307 and r.headers["Docker-Content-Digest"] == digest
    assert r.headers["Cache-Control"] == "no-store"  # the URL expires; the content's own caching does not apply
    location = r.headers["Location"]
    assert redirecting.location.bucket in location and "X-Amz-Signature=" in location
    fetched = httpx.get(location)  # no registry credentials: the URL carries its own signature
    assert fetched.status_code == 200 and fetched.content == data
    ranged = httpx.get(location, headers={"Range": "bytes=100-199"})
    assert ranged.status_code == 206 and ranged.content == data[100:200]
    assert client.head(f"/v2/repo/blobs/{digest}").status_code == 200  # HEAD answers itself


def test_a_failing_object_store_is_a_retryable_503_not_a_500(server, client, monkeypatch):
    """S3 answering errors after botocore's retries (SlowDown, InternalError, a lost connection) is the store being
    unavailable: the OCI error says so with 503, and pushes work again once it recovers."""
    from botocore.exceptions import ClientError

    from tests.oci.helpers import assert_oci_error

    s3 = server.registry.ctx.storage.client

    def failing(*args, **kwargs):
        raise ClientError({"Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."}}, "PutObject")

    monkeypatch.setattr(s3, "put_object", failing)
    response = client.post("/v2/repo/blobs/uploads/")
    body = assert_oci_error(response, 503, "UNAVAILABLE")
    assert "unavailable" in body["errors"][0]["message"] and "SlowDown" in body["errors"][0]["message"]
    monkeypatch.undo()
    assert push_blob(client, "repo", b"the store is back")
