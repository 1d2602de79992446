"""Registry operations the bench times: blob pushes (monolithic, chunked), pulls, a small manifest."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from http1 import FileSlice, Response, location_target, request, with_query

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCTET = {"Content-Type": "application/octet-stream"}
MiB = 1 << 20


class OpError(RuntimeError):
    pass


@dataclass(frozen=True)
class Target:
    """Where to send requests: ``host`` is ``ip:port``; ``auth`` holds the Authorization header, if any."""

    host: str
    auth: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://{self.host}"


@dataclass(frozen=True)
class BlobFile:
    path: Path
    digest: str
    size: int


def make_blob_file(path: Path, base: bytes, label: str) -> BlobFile:
    """``base`` with a unique prefix: distinct content (and digest) per label, written through the page cache."""
    prefix = hashlib.sha256(label.encode()).digest()
    data = memoryview(base)
    digest = hashlib.sha256(prefix)
    digest.update(data[len(prefix):])
    with path.open("wb") as file:
        file.write(prefix)
        file.write(data[len(prefix):])
    return BlobFile(path, "sha256:" + digest.hexdigest(), len(base))


def _expect(response: Response, status: int, what: str) -> Response:
    if response.status != status:
        raise OpError(f"{what}: HTTP {response.status} (wanted {status}): {response.body[:500]!r}")
    return response


def start_upload(target: Target, repo: str) -> str:
    response = _expect(request(target.host, "POST", f"/v2/{repo}/blobs/uploads/", headers=target.auth),
                       202, "POST upload")
    return location_target(response.headers["location"])


def push_monolithic(target: Target, repo: str, blob: BlobFile) -> float:
    """POST a session, then PUT ?digest= with the whole blob (sendfile). Returns seconds."""
    started = time.perf_counter()
    location = start_upload(target, repo)
    response = request(target.host, "PUT", with_query(location, digest=blob.digest),
                       headers={**target.auth, **OCTET}, body=FileSlice(blob.path, 0, blob.size))
    _expect(response, 201, "PUT monolithic")
    return time.perf_counter() - started


def push_chunked(target: Target, repo: str, blob: BlobFile, chunk: int = 16 * MiB) -> float:
    """POST, PATCH ``chunk``-sized pieces with Content-Range, then PUT ?digest= with no body. Seconds."""
    started = time.perf_counter()
    location = start_upload(target, repo)
    for offset in range(0, blob.size, chunk):
        count = min(chunk, blob.size - offset)
        headers = {**target.auth, **OCTET, "Content-Range": f"{offset}-{offset + count - 1}"}
        response = request(target.host, "PATCH", location, headers=headers,
                           body=FileSlice(blob.path, offset, count))
        location = location_target(_expect(response, 202, "PATCH chunk").headers["location"])
    _expect(request(target.host, "PUT", with_query(location, digest=blob.digest), headers=target.auth),
            201, "PUT final")
    return time.perf_counter() - started


def pull_blob(target: Target, repo: str, blob: BlobFile) -> float:
    """GET the blob with curl into /dev/null; checks status and size. Returns seconds (curl's own timer)."""
    argv = ["curl", "-sS", "-L", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total}"]
    for key, value in target.auth.items():
        argv += ["-H", f"{key}: {value}"]
    argv.append(f"{target.url}/v2/{repo}/blobs/{blob.digest}")
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=300).stdout.split()
    if out[0] != "200" or int(out[1]) != blob.size:
        raise OpError(f"pull: HTTP {out[0]}, {out[1]} bytes (wanted {blob.size})")
    return float(out[2])


def push_small_blob(target: Target, repo: str, data: bytes) -> dict[str, object]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    location = start_upload(target, repo)
    _expect(request(target.host, "PUT", with_query(location, digest=digest), headers={**target.auth, **OCTET},
                    body=data), 201, "PUT small blob")
    return {"digest": digest, "size": len(data)}


def push_small_image(target: Target, repo: str, tag: str) -> str:
    """A ~600-byte OCI manifest (one config, one 4 KiB layer) under ``tag``; returns its digest."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
    config_desc = push_small_blob(target, repo, config.encode())
    layer_desc = push_small_blob(target, repo, os.urandom(4096))
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_desc},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer_desc}],
    }).encode()
    response = request(target.host, "PUT", f"/v2/{repo}/manifests/{tag}",
                       headers={**target.auth, "Content-Type": OCI_MANIFEST}, body=manifest)
    _expect(response, 201, "PUT manifest")
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


def generated_chunks(size: int, block: bytes) -> Iterator[bytes]:
    """``size`` bytes of distinct blocks, generated on the fly (no file): block i starts with i."""
    for index, offset in enumerate(range(0, size, len(block))):
        chunk = index.to_bytes(8, "big") + block[8:]
        yield chunk[: size - offset]


def digest_of_generated(size: int, block: bytes) -> str:
    digest = hashlib.sha256()
    for chunk in generated_chunks(size, block):
        digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def push_generated(target: Target, repo: str, size: int, block: bytes, digest: str) -> float:
    """A monolithic push of ``size`` generated bytes (for the big-upload memory test). Returns seconds."""
    started = time.perf_counter()
    location = start_upload(target, repo)
    response = request(target.host, "PUT", with_query(location, digest=digest),
                       headers={**target.auth, **OCTET}, body=generated_chunks(size, block), length=size)
    _expect(response, 201, "PUT generated")
    return time.perf_counter() - started
