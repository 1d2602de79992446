"""Concurrent pushes: the same blob, the same tag, the same manifest, parallel chunked uploads."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import sqlalchemy as sa

from soko.meta.schema import blobs, manifests
from soko.registry.fsck import check
from tests.oci.helpers import (
    OCI_MANIFEST,
    image_manifest,
    push_blob,
    put_manifest,
    sha256,
    start_upload,
)

THREADS = 8


def _run(server, headers, fn):
    """Run fn(client, i) on THREADS threads released together; returns their results."""
    barrier = threading.Barrier(THREADS)

    def worker(i: int):
        with httpx.Client(base_url=server.url, timeout=60, headers=headers) as c:
            barrier.wait()
            return fn(c, i)

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(worker, range(THREADS)))


def _blob_rows(server, digest: str) -> int:
    with server.registry.ctx.db.read() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(blobs).where(blobs.c.digest == digest)).scalar()


def test_same_blob_pushed_concurrently(server, client, auth_header):
    data = b"shared layer " * 1000
    digest = sha256(data)

    def push(c: httpx.Client, i: int) -> int:
        if i % 2:
            return c.post("/v2/repo/blobs/uploads/", params={"digest": digest}, content=data).status_code
        location = start_upload(c, "repo")
        c.patch(location, content=data[:100], headers={"Content-Range": "0-99"})
        return c.put(location, params={"digest": digest}, content=data[100:]).status_code

    assert _run(server, auth_header, push) == [201] * THREADS
    assert client.get(f"/v2/repo/blobs/{digest}").content == data
    assert _blob_rows(server, digest) == 1
    assert list(check(server.registry.ctx)) == []


def test_same_blob_pushed_concurrently_to_new_repositories(server, client, auth_header):
    data = b"fresh repos"
    digest = sha256(data)
    statuses = _run(
        server,
        auth_header,
        lambda c, i: c.post(f"/v2/fresh{i % 2}/blobs/uploads/", params={"digest": digest}, content=data).status_code,
    )
    assert statuses == [201] * THREADS
    assert client.get("/v2/_catalog").json()["repositories"] == ["fresh0", "fresh1"]
    assert _blob_rows(server, digest) == 1
    assert list(check(server.registry.ctx)) == []


def test_different_manifests_to_the_same_tag(server, client, auth_header):
    config = b'{"os":"linux"}'
    push_blob(client, "repo", config)
    payloads = []
    for i in range(THREADS):
        layer = f"layer {i}".encode()
        push_blob(client, "repo", layer)
        payloads.append(json.dumps(image_manifest(config, [layer])).encode())

    def push(c: httpx.Client, i: int) -> int:
        return put_manifest(c, "repo", "latest", payloads[i], OCI_MANIFEST).status_code

    assert _run(server, auth_header, push) == [201] * THREADS
    r = client.get("/v2/repo/manifests/latest")
    assert r.status_code == 200
    assert r.content in payloads
    assert r.headers["Docker-Content-Digest"] == sha256(r.content)
    assert client.get("/v2/repo/tags/list").json()["tags"] == ["latest"]
    for payload in payloads:
        assert client.get(f"/v2/repo/manifests/{sha256(payload)}").content == payload
    assert list(check(server.registry.ctx)) == []


def test_same_manifest_pushed_concurrently(server, client, auth_header):
    config, layer = b'{"os":"linux","same":1}', b"the one layer"
    push_blob(client, "repo", config)
    push_blob(client, "repo", layer)
    payload = json.dumps(image_manifest(config, [layer])).encode()
    digest = sha256(payload)

    def push(c: httpx.Client, i: int) -> int:
        reference = digest if i % 3 == 0 else f"tag{i % 2}"
        return put_manifest(c, "repo", reference, payload, OCI_MANIFEST).status_code

    assert _run(server, auth_header, push) == [201] * THREADS
    with server.registry.ctx.db.read() as conn:
        count = conn.execute(
            sa.select(sa.func.count()).select_from(manifests).where(manifests.c.digest == digest)
        ).scalar()
    assert count == 1
    assert client.get("/v2/repo/tags/list").json()["tags"] == ["tag0", "tag1"]
    assert list(check(server.registry.ctx)) == []


def test_concurrent_chunked_uploads(server, client, auth_header):
    datas = [bytes([65 + i]) * (3000 + i) for i in range(THREADS)]

    def upload(c: httpx.Client, i: int) -> int:
        data = datas[i]
        location = start_upload(c, "repo")
        for start in range(0, len(data), 1000):
            chunk = data[start : start + 1000]
            r = c.patch(location, content=chunk, headers={"Content-Range": f"{start}-{start + len(chunk) - 1}"})
            assert r.status_code == 202, r.text
            location = r.headers["Location"]
        return c.put(location, params={"digest": sha256(data)}).status_code

    assert _run(server, auth_header, upload) == [201] * THREADS
    for data in datas:
        assert client.get(f"/v2/repo/blobs/{sha256(data)}").content == data
    assert list(check(server.registry.ctx)) == []


def test_concurrent_chunks_to_one_session(server, client, auth_header):
    """Racing PATCHes at the same offset: exactly one wins per offset, the rest get 416; never a 500."""
    location = start_upload(client, "repo")

    def patch(c: httpx.Client, i: int) -> int:
        body = bytes([97 + i]) * 10
        return c.patch(location, content=body, headers={"Content-Range": "0-9"}).status_code

    statuses = _run(server, auth_header, patch)
    assert all(s in (202, 416) for s in statuses), statuses
    assert statuses.count(202) >= 1
    status = client.get(location)
    assert status.headers["Range"] == "0-9"
    # whatever won is consistent: completing with its digest works
    r = client.put(location, params={"digest": sha256(b"x")})
    assert r.status_code == 400
    winners = [bytes([97 + i]) * 10 for i, s in enumerate(statuses) if s == 202]
    done = [client.put(location, params={"digest": sha256(w)}).status_code for w in winners]
    assert 201 in done, (statuses, done)


def test_streamed_chunked_patches_under_concurrent_load(server, client, auth_header):
    """Issue 9: a streamed (Transfer-Encoding: chunked) PATCH once ended with the connection closed and no response
    on a busy machine. Many streamed PATCHes on kept-alive connections, each body arriving in pauses, interleaved
    with pulls, status checks and refused chunks (responses sent before the body is read) on the same connections:
    every request gets its response, and every blob arrives whole."""
    import time

    digest, _ = push_image_for_load(client)
    rounds = 6

    def streamed(data: bytes):
        def body():
            for i in range(0, len(data), 4096):
                if i % (4 * 4096) == 0:
                    time.sleep(0.001)  # the body arrives in pieces, as from a client reading a file or a pipe
                yield data[i : i + 4096]

        return body()

    def work(c: httpx.Client, i: int) -> list[int]:
        statuses = []
        for n in range(rounds):
            data = bytes([65 + i]) * (50_000 + 1000 * n + i)
            location = start_upload(c, "repo")
            # a refused chunk first: its response comes before its (streamed) body is read
            r = c.patch(location, content=streamed(b"x" * 20_000), headers={"Content-Range": "5-20004"})
            statuses.append(r.status_code)
            r = c.patch(location, content=streamed(data))
            statuses.append(r.status_code)
            statuses.append(c.get(f"/v2/repo/manifests/{digest}").status_code)
            r = c.put(r.headers["Location"], params={"digest": sha256(data)})
            statuses.append(r.status_code)
            statuses.append(c.head(f"/v2/repo/blobs/{sha256(data)}").status_code)
        return statuses

    results = _run(server, auth_header, work)
    for statuses in results:
        assert statuses == [416, 202, 200, 201, 200] * rounds, statuses
    assert list(check(server.registry.ctx)) == []


def push_image_for_load(client: httpx.Client) -> tuple[str, bytes]:
    config, layer = b'{"architecture":"amd64","os":"linux"}', b"layer for the load test"
    push_blob(client, "repo", config)
    push_blob(client, "repo", layer)
    payload = json.dumps(image_manifest(config, [layer])).encode()
    assert put_manifest(client, "repo", "load", payload, OCI_MANIFEST).status_code == 201
    return sha256(payload), payload

