"""/v2/ itself, routing, names and hostile input."""

from __future__ import annotations

import os

from tests.oci.helpers import (
    OCI_MANIFEST,
    assert_oci_error,
    push_blob,
    push_image,
    raw_request,
    raw_status,
    sha256,
)


def test_v2_get_and_head(client):
    for path in ("/v2/", "/v2"):
        r = client.get(path)
        assert r.status_code == 200
        assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        r = client.head(path)
        assert r.status_code == 200
        assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        assert r.content == b""
    assert_oci_error(client.post("/v2/"), 405, "UNSUPPORTED")
    assert_oci_error(client.delete("/v2/"), 405, "UNSUPPORTED")


def test_unknown_endpoints_are_404_json(client):
    for path in ["/v2/foo/bar", "/v2/repo/nothing/here", "/v2/repo/blobs", "/v2/repo/manifests", "/v2/repo/tags"]:
        assert_oci_error(client.get(path), 404)


WRONG_METHODS = [
    ("POST", "/v2/repo/manifests/latest"),
    ("PATCH", "/v2/repo/manifests/latest"),
    ("PUT", "/v2/_catalog"),
    ("DELETE", "/v2/repo/tags/list"),
    ("PUT", "/v2/repo/blobs/" + "sha256:" + "0" * 64),
    ("PATCH", "/v2/repo/blobs/" + "sha256:" + "0" * 64),
    ("GET", "/v2/repo/blobs/uploads/"),
    ("POST", "/v2/repo/referrers/" + "sha256:" + "0" * 64),
    ("POST", "/v2/repo/blobs/uploads/2b7e5a8c-0000-4000-8000-000000000000"),
]


def test_wrong_methods_are_405_oci_error(client):
    for method, path in WRONG_METHODS:
        r = client.request(method, path)
        assert_oci_error(r, 405, "UNSUPPORTED")
        assert r.headers.get("Allow"), (method, path)
    r = client.head("/v2/repo/blobs/uploads/")
    assert r.status_code == 405
    assert r.content == b""


INVALID_NAMES = [
    "UPPER",
    "Repo/x",
    "a//b",
    "-lead",
    "trail-",
    "a/",
    "x" * 300,
    "a" * 257,
    "a..b",
    "a_-b",
    "x",  # shorter than ECR's 2 characters
]


def test_invalid_names(client):
    for name in INVALID_NAMES:
        for r in (
            client.get(f"/v2/{name}/tags/list"),
            client.get(f"/v2/{name}/manifests/latest"),
            client.post(f"/v2/{name}/blobs/uploads/"),
            client.head(f"/v2/{name}/blobs/{sha256(b'x')}"),
        ):
            assert r.status_code in (400, 404), (name, r.status_code)
            assert_oci_error(r, (400, 404))


def test_invalid_name_code_is_name_invalid(client):
    assert_oci_error(client.post("/v2/UPPER/blobs/uploads/"), 400, "NAME_INVALID")
    assert_oci_error(client.get("/v2/" + "a" * 300 + "/tags/list"), 400, "NAME_INVALID")


TRAVERSALS = [
    "/v2/../../etc/passwd/manifests/latest",
    "/v2/a/../../b/manifests/latest",
    "/v2/%2e%2e/%2e%2e/etc/tags/list",
    "/v2/repo%2f..%2f..%2fx/tags/list",
    "/v2/repo/blobs/sha256:..%2f..%2f..%2fetc%2fpasswd",
    "/v2//etc/tags/list",
    "/v2/repo/manifests/..",
    "/v2/repo/blobs/uploads/..%2f..%2fx",
    "/v2/repo/blobs/uploads/../../../x",
]


def test_path_traversal_is_rejected(server, client, auth_header):
    # a real blob and manifest exist, so a traversal that "worked" would have something to find
    push_image(client, "repo")
    auth = "".join(f"{k}: {v}\r\n" for k, v in auth_header.items())
    for raw_path in TRAVERSALS:
        for method in ("GET", "PUT", "DELETE", "POST", "PATCH"):
            request = (
                f"{method} {raw_path} HTTP/1.1\r\nHost: {server.host}\r\n{auth}"
                "Content-Length: 2\r\nConnection: close\r\n\r\n{}"
            )
            response = raw_request(server.url, request.encode())
            status = raw_status(response)
            assert status in (400, 404, 405), (method, raw_path, response[:300])
            assert b'"errors"' in response, response[:300]
    data_dir = os.path.realpath(server.registry.settings.data_dir)
    parent = os.path.dirname(data_dir)
    # nothing was written next to (outside) the data dir
    outside = sorted(n for n in os.listdir(parent) if n not in ("data", "metadata.db") and not n.startswith("metadata"))
    assert outside == [], outside


def test_invalid_and_longest_tags(client):
    digest, payload = push_image(client, "repo", None)
    for tag in ["-bad", ".bad", "a" * 129, "bad tag", "bad/tag", "tag!"]:
        r = client.put(
            f"/v2/repo/manifests/{tag}",
            content=payload,
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )
        assert_oci_error(r, (400, 404, 405))
        if "/" not in tag and " " not in tag:
            assert_oci_error(r, 400, "TAG_INVALID")
        if "/" not in tag:
            assert_oci_error(client.get(f"/v2/repo/manifests/{tag}"), 404, "MANIFEST_UNKNOWN")
            assert client.head(f"/v2/repo/manifests/{tag}").status_code == 404
    assert client.get("/v2/repo/tags/list").json()["tags"] in (None, [])
    tag = "a" * 128
    r = client.put(f"/v2/repo/manifests/{tag}", content=payload, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201
    r = client.get(f"/v2/repo/manifests/{tag}")
    assert r.status_code == 200
    assert r.headers["Docker-Content-Digest"] == digest


def test_huge_header_is_4xx(server, client):
    r = client.get("/v2/", headers={"X-Huge": "a" * 65536})
    assert 400 <= r.status_code < 500, r.status_code
    r = client.get("/v2/repo/tags/list", headers={"Accept": "a" * 65536})
    assert 400 <= r.status_code < 500, r.status_code
    # and the server is still fine
    response = raw_request(
        server.url, f"GET /v2/{'a' * 70000}/tags/list HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    assert 400 <= raw_status(response) < 500
    headers = [(f"X-H{i}", "v" * 100) for i in range(200)]
    assert client.get("/v2/", headers=headers).status_code < 500
    # and the server is still fine
    assert client.get("/v2/").status_code == 200


def test_garbage_digests_never_500(client):
    push_blob(client, "repo", b"hello")
    for ref in ["sha256:", "sha256:zz", ":", "sha256:" + "A" * 64, "md5:" + "0" * 32, "a" * 250 + ":x"]:
        assert_oci_error(client.get(f"/v2/repo/blobs/{ref}"), (400, 404))
        assert_oci_error(client.get(f"/v2/repo/manifests/{ref}"), (400, 404))
        assert_oci_error(client.delete(f"/v2/repo/blobs/{ref}"), (400, 404))


def test_error_responses_carry_api_version_header(client):
    r = client.get("/v2/nope/tags/list")
    assert_oci_error(r, 404, "NAME_UNKNOWN")
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
