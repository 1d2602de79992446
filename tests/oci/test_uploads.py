"""/v2/<name>/blobs/uploads/…: sessions, monolithic and chunked pushes, resumption, cancellation, mounts."""

from __future__ import annotations

import uuid

from tests.oci.helpers import (
    assert_oci_error,
    push_blob,
    raw_request,
    sha256,
    sha512,
    start_upload,
)

DATA = b"0123456789abcdefghijklmnopqrstuvwxyz" * 3  # 108 bytes


def _range(r) -> str:
    return r.headers["Range"]


def test_post_starts_a_session(client):
    r = client.post("/v2/repo/blobs/uploads/")
    assert r.status_code == 202
    location = r.headers["Location"]
    upload_id = r.headers["Docker-Upload-UUID"]
    uuid.UUID(upload_id)
    assert upload_id in location
    assert r.headers["Range"] == "0-0"
    r = client.get(location)
    assert r.status_code == 204
    assert r.headers["Range"] == "0-0"
    assert r.headers["Docker-Upload-UUID"] == upload_id
    assert r.headers["Location"]
    # the trailing slash is optional
    assert client.post("/v2/repo/blobs/uploads").status_code == 202


def test_monolithic_post(client):
    digest = sha256(DATA)
    r = client.post("/v2/repo/blobs/uploads/", params={"digest": digest}, content=DATA)
    assert r.status_code == 201
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["Location"].endswith(f"/v2/repo/blobs/{digest}")
    got = client.get(r.headers["Location"])
    assert got.status_code == 200
    assert got.content == DATA
    # pushing the same blob again is fine
    assert client.post("/v2/repo/blobs/uploads/", params={"digest": digest}, content=DATA).status_code == 201


def test_monolithic_post_bad_digest_leaves_nothing(client, server):
    wrong = sha256(b"other")
    r = client.post("/v2/repo/blobs/uploads/", params={"digest": wrong}, content=DATA)
    assert_oci_error(r, 400, "DIGEST_INVALID")
    assert client.head(f"/v2/repo/blobs/{wrong}").status_code == 404
    assert client.head(f"/v2/repo/blobs/{sha256(DATA)}").status_code == 404
    _assert_no_upload_data(server)


def test_post_then_put_whole_body(client):
    location = start_upload(client, "repo")
    digest = sha256(DATA)
    r = client.put(location, params={"digest": digest}, content=DATA)
    assert r.status_code == 201
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["Location"].endswith(f"/v2/repo/blobs/{digest}")
    assert client.get(f"/v2/repo/blobs/{digest}").content == DATA
    # the session is finished
    assert_oci_error(client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_oci_error(client.put(location, params={"digest": digest}), 404, "BLOB_UPLOAD_UNKNOWN")


def test_chunked_upload_with_content_range(client):
    location = start_upload(client, "repo")
    chunks = [DATA[:10], DATA[10:50], DATA[50:]]
    offset = 0
    for chunk in chunks:
        r = client.patch(
            location,
            content=chunk,
            headers={
                "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
                "Content-Type": "application/octet-stream",
            },
        )
        assert r.status_code == 202, r.text
        offset += len(chunk)
        assert _range(r) == f"0-{offset - 1}"
        assert r.headers["Location"]
        assert r.headers["Docker-Upload-UUID"]
        location = r.headers["Location"]
        status = client.get(location)
        assert status.status_code == 204
        assert _range(status) == f"0-{offset - 1}"
    r = client.put(location, params={"digest": sha256(DATA)})
    assert r.status_code == 201
    assert client.get(f"/v2/repo/blobs/{sha256(DATA)}").content == DATA


def test_chunked_upload_final_chunk_in_put(client):
    location = start_upload(client, "repo")
    r = client.patch(location, content=DATA[:20], headers={"Content-Range": "0-19"})
    assert r.status_code == 202
    r = client.put(r.headers["Location"], params={"digest": sha256(DATA)}, content=DATA[20:])
    assert r.status_code == 201
    assert client.get(f"/v2/repo/blobs/{sha256(DATA)}").content == DATA


def test_streamed_patch_without_content_range(client):
    location = start_upload(client, "repo")

    def body():
        for i in range(0, len(DATA), 7):
            yield DATA[i : i + 7]

    r = client.patch(location, content=body())  # chunked transfer encoding, no Content-Length
    assert r.status_code == 202, r.text
    assert _range(r) == f"0-{len(DATA) - 1}"
    # a second streamed piece appends
    r = client.patch(r.headers["Location"], content=b"MORE")
    assert r.status_code == 202
    assert _range(r) == f"0-{len(DATA) + 3}"
    r = client.put(r.headers["Location"], params={"digest": sha256(DATA + b"MORE")})
    assert r.status_code == 201
    assert client.get(f"/v2/repo/blobs/{sha256(DATA + b'MORE')}").content == DATA + b"MORE"


def test_out_of_order_and_overlapping_chunks_are_416(client):
    location = start_upload(client, "repo")
    assert client.patch(location, content=DATA[:10], headers={"Content-Range": "0-9"}).status_code == 202
    for content_range, body in [("20-29", DATA[20:30]), ("5-14", DATA[5:15]), ("0-9", DATA[:10])]:
        r = client.patch(location, content=body, headers={"Content-Range": content_range})
        assert_oci_error(r, 416)
        assert _range(r) == "0-9", content_range
        assert r.headers["Location"]
        # nothing changed
        assert _range(client.get(location)) == "0-9"
    # the client resumes where the server says
    r = client.patch(location, content=DATA[10:], headers={"Content-Range": f"10-{len(DATA) - 1}"})
    assert r.status_code == 202
    assert client.put(location, params={"digest": sha256(DATA)}).status_code == 201
    assert client.get(f"/v2/repo/blobs/{sha256(DATA)}").content == DATA


def test_content_range_not_matching_body_is_416(client):
    location = start_upload(client, "repo")
    r = client.patch(location, content=DATA[:5], headers={"Content-Range": "0-9"})
    assert_oci_error(r, 416)
    assert _range(client.get(location)) == "0-0"
    r = client.patch(location, content=DATA[:10], headers={"Content-Range": "9-0"})
    assert r.status_code in (400, 416)
    assert_oci_error(r, (400, 416))
    r = client.patch(location, content=DATA[:10], headers={"Content-Range": "garbage"})
    assert_oci_error(r, (400, 416))
    # still usable
    assert client.patch(location, content=DATA[:10], headers={"Content-Range": "0-9"}).status_code == 202
    assert _range(client.get(location)) == "0-9"


def test_cancel_upload(client, server):
    location = start_upload(client, "repo")
    client.patch(location, content=DATA, headers={"Content-Range": f"0-{len(DATA) - 1}"})
    r = client.delete(location)
    assert r.status_code == 204
    assert_oci_error(client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_oci_error(client.patch(location, content=b"x"), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_oci_error(client.put(location, params={"digest": sha256(DATA)}), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_oci_error(client.delete(location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert client.head(f"/v2/repo/blobs/{sha256(DATA)}").status_code == 404
    _assert_no_upload_data(server)


def test_put_with_bad_digest(client):
    location = start_upload(client, "repo")
    client.patch(location, content=DATA, headers={"Content-Range": f"0-{len(DATA) - 1}"})
    wrong = sha256(b"not the data")
    assert_oci_error(client.put(location, params={"digest": wrong}), 400, "DIGEST_INVALID")
    assert client.head(f"/v2/repo/blobs/{wrong}").status_code == 404
    assert client.head(f"/v2/repo/blobs/{sha256(DATA)}").status_code == 404
    # malformed and unsupported digests
    for bad in ["sha256:1234", "sha256:" + "G" * 64, "md5:" + "0" * 32, "sha256", "nonsense", "sha1:" + "0" * 40]:
        r = client.put(location, params={"digest": bad})
        assert_oci_error(r, 400, "DIGEST_INVALID")
    assert_oci_error(client.put(location), 400, "DIGEST_INVALID")  # no digest at all
    assert client.head(f"/v2/repo/blobs/{sha256(DATA)}").status_code == 404


def test_sha512_blob(client):
    digest = sha512(DATA)
    # monolithic
    r = client.post("/v2/repo/blobs/uploads/", params={"digest": digest}, content=DATA)
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest
    r = client.get(f"/v2/repo/blobs/{digest}")
    assert r.status_code == 200
    assert r.content == DATA
    assert r.headers["Docker-Content-Digest"] == digest
    assert client.get(f"/v2/repo/blobs/{digest}", headers={"Range": "bytes=0-3"}).content == DATA[:4]
    # chunked
    other = DATA[::-1]
    location = start_upload(client, "repo")
    r = client.patch(location, content=other[:50], headers={"Content-Range": "0-49"})
    r = client.patch(r.headers["Location"], content=other[50:], headers={"Content-Range": f"50-{len(other) - 1}"})
    assert r.status_code == 202
    assert_oci_error(client.put(location, params={"digest": sha512(b"wrong")}), 400, "DIGEST_INVALID")
    r = client.put(location, params={"digest": sha512(other)})
    assert r.status_code == 201, r.text
    assert client.get(f"/v2/repo/blobs/{sha512(other)}").content == other


def test_unknown_upload_ids(client):
    start_upload(client, "repo")
    for upload_id in [str(uuid.uuid4()), "not-a-uuid", "x" * 200, "12345"]:
        base = f"/v2/repo/blobs/uploads/{upload_id}"
        assert_oci_error(client.get(base), 404, "BLOB_UPLOAD_UNKNOWN")
        assert_oci_error(client.patch(base, content=b"abc"), 404, "BLOB_UPLOAD_UNKNOWN")
        assert_oci_error(client.put(base, params={"digest": sha256(b"abc")}, content=b"abc"), 404)
        assert_oci_error(client.delete(base), 404, "BLOB_UPLOAD_UNKNOWN")


def test_upload_is_bound_to_its_repository(client):
    location = start_upload(client, "repo")
    upload_id = location.rstrip("/").rsplit("/", 1)[1].split("?")[0]
    start_upload(client, "other")
    assert_oci_error(client.get(f"/v2/other/blobs/uploads/{upload_id}"), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_oci_error(client.patch(f"/v2/other/blobs/uploads/{upload_id}", content=b"x"), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_oci_error(client.get(f"/v2/nosuch/blobs/uploads/{upload_id}"), 404)
    assert client.get(location).status_code == 204


def _truncated(server, auth_header: dict, method: str, path: str, declared: int, sent: bytes, extra: str = "") -> None:
    auth = "".join(f"{k}: {v}\r\n" for k, v in auth_header.items())
    request = (
        f"{method} {path} HTTP/1.1\r\nHost: {server.host}\r\n{auth}{extra}"
        f"Content-Type: application/octet-stream\r\nContent-Length: {declared}\r\n\r\n"
    ).encode() + sent
    # Half-close and wait for the answer: the server has then aborted the chunk and released the upload (a fixed
    # sleep was not always enough on a loaded machine or with object storage).
    answer = raw_request(server.url, request, half_close=True, read_timeout=30)
    assert answer.startswith(b"HTTP/1.1 4"), answer[:200]


def test_truncated_patch_keeps_old_size(client, server, auth_header):
    location = start_upload(client, "repo")
    r = client.patch(location, content=DATA[:10], headers={"Content-Range": "0-9"})
    assert r.status_code == 202
    _truncated(server, auth_header, "PATCH", location, 1000, b"Z" * 100, "Content-Range: 10-1009\r\n")
    _truncated(server, auth_header, "PATCH", location, 1000, b"Y" * 300)  # streamed, no Content-Range
    # more than the server's 1 MiB write piece, so some of the cut-off chunk reaches storage
    big = 3 << 20
    _truncated(server, auth_header, "PATCH", location, big, b"X" * (big // 2), f"Content-Range: 10-{big + 9}\r\n")
    status = client.get(location)
    assert status.status_code == 204
    assert _range(status) == "0-9"
    # completing what the server holds gives exactly those bytes, not the cut-off leftovers
    r = client.put(location, params={"digest": sha256(DATA[:10])})
    assert r.status_code == 201, r.text
    r = client.get(f"/v2/repo/blobs/{sha256(DATA[:10])}")
    assert r.content == DATA[:10]
    assert r.headers["Content-Length"] == "10"
    from soko.registry.fsck import check

    assert list(check(server.registry.ctx)) == []


def test_truncated_patch_then_resume(client, server, auth_header):
    location = start_upload(client, "repo")
    client.patch(location, content=DATA[:10], headers={"Content-Range": "0-9"})
    _truncated(server, auth_header, "PATCH", location, 500, b"Q" * 200, "Content-Range: 10-509\r\n")
    r = client.patch(location, content=DATA[10:], headers={"Content-Range": f"10-{len(DATA) - 1}"})
    assert r.status_code == 202
    r = client.put(location, params={"digest": sha256(DATA)})
    assert r.status_code == 201
    assert client.get(f"/v2/repo/blobs/{sha256(DATA)}").content == DATA


def test_truncated_monolithic_post_leaves_no_blob(client, server, auth_header):
    push_blob(client, "repo", b"make the repo exist")
    digest = sha256(DATA)
    _truncated(server, auth_header, "POST", f"/v2/repo/blobs/uploads/?digest={digest}", len(DATA), DATA[:50])
    assert client.head(f"/v2/repo/blobs/{digest}").status_code == 404
    _truncated(server, auth_header, "PUT", f"{start_upload(client, 'repo')}?digest={digest}", len(DATA), DATA[:50])
    assert client.head(f"/v2/repo/blobs/{digest}").status_code == 404


def test_body_longer_than_content_range(client):
    location = start_upload(client, "repo")
    # httpx sets Content-Length from the body; the range claims fewer bytes
    r = client.patch(location, content=DATA[:20], headers={"Content-Range": "0-9"})
    assert_oci_error(r, 416)
    assert _range(client.get(location)) == "0-0"


def test_cross_repository_mount(client):
    digest = push_blob(client, "source", DATA)
    r = client.post("/v2/target/blobs/uploads/", params={"mount": digest, "from": "source"})
    assert r.status_code == 201
    assert r.headers["Location"].endswith(f"/v2/target/blobs/{digest}")
    assert r.headers["Docker-Content-Digest"] == digest
    assert client.get(f"/v2/target/blobs/{digest}").content == DATA
    # mounting again is idempotent
    assert client.post("/v2/target/blobs/uploads/", params={"mount": digest, "from": "source"}).status_code == 201


def test_mount_falls_back_to_upload(client):
    push_blob(client, "source", DATA)
    missing = sha256(b"missing")
    for params in [
        {"mount": missing, "from": "source"},  # the source lacks it
        {"mount": sha256(DATA), "from": "nosuchrepo"},  # the source does not exist
        {"mount": sha256(DATA)},  # no source named
    ]:
        r = client.post("/v2/target/blobs/uploads/", params=params)
        assert r.status_code == 202, (params, r.status_code, r.text)
        assert r.headers["Location"]
        assert r.headers["Docker-Upload-UUID"]
        assert client.get(r.headers["Location"]).status_code == 204
    # the fallback session works as a normal upload
    r = client.post("/v2/target/blobs/uploads/", params={"mount": missing, "from": "source"})
    done = client.put(r.headers["Location"], params={"digest": missing}, content=b"missing")
    assert done.status_code == 201


def test_mount_does_not_leak_unlinked_blobs(client):
    digest = push_blob(client, "secret", DATA)
    push_blob(client, "public", b"public stuff")
    r = client.post("/v2/thief/blobs/uploads/", params={"mount": digest, "from": "public"})
    assert r.status_code == 202
    assert client.head(f"/v2/thief/blobs/{digest}").status_code == 404
    assert client.head(f"/v2/public/blobs/{digest}").status_code == 404


def test_mount_with_bad_digest(client):
    push_blob(client, "source", DATA)
    r = client.post("/v2/target/blobs/uploads/", params={"mount": "sha256:nope", "from": "source"})
    assert_oci_error(r, 400, "DIGEST_INVALID")


def test_post_with_body_but_no_digest(client):
    r = client.post("/v2/repo/blobs/uploads/", content=DATA)
    assert r.status_code in (202, 400)
    if r.status_code == 400:
        assert_oci_error(r, 400)


def _assert_no_upload_data(server) -> None:
    storage = server.registry.ctx.storage
    try:
        leftovers = storage.list("uploads")
    except Exception:
        return
    assert leftovers == [], leftovers


def test_final_put_checks_its_content_range_like_patch(client):
    """A final PUT carrying a chunk whose Content-Range does not start at the current offset is refused with 416
    and the current Range (as PATCH is), not appended and then failed as DIGEST_INVALID."""
    location = start_upload(client, "repo")
    assert client.patch(location, content=DATA[:10], headers={"Content-Range": "0-9"}).status_code == 202
    digest = sha256(DATA)
    for content_range, body in [("20-107", DATA[20:]), ("5-107", DATA[5:]), ("0-107", DATA)]:
        r = client.put(location, params={"digest": digest}, content=body, headers={"Content-Range": content_range})
        assert_oci_error(r, 416)
        assert _range(r) == "0-9", content_range
        assert r.headers["Location"]
        assert _range(client.get(location)) == "0-9"  # nothing appended, session still usable
    r = client.put(location, params={"digest": digest}, content=DATA[:5], headers={"Content-Range": "10-107"})
    assert_oci_error(r, 416)  # the range does not match the body
    r = client.put(location, params={"digest": digest}, content=DATA[10:], headers={"Content-Range": "10-107"})
    assert r.status_code == 201, r.text
    assert client.get(f"/v2/repo/blobs/{digest}").content == DATA
