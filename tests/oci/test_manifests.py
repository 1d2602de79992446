"""/v2/<name>/manifests/<reference>: push, pull, content negotiation, validation, delete."""

from __future__ import annotations

import json

from tests.oci.helpers import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    EMPTY_DESCRIPTOR,
    EMPTY_DIGEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    assert_oci_error,
    descriptor,
    image_manifest,
    push_blob,
    push_empty_config,
    push_image,
    put_manifest,
    sha256,
    sha512,
)

CONFIG = b'{"architecture":"amd64","os":"linux"}'
LAYER = b"layer bytes"


def _push_blobs(client, name="repo"):
    push_blob(client, name, CONFIG)
    push_blob(client, name, LAYER)


def test_put_by_tag_and_get_byte_for_byte(client):
    _push_blobs(client)
    # odd whitespace and key order must survive untouched
    payload = (
        b'{\n   "schemaVersion" : 2,\n"layers": [ '
        + json.dumps(descriptor(LAYER, OCI_LAYER)).encode()
        + b' ],\t"config":'
        + json.dumps(descriptor(CONFIG, OCI_CONFIG), indent=3).encode()
        + b',  "mediaType": "'
        + OCI_MANIFEST.encode()
        + b'"  }\n\n'
    )
    digest = sha256(payload)
    r = put_manifest(client, "repo", "v1", payload, OCI_MANIFEST)
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["Location"].endswith(f"/v2/repo/manifests/{digest}")
    for reference in ("v1", digest):
        r = client.get(f"/v2/repo/manifests/{reference}")
        assert r.status_code == 200
        assert r.content == payload
        assert r.headers["Content-Type"] == OCI_MANIFEST
        assert r.headers["Docker-Content-Digest"] == digest
        assert int(r.headers["Content-Length"]) == len(payload)
        h = client.head(f"/v2/repo/manifests/{reference}")
        assert h.status_code == 200
        assert h.content == b""
        assert h.headers["Content-Type"] == OCI_MANIFEST
        assert h.headers["Docker-Content-Digest"] == digest
        assert int(h.headers["Content-Length"]) == len(payload)


def test_put_by_digest(client):
    _push_blobs(client)
    payload = json.dumps(image_manifest(CONFIG, [LAYER])).encode()
    digest = sha256(payload)
    r = put_manifest(client, "repo", digest, payload, OCI_MANIFEST)
    assert r.status_code == 201
    assert r.headers["Docker-Content-Digest"] == digest
    assert client.get(f"/v2/repo/manifests/{digest}").content == payload
    assert client.get("/v2/repo/tags/list").json()["tags"] in (None, [])
    # re-pushing the same manifest is fine
    assert put_manifest(client, "repo", digest, payload, OCI_MANIFEST).status_code == 201
    assert put_manifest(client, "repo", "again", payload, OCI_MANIFEST).status_code == 201


def test_digest_reference_mismatch(client):
    _push_blobs(client)
    payload = json.dumps(image_manifest(CONFIG, [LAYER])).encode()
    r = put_manifest(client, "repo", sha256(payload + b" "), payload, OCI_MANIFEST)
    assert_oci_error(r, 400, "DIGEST_INVALID")
    r = put_manifest(client, "repo", sha512(payload + b" "), payload, OCI_MANIFEST)
    assert_oci_error(r, 400, "DIGEST_INVALID")
    assert_oci_error(client.get(f"/v2/repo/manifests/{sha256(payload)}"), 404, "MANIFEST_UNKNOWN")


def test_accept_negotiation(client):
    digest, payload = push_image(client, "repo", "v1")
    ok = [
        None,
        "*/*",
        OCI_MANIFEST,
        f"{DOCKER_MANIFEST}, {OCI_MANIFEST}",
        f"{DOCKER_MANIFEST};q=0.9, {OCI_MANIFEST};q=0.5",
        "application/*",
    ]
    for accept in ok:
        headers = {"Accept": accept} if accept else {}
        r = client.get("/v2/repo/manifests/v1", headers=headers)
        assert r.status_code == 200, accept
        assert r.content == payload
        assert client.head("/v2/repo/manifests/v1", headers=headers).status_code == 200
    for accept in [DOCKER_MANIFEST, f"{DOCKER_MANIFEST}, {DOCKER_LIST}", OCI_INDEX]:
        r = client.get("/v2/repo/manifests/v1", headers={"Accept": accept})
        assert_oci_error(r, 404, "MANIFEST_UNKNOWN")
        assert client.get(f"/v2/repo/manifests/{digest}", headers={"Accept": accept}).status_code == 404
        assert client.head("/v2/repo/manifests/v1", headers={"Accept": accept}).status_code == 404
    # several Accept headers are combined
    r = client.get("/v2/repo/manifests/v1", headers=[("Accept", DOCKER_MANIFEST), ("Accept", OCI_MANIFEST)])
    assert r.status_code == 200


def test_unknown_manifest_and_repository(client):
    push_image(client, "repo", "v1")
    assert_oci_error(client.get("/v2/repo/manifests/nope"), 404, "MANIFEST_UNKNOWN")
    assert_oci_error(client.get(f"/v2/repo/manifests/{sha256(b'x')}"), 404, "MANIFEST_UNKNOWN")
    assert client.head("/v2/repo/manifests/nope").status_code == 404
    assert_oci_error(client.get("/v2/nosuch/manifests/v1"), 404, "NAME_UNKNOWN")
    assert_oci_error(client.delete("/v2/nosuch/manifests/v1"), 404, "NAME_UNKNOWN")
    assert_oci_error(client.delete("/v2/repo/manifests/nope"), 404, "MANIFEST_UNKNOWN")
    assert_oci_error(client.delete(f"/v2/repo/manifests/{sha256(b'x')}"), 404, "MANIFEST_UNKNOWN")


def test_oci_index(client):
    amd, _ = push_image(client, "repo", None, seed="amd64")
    arm, _ = push_image(client, "repo", None, seed="arm64")
    children = [
        {"mediaType": OCI_MANIFEST, "digest": d, "size": len(client.get(f"/v2/repo/manifests/{d}").content)}
        for d in (amd, arm)
    ]
    children[0]["platform"] = {"architecture": "amd64", "os": "linux"}
    children[1]["platform"] = {"architecture": "arm64", "os": "linux"}
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}
    payload = json.dumps(index).encode()
    r = put_manifest(client, "repo", "multi", payload, OCI_INDEX)
    assert r.status_code == 201, r.text
    r = client.get("/v2/repo/manifests/multi", headers={"Accept": OCI_INDEX})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == OCI_INDEX
    assert r.content == payload
    # an index whose children are missing
    missing = dict(children[0], digest=sha256(b"no such manifest"))
    bad = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [children[1], missing]}).encode()
    body = assert_oci_error(put_manifest(client, "repo", "broken", bad, OCI_INDEX), 400, "MANIFEST_BLOB_UNKNOWN")
    assert "broken" not in (client.get("/v2/repo/tags/list").json()["tags"] or [])
    assert body
    # a child in another repository does not count
    other, _ = push_image(client, "elsewhere", None, seed="other")
    cross = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [dict(children[0], digest=other)]}
    ).encode()
    assert_oci_error(put_manifest(client, "repo", "cross", cross, OCI_INDEX), 400, "MANIFEST_BLOB_UNKNOWN")
    # deleting a child before its index is refused; after the index it works
    assert_oci_error(client.delete(f"/v2/repo/manifests/{amd}"), 409)
    assert client.get(f"/v2/repo/manifests/{amd}").status_code == 200
    assert client.delete(f"/v2/repo/manifests/{sha256(payload)}").status_code == 202
    assert client.delete(f"/v2/repo/manifests/{amd}").status_code == 202


def test_docker_schema2_and_manifest_list(client):
    digest, payload = push_image(client, "repo", "docker", media_type=DOCKER_MANIFEST, seed="docker")
    r = client.get("/v2/repo/manifests/docker", headers={"Accept": DOCKER_MANIFEST})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == DOCKER_MANIFEST
    assert r.content == payload
    assert_oci_error(client.get("/v2/repo/manifests/docker", headers={"Accept": OCI_MANIFEST}), 404)
    manifest_list = {
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [
            {
                "mediaType": DOCKER_MANIFEST,
                "digest": digest,
                "size": len(payload),
                "platform": {"architecture": "amd64", "os": "linux"},
            }
        ],
    }
    body = json.dumps(manifest_list).encode()
    r = put_manifest(client, "repo", "list", body, DOCKER_LIST)
    assert r.status_code == 201, r.text
    r = client.get("/v2/repo/manifests/list", headers={"Accept": f"{DOCKER_MANIFEST}, {DOCKER_LIST}"})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == DOCKER_LIST
    assert r.content == body


def test_oci_artifact_with_empty_config(client):
    push_empty_config(client, "repo")
    r = client.get(f"/v2/repo/blobs/{EMPTY_DIGEST}")
    assert r.content == b"{}"
    blob = b"an sbom"
    push_blob(client, "repo", blob)
    artifact = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom.v1",
        "config": EMPTY_DESCRIPTOR,
        "layers": [descriptor(blob, "application/vnd.example.sbom.v1+json")],
        "annotations": {"org.example": "yes"},
    }
    payload = json.dumps(artifact).encode()
    r = put_manifest(client, "repo", "sbom", payload, OCI_MANIFEST)
    assert r.status_code == 201, r.text
    assert client.get("/v2/repo/manifests/sbom").content == payload
    # an artifact with no layers at all (just the empty descriptor)
    empty_layers = dict(artifact, layers=[EMPTY_DESCRIPTOR])
    assert put_manifest(client, "repo", "empty", empty_layers).status_code == 201


def test_missing_blobs(client):
    push_blob(client, "repo", CONFIG)
    payload = json.dumps(image_manifest(CONFIG, [LAYER])).encode()
    body = assert_oci_error(put_manifest(client, "repo", "v1", payload, OCI_MANIFEST), 400, "MANIFEST_BLOB_UNKNOWN")
    assert body
    # a blob held only by another repository does not count either
    push_blob(client, "other", LAYER)
    assert_oci_error(put_manifest(client, "repo", "v1", payload, OCI_MANIFEST), 400, "MANIFEST_BLOB_UNKNOWN")
    # missing config
    config_missing = json.dumps(image_manifest(b"other config", [])).encode()
    assert_oci_error(put_manifest(client, "repo", "v1", config_missing, OCI_MANIFEST), 400, "MANIFEST_BLOB_UNKNOWN")
    assert_oci_error(client.get("/v2/repo/manifests/v1"), 404, "MANIFEST_UNKNOWN")


def test_invalid_manifests(client):
    _push_blobs(client)
    good = image_manifest(CONFIG, [LAYER])
    config = descriptor(CONFIG, OCI_CONFIG)
    cases = [
        b"not json",
        b"",
        b"[]",
        b'{"schemaVersion": 2',
        json.dumps(dict(good, schemaVersion=1)).encode(),
        json.dumps(dict(good, schemaVersion=3)).encode(),
        json.dumps({k: v for k, v in good.items() if k != "schemaVersion"}).encode(),
        json.dumps(dict(good, config=dict(config, digest="sha256:1234"))).encode(),
        json.dumps(dict(good, config=dict(config, digest="md5:" + "0" * 32))).encode(),
        json.dumps(dict(good, config=dict(config, size=-1))).encode(),
        json.dumps(dict(good, config=dict(config, size="12"))).encode(),
        json.dumps(dict(good, config=dict(config, size=len(CONFIG) + 1))).encode(),  # wrong size for the blob
        json.dumps(dict(good, config=dict(config, mediaType=""))).encode(),
        json.dumps(dict(good, layers="nope")).encode(),
        json.dumps(dict(good, layers=[42])).encode(),
        json.dumps({k: v for k, v in good.items() if k != "config"}).encode(),
        json.dumps(dict(good, manifests=[])).encode(),
        json.dumps(dict(good, annotations={"a": 1})).encode(),
        json.dumps(dict(good, config=EMPTY_DESCRIPTOR)).encode(),  # empty config without artifactType
        b"[" * 100000 + b"]" * 100000,
    ]
    for payload in cases:
        r = put_manifest(client, "repo", "bad", payload, OCI_MANIFEST)
        assert_oci_error(r, 400, "MANIFEST_INVALID")
    # Docker schema 1
    schema1 = {"schemaVersion": 1, "name": "repo", "tag": "bad", "architecture": "amd64", "fsLayers": []}
    for media_type in (
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/json",
    ):
        assert_oci_error(put_manifest(client, "repo", "bad", json.dumps(schema1).encode(), media_type), 400)
    # an unknown media type
    weird = json.dumps(dict(good, mediaType="application/vnd.example+json")).encode()
    assert_oci_error(put_manifest(client, "repo", "bad", weird, "application/vnd.example+json"), 400)
    assert_oci_error(client.get("/v2/repo/manifests/bad"), 404, "MANIFEST_UNKNOWN")


def test_content_type_must_match_media_type(client):
    _push_blobs(client)
    payload = json.dumps(image_manifest(CONFIG, [LAYER])).encode()
    for content_type in (DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST):
        assert_oci_error(put_manifest(client, "repo", "v1", payload, content_type), 400)
    # without a mediaType field the Content-Type decides
    no_media_type = {k: v for k, v in image_manifest(CONFIG, [LAYER]).items() if k != "mediaType"}
    body = json.dumps(no_media_type).encode()
    assert put_manifest(client, "repo", "v1", body, OCI_MANIFEST).status_code == 201
    assert client.get("/v2/repo/manifests/v1").headers["Content-Type"] == OCI_MANIFEST


def test_manifest_too_large(client):
    _push_blobs(client)
    manifest = image_manifest(CONFIG, [LAYER], annotations={"pad": "x" * (4 * 1024 * 1024 + 10)})
    payload = json.dumps(manifest).encode()
    r = put_manifest(client, "repo", "huge", payload, OCI_MANIFEST)
    assert_oci_error(r, 413)
    # exactly at the limit is not "too large" (it is accepted or rejected on content, never with 413)
    pad = 4 * 1024 * 1024 - len(json.dumps(image_manifest(CONFIG, [LAYER], annotations={"pad": ""})))
    at_limit = json.dumps(image_manifest(CONFIG, [LAYER], annotations={"pad": "y" * pad})).encode()
    assert len(at_limit) == 4 * 1024 * 1024
    r = put_manifest(client, "repo", "limit", at_limit, OCI_MANIFEST)
    assert r.status_code == 201, r.text
    assert client.get("/v2/repo/manifests/limit").content == at_limit


def test_subject_header(client):
    subject_digest, subject_payload = push_image(client, "repo", "v1")
    push_empty_config(client, "repo")
    referrer = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": EMPTY_DESCRIPTOR,
        "layers": [EMPTY_DESCRIPTOR],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": len(subject_payload)},
    }
    r = put_manifest(client, "repo", sha256(json.dumps(referrer).encode()), referrer)
    assert r.status_code == 201, r.text
    assert r.headers["OCI-Subject"] == subject_digest
    # a subject that does not exist (yet) is allowed
    dangling = dict(referrer, subject={"mediaType": OCI_MANIFEST, "digest": sha256(b"later"), "size": 5})
    r = put_manifest(client, "repo", "dangling", dangling)
    assert r.status_code == 201, r.text
    assert r.headers["OCI-Subject"] == sha256(b"later")
    # and a plain image has no OCI-Subject
    r = put_manifest(client, "repo", "v1", subject_payload, OCI_MANIFEST)
    assert r.status_code == 201
    assert "OCI-Subject" not in r.headers


def test_delete_by_digest(client):
    digest, payload = push_image(client, "repo", "v1")
    put_manifest(client, "repo", "v2", payload, OCI_MANIFEST)
    r = client.delete(f"/v2/repo/manifests/{digest}")
    assert r.status_code == 202
    for reference in (digest, "v1", "v2"):
        assert_oci_error(client.get(f"/v2/repo/manifests/{reference}"), 404, "MANIFEST_UNKNOWN")
        assert client.head(f"/v2/repo/manifests/{reference}").status_code == 404
    assert client.get("/v2/repo/tags/list").json()["tags"] in (None, [])
    assert_oci_error(client.delete(f"/v2/repo/manifests/{digest}"), 404, "MANIFEST_UNKNOWN")
    # it can be pushed again
    assert put_manifest(client, "repo", "v1", payload, OCI_MANIFEST).status_code == 201
    assert client.get("/v2/repo/manifests/v1").content == payload


def test_delete_by_tag(client):
    digest, payload = push_image(client, "repo", "v1")
    put_manifest(client, "repo", "v2", payload, OCI_MANIFEST)
    r = client.delete("/v2/repo/manifests/v1")
    assert r.status_code == 202
    assert_oci_error(client.get("/v2/repo/manifests/v1"), 404, "MANIFEST_UNKNOWN")
    assert client.get("/v2/repo/manifests/v2").content == payload
    assert client.get(f"/v2/repo/manifests/{digest}").content == payload
    assert client.get("/v2/repo/tags/list").json()["tags"] == ["v2"]
    assert_oci_error(client.delete("/v2/repo/manifests/v1"), 404, "MANIFEST_UNKNOWN")


def test_tag_repoint(client):
    a, payload_a = push_image(client, "repo", "v1", seed="a")
    b, payload_b = push_image(client, "repo", "v1", seed="b")
    assert a != b
    r = client.get("/v2/repo/manifests/v1")
    assert r.headers["Docker-Content-Digest"] == b
    assert r.content == payload_b
    assert client.get(f"/v2/repo/manifests/{a}").content == payload_a  # the old one stays, untagged
    assert put_manifest(client, "repo", "v1", payload_a, OCI_MANIFEST).status_code == 201
    assert client.get("/v2/repo/manifests/v1").headers["Docker-Content-Digest"] == a
    assert client.head("/v2/repo/manifests/v1").headers["Docker-Content-Digest"] == a
    assert client.get("/v2/repo/tags/list").json()["tags"] == ["v1"]


def test_sha512_manifest(client):
    config, layer = b'{"sha":"512"}', b"sha512 layer"
    push_blob(client, "repo", config, sha512(config))
    push_blob(client, "repo", layer, sha512(layer))
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha512(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": sha512(layer), "size": len(layer)}],
    }
    payload = json.dumps(manifest).encode()
    digest = sha512(payload)
    r = put_manifest(client, "repo", digest, payload, OCI_MANIFEST)
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["Location"].endswith(f"/v2/repo/manifests/{digest}")
    r = client.get(f"/v2/repo/manifests/{digest}")
    assert r.status_code == 200
    assert r.content == payload
    assert r.headers["Docker-Content-Digest"] == digest
    assert client.head(f"/v2/repo/manifests/{digest}").status_code == 200
    assert client.get(f"/v2/repo/blobs/{sha512(layer)}").content == layer
    assert client.delete(f"/v2/repo/manifests/{digest}").status_code == 202
    assert client.get(f"/v2/repo/manifests/{digest}").status_code == 404


def test_push_creates_repository_in_catalog(client):
    push_image(client, "new/repo", "v1")
    assert "new/repo" in client.get("/v2/_catalog").json()["repositories"]


def test_reads_of_an_invalid_reference_are_404_manifest_unknown(client):
    """The spec's endpoint table allows only 404 on GET/HEAD of a manifest (the conformance suite reads
    '.INVALID_MANIFEST_NAME'); PUT keeps 400 TAG_INVALID so the pusher learns what to fix."""
    _, payload = push_image(client, "repo", "v1")
    for reference in [".INVALID_MANIFEST_NAME", "-bad", "a" * 129, "sha256:nothex"]:
        assert_oci_error(client.get(f"/v2/repo/manifests/{reference}"), 404, "MANIFEST_UNKNOWN")
        r = client.head(f"/v2/repo/manifests/{reference}")
        assert r.status_code == 404 and r.content == b""
    r = put_manifest(client, "repo", ".INVALID_MANIFEST_NAME", payload, OCI_MANIFEST)
    assert_oci_error(r, 400, "TAG_INVALID")
