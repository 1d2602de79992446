"""Pushing through the domain (``Registry``) without HTTP: the one copy of the helpers tests share."""

from __future__ import annotations

import hashlib
import json
import random

from soko.registry.models import RepoRef


def push_blob(registry, ref: RepoRef, data: bytes, algorithm: str = "sha256") -> str:
    """Upload ``data`` in one chunk and complete it; returns its digest."""
    state = registry.uploads.start(ref)
    writer = registry.uploads.begin_chunk(ref, state.id, 0)
    writer.write(data)
    writer.finish()
    digest = f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
    return registry.uploads.complete(ref, state.id, digest).digest


def push_image(registry, ref: RepoRef, tag: str, layers: list[bytes]) -> str:
    """Push a (unique) config, the layers and an OCI image manifest tagged ``tag``; returns the manifest digest."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "n": random.random()}).encode()
    config_digest = push_blob(registry, ref, config)
    layer_descriptors = [
        {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": push_blob(registry, ref, layer),
         "size": len(layer)}
        for layer in layers
    ]
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                   "size": len(config)},
        "layers": layer_descriptors,
    }).encode()
    return registry.manifests.put(ref, tag, manifest, None).digest


def old_and_new_with_an_expiry_rule(registry, clock, ref: RepoRef, priority: int) -> str:
    """Push v1, then (a minute later) v2, and a lifecycle rule of ``priority`` that keeps one image: the next
    lifecycle run expires v1, whose digest this returns."""
    old = push_image(registry, ref, "v1", [b"old"])
    clock.now += 60
    push_image(registry, ref, "v2", [b"new"])
    rule = {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1}
    policy = {"rules": [{"rulePriority": priority, "selection": rule, "action": {"type": "expire"}}]}
    registry.lifecycle.put(ref, json.dumps(policy))
    return old


def stored_content(registry, path: str) -> bytes:
    """What storage holds at ``path`` (a blob, or an upload's data), decrypted as the registry decrypts it: a
    service-key object through an account's wrap of its key (``soko.registry.account_keys``)."""
    import sqlalchemy as sa

    from soko.meta.schema import repositories, uploads
    from soko.storage.paths import blob_digest, upload_id_of

    keys = registry.repositories.account_keys
    storage = registry.ctx.storage
    digest, upload = blob_digest(path), upload_id_of(path)
    if digest is not None and (object_key := keys.object_key(None, digest)) is not None:
        storage = keys.view(object_key)
    elif upload is not None:
        with registry.ctx.db.read() as conn:
            row = conn.execute(
                sa.select(uploads.c.wrapped_key, repositories.c.account_id)
                .join(repositories, repositories.c.id == uploads.c.repository_id)
                .where(uploads.c.id == upload, uploads.c.keyspace.is_(None))
            ).first()
        if row is not None and row.wrapped_key is not None:
            storage = keys.open_object(row.account_id, row.wrapped_key)
    return storage.get_content(path)
