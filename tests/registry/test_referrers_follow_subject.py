"""An image's referrers (signatures, SBOMs, attestations — manifests whose ``subject`` is it) are deleted with it, as
ECR deletes them (AWS's user guide, image-signing: signatures are removed within 24 hours of their subject; lifecycle
policies: referrers follow their subject). Soko does it in the deleting transaction, by every delete path
(BatchDeleteImage, the /v2/ DELETE, a lifecycle expiry), referrers of referrers too, each with its DELETE events."""

from __future__ import annotations

import inspect
import json
import sys

import pytest
import sqlalchemy as sa

from soko.digest import compute
from soko.errors import ManifestUnknown
from soko.meta.schema import event_outbox
from soko.registry.lifecycle_runner import LifecycleRunner
from soko.registry.models import RepoRef
from tests.clock import Clock
from tests.domain import push_blob, push_image

ACCOUNT = "000000000000"
REF = RepoRef(ACCOUNT, "team/app")


def push_referrer(registry, subject: str, artifact_type: str, tag: str | None = None) -> str:
    """An OCI artifact manifest whose subject is ``subject`` (untagged unless ``tag``); returns its digest."""
    empty = push_blob(registry, REF, b"{}")
    layer = json.dumps({"for": subject, "type": artifact_type}).encode()
    subject_record = registry.manifests.get(REF, subject)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "artifactType": artifact_type,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/json", "digest": push_blob(registry, REF, layer), "size": len(layer)}],
        "subject": {"mediaType": subject_record.media_type, "digest": subject, "size": len(subject_record.payload)},
    }).encode()
    return registry.manifests.put(REF, tag or compute(manifest), manifest, None).digest


def referrer_deletes(registry) -> list[tuple[str, str | None]]:
    with registry.ctx.db.read() as conn:
        bodies = [json.loads(b) for b in conn.execute(sa.select(event_outbox.c.body).order_by(event_outbox.c.id))
                  .scalars()]
    return sorted((b["detail"]["image-digest"], b["detail"].get("image-tag")) for b in bodies
                  if b["detail-type"] == "ECR Referrer Action" and b["detail"]["action-type"] == "DELETE")


@pytest.mark.parametrize("path", ["batch_delete_image", "v2_delete", "lifecycle_expiry"])
def test_deleting_an_image_deletes_its_referrers(registry, path: str) -> None:
    clock = Clock(1_800_000_000.0)
    registry.ctx.clock = clock
    image = push_image(registry, REF, "v1", [b"the image"])
    clock.now += 60
    signature = push_referrer(registry, image, "application/vnd.cncf.notary.signature")
    sbom = push_referrer(registry, image, "application/spdx+json", tag="sbom")
    sbom_signature = push_referrer(registry, sbom, "application/vnd.cncf.notary.signature")
    clock.now += 60
    kept = push_image(registry, REF, "v2", [b"another image"])
    kept_signature = push_referrer(registry, kept, "application/vnd.cncf.notary.signature")

    if path == "batch_delete_image":
        registry.manifests.delete(REF, "v1", drop_untagged=True)
    elif path == "v2_delete":
        registry.manifests.delete(REF, image)
    else:
        rule = {"tagStatus": "tagged", "tagPrefixList": ["v"], "countType": "imageCountMoreThan", "countNumber": 1}
        registry.lifecycle.put(REF, json.dumps({"rules": [
            {"rulePriority": 1, "selection": rule, "action": {"type": "expire"}}]}))
        (run,) = LifecycleRunner(registry).run()
        assert sorted(e["imageDigest"] for e in run.expired) == sorted([image, signature, sbom, sbom_signature])
        assert run.skipped == []

    for gone in (image, signature, sbom, sbom_signature):
        with pytest.raises(ManifestUnknown):
            registry.manifests.get(REF, gone)
    assert registry.manifests.referrers(REF, image) == [] and registry.manifests.referrers(REF, sbom) == []
    assert [r["digest"] for r in registry.manifests.referrers(REF, kept)] == [kept_signature]
    assert registry.manifests.list_tags(REF) == ["v2"]
    # one DELETE per tag (or one untagged) of each referrer, as "ECR Referrer Action"
    assert referrer_deletes(registry) == sorted([(signature, None), (sbom, "sbom"), (sbom_signature, None)])


def test_a_long_chain_of_referrers_goes_without_recursion(registry) -> None:
    # A pusher can chain referrers (a signature of a signature of …) as deep as it likes: deleting the subject walks
    # the chain with a work list, so its depth never reaches Python's recursion limit (the limit is lowered here so
    # that a walk adding stack frames per level fails with a short chain, as it would with a long one at the default).
    image = push_image(registry, REF, "v1", [b"the image"])
    chain = [image]
    for _ in range(80):
        chain.append(push_referrer(registry, chain[-1], "application/vnd.cncf.notary.signature"))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack(0)) + 150)  # 80 levels of two frames each would not fit
    try:
        registry.images.batch_delete(REF, [{"imageDigest": image}])
    finally:
        sys.setrecursionlimit(limit)
    for digest in chain:
        with pytest.raises(ManifestUnknown):
            registry.manifests.get(REF, digest)
    assert len(referrer_deletes(registry)) == 80
