"""Tag lists, the catalog and the referrers API."""

from __future__ import annotations

import json
import re

from tests.oci.helpers import (
    EMPTY_DESCRIPTOR,
    OCI_INDEX,
    OCI_MANIFEST,
    assert_oci_error,
    push_blob,
    push_empty_config,
    push_image,
    put_manifest,
    sha256,
)

_LINK = re.compile(r'<(?P<url>/v2/[^>]+)>;\s*rel="next"')


def _next(response) -> str | None:
    link = response.headers.get("Link")
    if link is None:
        return None
    match = _LINK.fullmatch(link.strip())
    assert match, link
    return match.group("url")


def test_tags_list_sorted_and_paginated(client):
    _, payload = push_image(client, "repo", "b1")
    tags = ["b1", "a", "A", "z9", "latest", "v1.0", "v1.0-rc", "v10", "v2", "_x", "9"]
    for tag in tags[1:]:
        assert put_manifest(client, "repo", tag, payload, OCI_MANIFEST).status_code == 201
    r = client.get("/v2/repo/tags/list")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == {"name": "repo", "tags": sorted(tags)}
    assert "Link" not in r.headers
    # walk it two at a time, following Link
    seen: list[str] = []
    url: str | None = "/v2/repo/tags/list?n=2"
    pages = 0
    while url:
        r = client.get(url)
        assert r.status_code == 200
        page = r.json()["tags"]
        assert len(page) <= 2
        seen += page
        url = _next(r)
        if url:
            assert "n=2" in url and "last=" in url, url
        pages += 1
        assert pages < 20
    assert seen == sorted(tags)
    # n larger than the list: everything, no Link
    r = client.get("/v2/repo/tags/list", params={"n": 100})
    assert r.json()["tags"] == sorted(tags)
    assert "Link" not in r.headers
    # exactly n remain: no Link
    r = client.get("/v2/repo/tags/list", params={"n": len(tags)})
    assert len(r.json()["tags"]) == len(tags)
    assert "Link" not in r.headers
    # last without n
    r = client.get("/v2/repo/tags/list", params={"last": "latest"})
    assert r.json()["tags"] == [t for t in sorted(tags) if t > "latest"]
    r = client.get("/v2/repo/tags/list", params={"n": 1, "last": "v2"})
    assert r.json()["tags"] == ["z9"]
    assert "Link" not in r.headers
    r = client.get("/v2/repo/tags/list", params={"last": "zzz"})
    assert r.json()["tags"] in ([], None)


def test_tags_list_n_zero_and_invalid(client):
    push_image(client, "repo", "v1")
    r = client.get("/v2/repo/tags/list", params={"n": 0})
    assert r.status_code == 200
    assert r.json()["tags"] in ([], None)
    assert "Link" not in r.headers
    for bad in ["-1", "abc", "1.5", "", "99999999999999999999", " 2"]:
        r = client.get("/v2/repo/tags/list", params={"n": bad})
        assert_oci_error(r, 400)
        r = client.get("/v2/_catalog", params={"n": bad})
        assert_oci_error(r, 400)


def test_tags_list_of_unknown_and_empty_repository(client):
    assert_oci_error(client.get("/v2/nosuch/tags/list"), 404, "NAME_UNKNOWN")
    push_blob(client, "blobsonly", b"x")  # the repository exists but has no tags
    r = client.get("/v2/blobsonly/tags/list")
    assert r.status_code == 200
    assert r.json()["name"] == "blobsonly"
    assert r.json()["tags"] in ([], None)


def test_catalog(client):
    names = ["zeta", "alpha", "team/app", "team/api", "b-c", "b.c", "b_c", "b0"]
    for name in names:
        push_blob(client, name, b"x")
    r = client.get("/v2/_catalog")
    assert r.status_code == 200
    assert r.json() == {"repositories": sorted(names)}
    seen: list[str] = []
    url: str | None = "/v2/_catalog?n=3"
    while url:
        r = client.get(url)
        assert r.status_code == 200
        seen += r.json()["repositories"]
        url = _next(r)
        if url:
            assert url.startswith("/v2/_catalog?")
    assert seen == sorted(names)
    r = client.get("/v2/_catalog", params={"n": 0})
    assert r.status_code == 200
    assert r.json()["repositories"] == []
    r = client.get("/v2/_catalog", params={"n": 2, "last": "b_c"})
    assert r.json()["repositories"] == sorted(names)[sorted(names).index("b_c") + 1 :][:2]
    assert _next(r)


def _referrer(subject_digest: str, subject_size: int, artifact_type: str, annotations: dict | None = None) -> dict:
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": EMPTY_DESCRIPTOR,
        "layers": [EMPTY_DESCRIPTOR],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": subject_size},
    }
    if annotations:
        manifest["annotations"] = annotations
    return manifest


def test_referrers(client):
    subject, subject_payload = push_image(client, "repo", "v1")
    push_empty_config(client, "repo")
    sig = json.dumps(_referrer(subject, len(subject_payload), "application/vnd.example.sig", {"k": "v"})).encode()
    sbom = json.dumps(_referrer(subject, len(subject_payload), "application/vnd.example.sbom")).encode()
    for payload in (sig, sbom):
        r = put_manifest(client, "repo", sha256(payload), payload, OCI_MANIFEST)
        assert r.status_code == 201
        assert r.headers["OCI-Subject"] == subject
    # an image (not an artifact) whose subject is the same: its artifactType is its config's media type
    other, _ = push_image(
        client,
        "repo",
        "attached",
        seed="attached",
        subject={"mediaType": OCI_MANIFEST, "digest": subject, "size": len(subject_payload)},
    )
    r = client.get(f"/v2/repo/referrers/{subject}")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith(OCI_INDEX)
    index = r.json()
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == OCI_INDEX
    assert "OCI-Filters-Applied" not in r.headers
    by_digest = {d["digest"]: d for d in index["manifests"]}
    assert set(by_digest) == {sha256(sig), sha256(sbom), other}
    assert by_digest[sha256(sig)] == {
        "mediaType": OCI_MANIFEST,
        "digest": sha256(sig),
        "size": len(sig),
        "artifactType": "application/vnd.example.sig",
        "annotations": {"k": "v"},
    }
    assert by_digest[sha256(sbom)]["artifactType"] == "application/vnd.example.sbom"
    assert by_digest[sha256(sbom)]["size"] == len(sbom)
    assert "annotations" not in by_digest[sha256(sbom)]
    assert by_digest[other]["artifactType"] == "application/vnd.oci.image.config.v1+json"
    # filtering
    r = client.get(f"/v2/repo/referrers/{subject}", params={"artifactType": "application/vnd.example.sig"})
    assert r.status_code == 200
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    assert [d["digest"] for d in r.json()["manifests"]] == [sha256(sig)]
    r = client.get(f"/v2/repo/referrers/{subject}", params={"artifactType": "application/none"})
    assert r.json()["manifests"] == []
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    # deleting a referrer removes it from the list
    assert client.delete(f"/v2/repo/manifests/{sha256(sbom)}").status_code == 202
    r = client.get(f"/v2/repo/referrers/{subject}")
    assert {d["digest"] for d in r.json()["manifests"]} == {sha256(sig), other}


def test_referrers_of_unknown_subject(client):
    push_image(client, "repo", "v1")
    r = client.get(f"/v2/repo/referrers/{sha256(b'unknown')}")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith(OCI_INDEX)
    assert r.json() == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    assert_oci_error(client.get("/v2/repo/referrers/sha256:nothex"), 400, "DIGEST_INVALID")
    assert_oci_error(client.get("/v2/repo/referrers/latest"), (400, 404))


def test_referrers_are_per_repository(client):
    subject, subject_payload = push_image(client, "repo", "v1")
    push_image(client, "other", "v1")  # the same subject digest is not guaranteed; push the artifact there
    push_empty_config(client, "other")
    sig = json.dumps(_referrer(subject, len(subject_payload), "application/vnd.example.sig")).encode()
    assert put_manifest(client, "other", "sig", sig, OCI_MANIFEST).status_code == 201
    assert client.get(f"/v2/repo/referrers/{subject}").json()["manifests"] == []
    assert len(client.get(f"/v2/other/referrers/{subject}").json()["manifests"]) == 1


def test_referrers_of_a_missing_repository_is_an_empty_index(client):
    """The spec: the referrers API MUST NOT answer 404 — a missing repository has no referrers."""
    r = client.get(f"/v2/never/pushed/referrers/{sha256(b'x')}")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith(OCI_INDEX)
    assert r.json() == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    assert_oci_error(client.get("/v2/never/pushed/referrers/sha256:nothex"), 400, "DIGEST_INVALID")
