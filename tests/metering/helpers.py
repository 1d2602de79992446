"""Pushing images through the domain with sizes the tests control."""

from __future__ import annotations

import json

from soko.registry.models import RepoRef
from tests.domain import push_blob
from tests.oci.helpers import image_manifest


def push_image(registry, ref: RepoRef, tag: str, config: bytes, layers: list[bytes]) -> tuple[str, bytes]:
    """Push config + layers + an OCI image manifest; returns (manifest digest, manifest payload)."""
    push_blob(registry, ref, config)
    for layer in layers:
        push_blob(registry, ref, layer)
    manifest = json.dumps(image_manifest(config, layers)).encode()
    return registry.manifests.put(ref, tag, manifest, None).digest, manifest


def config_blob(n: int) -> bytes:
    return json.dumps({"architecture": "amd64", "os": "linux", "n": n}).encode()
