"""The S3 driver passes the shared driver suite against a real S3 server, plus what only S3 needs: parts that
let another node resume an upload, server-side assembly of big uploads, and listing without a HEAD per key."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from concurrent.futures import wait

import httpx
import pytest

from soko.storage import PathNotFound
from soko.storage.paths import blob_path, trash_path
from soko.storage.s3 import MIN_PART_SIZE, PART_SIZE, S3Driver, S3Location
from tests.s3 import TEST_LIST_PAGE, S3Server, moto, rgw, s3_driver, s3_server  # noqa: F401 - fixtures
from tests.storage.driver_suite import DriverSuite, check_listing_past_a_page


class TestS3Driver(DriverSuite):
    listing_page = TEST_LIST_PAGE

    @pytest.fixture
    def driver(self, s3_driver) -> S3Driver:  # noqa: F811
        s3_driver.redirect_expiry = 600  # so the suite checks presigned redirects too
        return s3_driver

    def test_listing_and_walking_past_a_page(self, driver: S3Driver) -> None:
        super().test_listing_and_walking_past_a_page(driver)
        with _requests(driver) as sent:  # the store really answered in pages of the driver's size
            driver.list("many")
        assert sent == ["ListObjectsV2", "ListObjectsV2"]


def test_listing_and_walking_past_the_stores_own_1000_key_page(rgw):  # noqa: F811
    """The suites list past a page of ``TEST_LIST_PAGE`` keys; this lists past the store's own page, with no
    page size sent, as a deployment does."""
    driver = S3Driver(S3Location.parse(rgw.storage_url(rgw.new_bucket())), client=rgw.shared_client)
    check_listing_past_a_page(driver, 1000)
    with _requests(driver) as sent:
        driver.list("many")
    assert sent == ["ListObjectsV2", "ListObjectsV2"]


def test_resume_on_another_driver_instance_as_another_node_would(s3_driver, s3_server):  # noqa: F811
    first = s3_driver.writer("uploads/u1/data")
    head = os.urandom(PART_SIZE + 1000)  # one full part and a short one
    first.write(head)
    first.close()
    other_node = S3Driver(s3_driver.location, client=s3_server.client())
    assert other_node.stat("uploads/u1/data").size == len(head)
    second = other_node.writer("uploads/u1/data", offset=len(head))
    tail = os.urandom(PART_SIZE)
    second.write(tail)
    second.commit()
    keys = sorted(k["Key"] for k in s3_driver.client.list_objects_v2(Bucket=s3_driver.location.bucket)["Contents"])
    sizes = [s3_driver.client.head_object(Bucket=s3_driver.location.bucket, Key=k)["ContentLength"] for k in keys]
    assert sizes == [len(head), len(tail)]  # each ≥ 5 MiB, as S3 multipart copy needs, and nothing read back
    assert s3_driver.get_content("uploads/u1/data") == head + tail
    with s3_driver.reader("uploads/u1/data", offset=PART_SIZE - 10) as f:
        assert f.read() == (head + tail)[PART_SIZE - 10 :]


def test_short_last_parts_are_taken_back_so_every_part_but_the_last_is_big_enough(s3_driver):  # noqa: F811
    data = os.urandom(30 << 20)
    held = 0
    for size in (1 << 20, 3 << 20, 7 << 20, 100, 6 << 20, 13 << 20):  # chunks of any size, as /v2/ clients send
        writer = s3_driver.writer("uploads/u4/data", offset=held)
        writer.write(data[held : held + size])
        writer.commit()
        held += size
    parts = s3_driver._parts(s3_driver._key("uploads/u4/data"))
    assert all(MIN_PART_SIZE <= size <= PART_SIZE + MIN_PART_SIZE for _, size in parts[:-1])
    assert [start for start, _ in parts] == [sum(size for _, size in parts[:i]) for i in range(len(parts))]
    s3_driver.move("uploads/u4/data", "blobs/sha256/cd/cdef")  # multipart copy: S3 refuses small parts
    assert s3_driver.get_content("blobs/sha256/cd/cdef") == data[:held]


def test_resume_truncates_a_chunk_that_failed_half_way_across_parts(s3_driver):  # noqa: F811
    writer = s3_driver.writer("uploads/u2/data")
    writer.write(b"a" * 100)
    writer.commit()
    failed = s3_driver.writer("uploads/u2/data", offset=100)
    failed.write(b"b" * (2 * PART_SIZE + 5))  # two full parts stored, then the "node" dies
    wait(failed._pending)  # its PUTs in flight land before another node may take the upload's claim over
    resumed = s3_driver.writer("uploads/u2/data", offset=100)
    resumed.write(b"c" * 10)
    resumed.commit()
    assert s3_driver.get_content("uploads/u2/data") == b"a" * 100 + b"c" * 10


def test_move_assembles_a_big_upload_server_side(s3_driver):  # noqa: F811
    data = os.urandom(2 * PART_SIZE + 12345)
    writer = s3_driver.writer("uploads/u3/data")
    for i in range(0, len(data), 1 << 20):
        writer.write(data[i : i + (1 << 20)])
    writer.commit()
    s3_driver.move("uploads/u3/data", "blobs/sha256/ab/abcd")
    assert s3_driver.get_content("blobs/sha256/ab/abcd") == data
    with pytest.raises(PathNotFound):
        s3_driver.stat("uploads/u3/data")
    with pytest.raises(PathNotFound):  # the parts are gone
        s3_driver.list("uploads/u3")


def test_walk_reports_parted_files_once_with_their_size(s3_driver):  # noqa: F811
    s3_driver.put_content("uploads/a/info", b"x")
    writer = s3_driver.writer("uploads/a/data")
    writer.write(os.urandom(PART_SIZE + 1))
    writer.commit()
    found = {info.path: info.size for info in s3_driver.walk("uploads")}
    assert found == {"uploads/a/info": 1, "uploads/a/data": PART_SIZE + 1}
    assert s3_driver.list("uploads/a") == ["uploads/a/data", "uploads/a/info"]


def test_storage_url_parsing():
    loc = S3Location.parse("s3://bucket/some/prefix?endpoint_url=http://127.0.0.1:9000&region=eu-west-1&addressing_style=path")
    assert (loc.bucket, loc.prefix, loc.endpoint_url, loc.region, loc.addressing_style) == (
        "bucket", "some/prefix", "http://127.0.0.1:9000", "eu-west-1", "path"
    )
    for bad in ("s3:///nobucket", "http://bucket/x", "s3://b/p?aws_secret_access_key=x", "s3://b?addressing_style=odd",
                "s3://b/a/../b", "s3://b/../x", "s3://b/a//b", "s3://b/./a"):
        with pytest.raises(ValueError):
            S3Location.parse(bad)


def test_unreachable_bucket_is_named_by_the_readiness_check(s3_server):  # noqa: F811
    location = S3Location.parse(s3_server.storage_url("no-such-bucket-here"))
    driver = S3Driver(location, client=s3_server.client())
    with pytest.raises(Exception, match="no-such-bucket-here"):
        driver.check()


def test_radosgw_honours_presigned_urls_and_refuses_tampered_ones(rgw):  # noqa: F811
    """What clients redirected to the store rely on, checked by a server that verifies signatures (moto does not):
    the URL works without other credentials; a changed signature, object, expiry or signing secret is refused."""
    location = S3Location.parse(rgw.storage_url(rgw.new_bucket()))
    driver = S3Driver(location, client=rgw.shared_client, redirect_expiry=600)
    data = os.urandom(100_000)
    driver.put_content("blobs/sha256/aa/aa11", data)
    driver.put_content("blobs/sha256/bb/bb22", b"another object")
    url = driver.redirect_url("blobs/sha256/aa/aa11")
    assert httpx.get(url).content == data
    signature = url.rsplit("X-Amz-Signature=", 1)[1][:64]
    forged = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    tampered = [
        url.replace(signature, forged),
        url.replace("aa/aa11", "bb/bb22"),  # the signature of one object used for another
        url.replace("X-Amz-Expires=600", "X-Amz-Expires=604800"),
    ]
    wrong_secret = S3Server(rgw.name, rgw.endpoint, rgw.access_key, "not-the-secret-" + rgw.secret_key[15:])
    tampered.append(S3Driver(location, client=wrong_secret.client(), redirect_expiry=600).redirect_url(
        "blobs/sha256/aa/aa11"
    ))
    for bad in tampered:
        refused = httpx.get(bad)
        assert refused.status_code == 403 and b"SignatureDoesNotMatch" in refused.content, (bad, refused.text)
    expiring = S3Driver(location, client=rgw.shared_client, redirect_expiry=1).redirect_url("blobs/sha256/aa/aa11")
    time.sleep(2.1)
    expired = httpx.get(expiring)
    assert expired.status_code == 403 and b"AccessDenied" in expired.content, expired.text


def test_a_presigned_url_is_reused_for_a_tenth_of_its_expiry(s3_server):  # noqa: F811
    location = S3Location.parse(s3_server.storage_url(s3_server.new_bucket()))
    driver = S3Driver(location, client=s3_server.shared_client, redirect_expiry=5)
    driver.put_content("blobs/sha256/cc/cc33", b"content")
    first = driver.redirect_url("blobs/sha256/cc/cc33")
    assert driver.redirect_url("blobs/sha256/cc/cc33") == first  # within 0.5 s: the same URL
    assert driver.redirect_url("blobs/sha256/cc/cc33", method="HEAD") != first
    time.sleep(1.1)  # past the reuse window, and a new signing second
    renewed = driver.redirect_url("blobs/sha256/cc/cc33")
    assert renewed != first and httpx.get(renewed).content == b"content"


@contextlib.contextmanager
def _requests(driver: S3Driver) -> Iterator[list[str]]:
    """The S3 operations sent inside the block, one per HTTP attempt (retries included)."""
    sent: list[str] = []

    def record(event_name: str, **_) -> None:
        sent.append(event_name.rsplit(".", 1)[1])

    events = driver.client.meta.events
    events.register("before-send.s3", record)
    try:
        yield sent
    finally:
        events.unregister("before-send.s3", record)


def test_deleting_a_blob_costs_a_head_and_one_delete(s3_driver):  # noqa: F811
    blob = blob_path("sha256:" + "ab" * 32)
    s3_driver.put_content(blob, b"x")
    with _requests(s3_driver) as sent:
        s3_driver.delete(blob)
    assert sent == ["HeadObject", "DeleteObject"]
    with _requests(s3_driver) as sent, pytest.raises(PathNotFound):  # the contract: a missing path says so
        s3_driver.delete(blob)
    assert sent == ["HeadObject"]
    trashed = trash_path("sha256:" + "cd" * 32)
    s3_driver.put_content(trashed, b"x")
    with _requests(s3_driver) as sent:
        s3_driver.delete(trashed)
    assert sent == ["HeadObject", "DeleteObject"]
    assert list(s3_driver.walk("")) == []


def test_deleting_an_upload_costs_one_listing_and_one_batch_delete(s3_driver):  # noqa: F811
    s3_driver.put_content("uploads/u2/data", b"x")
    writer = s3_driver.writer("uploads/u2/big")
    writer.write(os.urandom(PART_SIZE + 1000))
    writer.close()  # leaves parts behind, as an upload in flight does
    with _requests(s3_driver) as sent:
        s3_driver.delete("uploads/u2")
    assert sent == ["ListObjectsV2", "DeleteObjects"]
    assert list(s3_driver.walk("")) == []
