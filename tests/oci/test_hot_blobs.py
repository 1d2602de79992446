"""Hot blobs (``Blobs.hot``): a blob this process served from the plaintext cache is served again with no database
read and no thread, as a cached manifest is; every write that takes the blob away from the repository (unlink,
image deletion and GC, repository deletion, archive, an account key's shred) ends that at once, on SQLite and
PostgreSQL."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from soko.registry.models import RepoRef
from tests.conftest import aws_client
from tests.oci.helpers import assert_oci_error, push_blob, push_image

MiB = 1 << 20
ACCOUNT = "000000000000"


@contextmanager
def blob_reads(server) -> Iterator[list[str]]:
    """The SQL statements that read a repository's blob links while the block runs."""
    seen: list[str] = []

    def record(conn, cursor, statement, *args) -> None:
        if "repository_blobs" in statement:
            seen.append(statement)

    engine = server.registry.ctx.db.engine
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def _hot(server, client, name: str, digest: str, data: bytes) -> None:
    """GET the blob until it is hot: served with no database read (a background write that moves the generation,
    e.g. PostgreSQL's change listener connecting, ends hotness as any write does: the next GET makes it hot again)."""
    for _ in range(20):
        assert client.get(f"/v2/{name}/blobs/{digest}").content == data  # from the plaintext cache: hot from now
        with blob_reads(server) as reads:
            r = client.get(f"/v2/{name}/blobs/{digest}")
            assert r.status_code == 200 and r.content == data
            ranged = client.get(f"/v2/{name}/blobs/{digest}", headers={"Range": "bytes=10-19"})
            assert ranged.status_code == 206 and ranged.content == data[10:20]
        if not reads:
            return
    raise AssertionError(f"{digest} never became hot: every GET read the database ({reads})")


def test_a_hot_blob_is_served_without_reading_the_database(server, client):
    data = os.urandom(MiB + 5)
    digest = push_blob(client, "hot/one", data)
    _hot(server, client, "hot/one", digest, data)
    # HEAD still asks the database (it has no body to serve from memory), and answers the same
    with blob_reads(server) as reads:
        r = client.head(f"/v2/hot/one/blobs/{digest}")
    assert r.status_code == 200 and int(r.headers["Content-Length"]) == len(data) and reads
    # another repository does not hold it: not hot there, and the database says so
    client.post("/v2/hot/other/blobs/uploads/")
    assert_oci_error(client.get(f"/v2/hot/other/blobs/{digest}"), 404, "BLOB_UNKNOWN")


def test_a_blob_evicted_from_memory_is_read_from_storage_again(server, client):
    data = os.urandom(MiB)
    digest = push_blob(client, "hot/evicted", data)
    _hot(server, client, "hot/evicted", digest, data)
    os.unlink(server.registry.ctx.plain_cache.path(None, digest))
    with blob_reads(server) as reads:
        assert client.get(f"/v2/hot/evicted/blobs/{digest}").content == data
    assert reads  # (opened again from the database, decrypted from storage)


def test_unlinking_a_hot_blob_ends_it(server, client):
    data = os.urandom(MiB)
    digest = push_blob(client, "hot/unlink", data)
    _hot(server, client, "hot/unlink", digest, data)
    assert client.delete(f"/v2/hot/unlink/blobs/{digest}").status_code == 202
    assert_oci_error(client.get(f"/v2/hot/unlink/blobs/{digest}"), 404, "BLOB_UNKNOWN")


def _hot_image(server, client, name: str) -> tuple[str, str, bytes]:
    """An image pushed to ``name`` whose layer is hot: (manifest digest, layer digest, layer)."""
    manifest, payload = push_image(client, name, "v1", seed=name)
    layer = json.loads(payload)["layers"][0]["digest"]
    data = client.get(f"/v2/{name}/blobs/{layer}").content
    _hot(server, client, name, layer, data)
    return manifest, layer, data


def test_deleting_the_image_and_collecting_garbage_ends_it(server, client):
    manifest, layer, data = _hot_image(server, client, "hot/gc")
    assert client.delete(f"/v2/hot/gc/manifests/{manifest}").status_code == 202
    assert client.get(f"/v2/hot/gc/blobs/{layer}").content == data  # still linked until GC reviews the links
    server.registry.gc.run(grace_period=0)
    assert_oci_error(client.get(f"/v2/hot/gc/blobs/{layer}"), 404, "BLOB_UNKNOWN")


def test_deleting_the_repository_ends_it(server, client):
    data = os.urandom(MiB)
    digest = push_blob(client, "hot/gone", data)
    _hot(server, client, "hot/gone", digest, data)
    aws_client(server.url).delete_repository(repositoryName="hot/gone", force=True)
    assert_oci_error(client.get(f"/v2/hot/gone/blobs/{digest}"), 404, "NAME_UNKNOWN")


def test_archiving_the_image_ends_it(server, client):
    manifest, layer, _ = _hot_image(server, client, "hot/archive")
    aws_client(server.url).update_image_storage_class(
        repositoryName="hot/archive", imageId={"imageTag": "v1"}, targetStorageClass="ARCHIVE"
    )
    ref = RepoRef(ACCOUNT, "hot/archive")
    server.registry.storage_classes.run_job(str(server.registry.manifests.get(ref, manifest).id))
    r = client.get(f"/v2/hot/archive/blobs/{layer}")
    assert r.status_code == 404 and "archive" in r.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_shredding_the_accounts_key_ends_it(server, client):
    data = os.urandom(MiB)
    digest = push_blob(client, "hot/shred", data)
    _hot(server, client, "hot/shred", digest, data)
    server.registry.repositories.account_keys.shred(ACCOUNT)
    r = client.get(f"/v2/hot/shred/blobs/{digest}")
    assert r.status_code != 200 and "crypto-shredded" in r.text
