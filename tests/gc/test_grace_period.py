"""The grace period holds on every path that can leave content unreferenced (both databases).

Each test pushes an image (through the domain, with the clock two days back, so its links and blobs are old),
deletes it through one path — the real clients for the wire APIs — and runs the collector: within the grace period
nothing of the image may go (a client that checked a blob and then pushes its manifest must succeed); once it has
passed, the content goes.
"""

from __future__ import annotations

import json
import time

import pytest

from soko.registry.lifecycle_runner import LifecycleRunner
from soko.registry.models import RepoRef
from tests.clock import Clock
from tests.domain import push_image
from tests.gc.test_collector import stored
from tests.oci.helpers import sha256

ACCOUNT = "000000000000"
DAY = 86400.0
GRACE = DAY


@pytest.fixture
def old_image(registry):
    """Push repository ``grace/app``'s ``v1`` (a unique layer) two days ago; returns (ref, digest, layer digest)."""
    ref = RepoRef(ACCOUNT, "grace/app")
    layer = f"layer {time.time_ns()}".encode()
    registry.ctx.clock = Clock(time.time() - 2 * DAY)
    digest = push_image(registry, ref, "v1", [layer])
    registry.ctx.clock = time.time  # the deletion happens now, through real clients that sign with real time
    return ref, digest, sha256(layer)


def collect(registry, after: float = 0.0):
    """Run the collector ``after`` seconds from now with the configured grace period."""
    registry.ctx.clock = Clock(time.time() + after)
    try:
        return registry.gc.run(grace_period=GRACE)
    finally:
        registry.ctx.clock = time.time


def assert_kept_then_collected(registry, ref: RepoRef, layer: str, payload: bytes | None) -> None:
    report = collect(registry)
    assert (report.links_deleted, report.blobs_deleted) == (0, 0), report.summary()
    assert stored(registry, layer)
    if payload is not None:  # the client that checked its blobs a moment ago pushes the manifest again: it works
        assert registry.blobs.stat(ref, layer).size > 0
        registry.manifests.put(ref, "again", payload, None)
        registry.manifests.delete(ref, "again", drop_untagged=True)
    report = collect(registry, after=GRACE + 60)
    assert report.blobs_deleted == 2 and layer in report.deleted_digests, report.summary()  # layer and config
    assert not stored(registry, layer)


def test_oci_delete_by_digest(registry, client, old_image) -> None:
    ref, digest, layer = old_image
    payload = registry.manifests.get(ref, digest).payload
    assert client.delete(f"/v2/{ref.name}/manifests/{digest}").status_code == 202
    assert_kept_then_collected(registry, ref, layer, payload)


def test_ecr_batch_delete_image_by_digest(registry, aws, old_image) -> None:
    ref, digest, layer = old_image
    payload = registry.manifests.get(ref, digest).payload
    result = aws("ecr").batch_delete_image(repositoryName=ref.name, imageIds=[{"imageDigest": digest}])
    assert result["failures"] == [] and result["imageIds"][0]["imageDigest"] == digest
    assert_kept_then_collected(registry, ref, layer, payload)


def test_ecr_batch_delete_image_of_the_last_tag(registry, aws, old_image) -> None:
    ref, digest, layer = old_image
    payload = registry.manifests.get(ref, digest).payload
    result = aws("ecr").batch_delete_image(repositoryName=ref.name, imageIds=[{"imageTag": "v1"}])
    assert result["failures"] == [] and result["imageIds"] == [{"imageDigest": digest, "imageTag": "v1"}]
    assert registry.images.describe_page(ref)[0] == []  # the image went with its last tag
    assert_kept_then_collected(registry, ref, layer, payload)


def test_lifecycle_expiry(registry, old_image) -> None:
    ref, digest, layer = old_image
    payload = registry.manifests.get(ref, digest).payload
    registry.lifecycle.put(
        ref,
        json.dumps(
            {
                "rules": [
                    {
                        "rulePriority": 1,
                        "selection": {"tagStatus": "any", "countType": "sinceImagePushed", "countUnit": "days",
                                      "countNumber": 1},
                        "action": {"type": "expire"},
                    }
                ]
            }
        ),
    )
    (run,) = LifecycleRunner(registry).run()
    assert [e["imageDigest"] for e in run.expired] == [digest]
    assert_kept_then_collected(registry, ref, layer, payload)


def test_repository_delete(registry, aws, old_image) -> None:
    ref, _digest, layer = old_image
    aws("ecr").delete_repository(repositoryName=ref.name, force=True)
    assert_kept_then_collected(registry, ref, layer, None)
