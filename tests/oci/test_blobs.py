"""GET/HEAD/DELETE /v2/<name>/blobs/<digest>, including Range reads and repository isolation."""

from __future__ import annotations

import os
import socket

from soko.storage.paths import blob_path
from tests.oci.helpers import assert_oci_error, push_blob, push_image, sha256

DATA = bytes(range(256)) * 4 + b"tail-bytes"  # 1034 bytes


def test_head_and_get(client):
    digest = push_blob(client, "repo", DATA)
    r = client.head(f"/v2/repo/blobs/{digest}")
    assert r.status_code == 200
    assert r.headers["Docker-Content-Digest"] == digest
    assert int(r.headers["Content-Length"]) == len(DATA)
    assert r.content == b""
    r = client.get(f"/v2/repo/blobs/{digest}")
    assert r.status_code == 200
    assert r.headers["Docker-Content-Digest"] == digest
    assert int(r.headers["Content-Length"]) == len(DATA)
    assert r.content == DATA


def test_empty_blob(client):
    digest = push_blob(client, "repo", b"")
    r = client.get(f"/v2/repo/blobs/{digest}")
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["Content-Length"] == "0"
    r = client.head(f"/v2/repo/blobs/{digest}")
    assert r.status_code == 200
    assert r.headers["Content-Length"] == "0"


def test_range_reads(client):
    digest = push_blob(client, "repo", DATA)
    size = len(DATA)
    url = f"/v2/repo/blobs/{digest}"
    cases = {
        "bytes=0-9": (0, 9),
        "bytes=10-": (10, size - 1),
        "bytes=-5": (size - 5, size - 1),
        "bytes=5-5": (5, 5),
        f"bytes=0-{size + 100}": (0, size - 1),  # an end past the blob is clamped (RFC 9110)
        f"bytes=-{size + 100}": (0, size - 1),
    }
    for header, (start, end) in cases.items():
        r = client.get(url, headers={"Range": header})
        assert r.status_code == 206, (header, r.status_code)
        assert r.content == DATA[start : end + 1], header
        assert r.headers["Content-Range"] == f"bytes {start}-{end}/{size}", header
        assert int(r.headers["Content-Length"]) == end - start + 1
        assert r.headers["Docker-Content-Digest"] == digest


def test_range_not_satisfiable(client):
    digest = push_blob(client, "repo", DATA)
    size = len(DATA)
    for header in [f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0", "bytes=20-10"]:
        r = client.get(f"/v2/repo/blobs/{digest}", headers={"Range": header})
        assert_oci_error(r, 416)
        assert r.headers["Content-Range"] == f"bytes */{size}", header
    # the blob is still served normally
    assert client.get(f"/v2/repo/blobs/{digest}").content == DATA


def test_unknown_blob_and_unknown_repo(client):
    push_blob(client, "repo", DATA)
    missing = sha256(b"not there")
    assert_oci_error(client.get(f"/v2/repo/blobs/{missing}"), 404, "BLOB_UNKNOWN")
    r = client.head(f"/v2/repo/blobs/{missing}")
    assert r.status_code == 404
    assert r.content == b""
    assert_oci_error(client.get(f"/v2/nosuchrepo/blobs/{missing}"), 404, "NAME_UNKNOWN")
    assert_oci_error(client.get(f"/v2/nosuchrepo/blobs/{sha256(DATA)}"), 404, "NAME_UNKNOWN")
    assert client.head(f"/v2/nosuchrepo/blobs/{missing}").status_code == 404
    # malformed digests are the client's error, not a lookup
    assert_oci_error(client.get("/v2/repo/blobs/sha256:abc"), 400, "DIGEST_INVALID")
    assert_oci_error(client.get("/v2/repo/blobs/md5:" + "0" * 32), 400, "DIGEST_INVALID")


def test_repository_reads_only_its_own_blobs(client):
    digest = push_blob(client, "team/a", DATA)
    push_blob(client, "team/b", b"something else")
    assert_oci_error(client.get(f"/v2/team/b/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    assert client.head(f"/v2/team/b/blobs/{digest}").status_code == 404
    assert_oci_error(client.get(f"/v2/team/b/blobs/{digest}", headers={"Range": "bytes=0-1"}), 404, "BLOB_UNKNOWN")
    # and the owner still can
    assert client.get(f"/v2/team/a/blobs/{digest}").content == DATA


def test_delete_blob(client):
    digest = push_blob(client, "repo", DATA)
    r = client.delete(f"/v2/repo/blobs/{digest}")
    assert r.status_code == 202
    assert_oci_error(client.get(f"/v2/repo/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    assert client.head(f"/v2/repo/blobs/{digest}").status_code == 404
    assert_oci_error(client.delete(f"/v2/repo/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    assert_oci_error(client.delete(f"/v2/nosuchrepo/blobs/{digest}"), 404, "NAME_UNKNOWN")
    # pushing it again brings it back
    push_blob(client, "repo", DATA)
    assert client.get(f"/v2/repo/blobs/{digest}").content == DATA


def test_delete_blob_of_other_repo_leaves_it(client):
    digest = push_blob(client, "one", DATA)
    push_blob(client, "two", DATA)
    assert client.delete(f"/v2/one/blobs/{digest}").status_code == 202
    assert client.get(f"/v2/two/blobs/{digest}").content == DATA


def test_delete_blob_in_use_by_manifest_is_refused(client):
    manifest_digest, _ = push_image(client, "repo", "v1", seed="inuse")
    manifest = client.get(f"/v2/repo/manifests/{manifest_digest}").json()
    layer = manifest["layers"][0]["digest"]
    r = client.delete(f"/v2/repo/blobs/{layer}")
    assert_oci_error(r, (405, 409))
    assert client.head(f"/v2/repo/blobs/{layer}").status_code == 200


def test_client_going_away_mid_download_leaves_the_server_fine(server, client, auth_header):
    """A pull cut off after the first bytes: the server stops streaming, closes the blob, and keeps serving."""
    data = os.urandom(8 << 20)
    digest = push_blob(client, "repo", data)
    auth = "".join(f"{k}: {v}\r\n" for k, v in auth_header.items())
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", int(server.host.rsplit(":", 1)[1]))) as sock:
            sock.sendall(f"GET /v2/repo/blobs/{digest} HTTP/1.1\r\nHost: {server.host}\r\n{auth}\r\n".encode())
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    r = client.get(f"/v2/repo/blobs/{digest}")
    assert r.status_code == 200 and r.content == data
    r = client.get(f"/v2/repo/blobs/{digest}", headers={"Range": "bytes=4194304-"})
    assert r.status_code == 206 and r.content == data[4 << 20 :]


def test_blob_gone_from_storage_is_a_clean_404(server, client):
    """The metadata says yes, the content is gone (a collector race, a damaged disk): a JSON 404 before any byte,
    never a 200 cut short."""
    data = b"soon missing" * 1000
    digest = push_blob(client, "repo", data)
    server.registry.ctx.storage.delete(blob_path(digest))
    server.registry.ctx.plain_cache.drop(None, digest)  # (the push left its plaintext in memory, which would serve it)
    r = client.get(f"/v2/repo/blobs/{digest}")
    assert_oci_error(r, 404, "BLOB_UNKNOWN")
    r = client.get(f"/v2/repo/blobs/{digest}", headers={"Range": "bytes=10-20"})
    assert_oci_error(r, 404, "BLOB_UNKNOWN")
