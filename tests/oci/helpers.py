"""Shared helpers for the OCI Distribution protocol tests: digests, pushes, and the one error-body assertion."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from urllib.parse import urlsplit

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
EMPTY_DESCRIPTOR = {"mediaType": OCI_EMPTY, "digest": EMPTY_DIGEST, "size": 2}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha512(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


def assert_oci_error(response: httpx.Response, status: int | tuple[int, ...], code: str | None = None) -> dict:
    """The response has ``status`` (or one of them) and an OCI error body; ``code`` (if given) is among its codes."""
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, (response.status_code, response.text[:500])
    if response.request.method == "HEAD":
        assert response.content == b""
        return {}
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"errors"}, body
    errors = body["errors"]
    assert isinstance(errors, list) and errors, body
    for error in errors:
        assert isinstance(error, dict), body
        assert isinstance(error.get("code"), str) and error["code"], body
        assert isinstance(error.get("message"), str), body
        assert set(error) <= {"code", "message", "detail"}, body
    if code is not None:
        assert code in [e["code"] for e in errors], body
    return body


def descriptor(data: bytes, media_type: str, **extra) -> dict:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data), **extra}


def push_blob(client: httpx.Client, name: str, data: bytes, digest: str | None = None) -> str:
    """Monolithic POST ?digest=; returns the digest."""
    digest = digest or sha256(data)
    r = client.post(f"/v2/{name}/blobs/uploads/", params={"digest": digest}, content=data)
    assert r.status_code == 201, (r.status_code, r.text)
    assert r.headers["Docker-Content-Digest"] == digest
    return digest


def start_upload(client: httpx.Client, name: str) -> str:
    """POST an upload session; returns its Location (a path)."""
    r = client.post(f"/v2/{name}/blobs/uploads/")
    assert r.status_code == 202, (r.status_code, r.text)
    return r.headers["Location"]


def put_manifest(
    client: httpx.Client, name: str, reference: str, payload: bytes | dict, media_type: str | None = None
) -> httpx.Response:
    if isinstance(payload, dict):
        media_type = media_type or payload.get("mediaType") or OCI_MANIFEST
        payload = json.dumps(payload).encode()
    headers = {"Content-Type": media_type} if media_type else {}
    return client.put(f"/v2/{name}/manifests/{reference}", content=payload, headers=headers)


def image_manifest(
    config: bytes, layers: list[bytes], *, media_type: str = OCI_MANIFEST, config_type: str | None = None, **extra
) -> dict:
    docker = media_type == DOCKER_MANIFEST
    config_type = config_type or (DOCKER_CONFIG if docker else OCI_CONFIG)
    layer_type = DOCKER_LAYER if docker else OCI_LAYER
    return {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor(config, config_type),
        "layers": [descriptor(layer, layer_type) for layer in layers],
        **extra,
    }


def push_image(
    client: httpx.Client,
    name: str,
    tag: str | None = "latest",
    *,
    seed: str = "x",
    layers: int = 1,
    media_type: str = OCI_MANIFEST,
    **extra,
) -> tuple[str, bytes]:
    """Push a config and ``layers`` small layers (distinct per ``seed``) and a manifest; returns (digest, bytes)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    layer_data = [f"layer {i} of {seed}".encode() for i in range(layers)]
    for blob in [config, *layer_data]:
        push_blob(client, name, blob)
    manifest = image_manifest(config, layer_data, media_type=media_type, **extra)
    payload = json.dumps(manifest, indent=1).encode()
    digest = sha256(payload)
    r = put_manifest(client, name, tag or digest, payload, media_type)
    assert r.status_code == 201, (r.status_code, r.text)
    assert r.headers["Docker-Content-Digest"] == digest
    return digest, payload


def push_empty_config(client: httpx.Client, name: str) -> None:
    assert push_blob(client, name, b"{}") == EMPTY_DIGEST


def raw_request(
    base_url: str,
    request: bytes,
    *,
    read_timeout: float = 10.0,
    close_after_send: bool = False,
    half_close: bool = False,
) -> bytes:
    """Send raw bytes over a fresh TCP connection; returns whatever comes back before the server closes/times out.
    ``half_close`` ends the sending side after the bytes (the server sees the body cut off) and still reads the
    answer, so the caller knows the server has finished with the request."""
    parts = urlsplit(base_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=read_timeout) as sock:
        sock.sendall(request)
        if close_after_send:
            return b""
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        deadline = time.monotonic() + read_timeout
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not data:
                break
            chunks.append(data)
            if _complete(b"".join(chunks)):
                break
        return b"".join(chunks)


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def raw_status(response: bytes) -> int:
    line = response.split(b"\r\n", 1)[0].split()
    assert len(line) >= 2, response[:200]
    return int(line[1])
