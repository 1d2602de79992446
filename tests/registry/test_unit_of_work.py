"""The unit of work (both databases): every domain write leaves exactly its events in the outbox, with its link
reviews, audit rows and cache bump; a write that fails leaves none of them."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from soko.errors import ManifestBlobUnknown, RepositoryNotEmpty, TagImmutable
from soko.kernel.events import image_action
from soko.meta.schema import audit_events, event_outbox, gc_link_reviews
from soko.registry.lifecycle_runner import LifecycleRunner
from soko.registry.models import RepoRef
from tests.clock import Clock
from tests.domain import old_and_new_with_an_expiry_rule, push_blob, push_image
from tests.oci.helpers import push_image as push_image_over_http

ACCOUNT = "000000000000"


class Outbox:
    """Reads the events written since the last read, as (detail-type, action-type, tag) plus whole envelopes."""

    def __init__(self, registry) -> None:
        self.registry = registry
        self.last_id = 0

    def envelopes(self) -> list[dict]:
        with self.registry.ctx.db.read() as conn:
            rows = conn.execute(
                sa.select(event_outbox.c.id, event_outbox.c.body)
                .where(event_outbox.c.id > self.last_id)
                .order_by(event_outbox.c.id)
            ).all()
        if rows:
            self.last_id = rows[-1].id
        return [json.loads(row.body) for row in rows]

    def new(self) -> list[tuple]:
        """(detail-type, action-type, image-tag, image-digest) of each new event (expiries: their digest and tags)."""
        result = []
        for e in self.envelopes():
            d = e["detail"]
            if "action-type" in d:
                result.append((e["detail-type"], d["action-type"], d.get("image-tag"), d.get("image-digest")))
            else:
                result.append((e["detail-type"], d["image-digest"], d["image-tags"]))
        return result


def reviews(registry) -> int:
    with registry.ctx.db.read() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(gc_link_reviews)).scalar_one()


def test_pushes_deletes_and_repositories_over_the_wire_leave_their_events(registry, client, aws) -> None:
    outbox = Outbox(registry)
    ecr = aws("ecr")
    ecr.create_repository(repositoryName="events/app")
    (envelope,) = outbox.envelopes()
    assert envelope["source"] == "soko.registry" and envelope["detail-type"] == "Soko Repository Action"
    assert envelope["detail"] == {"result": "SUCCESS", "repository-name": "events/app", "action-type": "CREATE"}
    assert envelope["resources"] == [f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/events/app"]
    assert envelope["account"] == ACCOUNT and envelope["region"] == "us-east-1" and envelope["version"] == "0"
    assert len(envelope["time"]) == 20 and envelope["time"].endswith("Z")

    digest, payload = push_image_over_http(client, "events/app", "v1")
    (push,) = outbox.envelopes()
    assert (push["source"], push["detail-type"], push["resources"]) == ("aws.ecr", "ECR Image Action", [])
    assert push["detail"] == {
        "result": "SUCCESS",
        "repository-name": "events/app",
        "image-digest": digest,
        "action-type": "PUSH",
        "image-tag": "v1",
        "manifest-media-type": "application/vnd.oci.image.manifest.v1+json",
        "artifact-media-type": "application/vnd.oci.image.config.v1+json",
    }

    # The same manifest again under the same tag changes nothing: no event. Under a new tag: a PUSH of that tag.
    headers = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    assert client.put("/v2/events/app/manifests/v1", content=payload, headers=headers).status_code == 201
    assert outbox.new() == []
    assert client.put("/v2/events/app/manifests/v2", content=payload, headers=headers).status_code == 201
    assert outbox.new() == [("ECR Image Action", "PUSH", "v2", digest)]

    assert client.delete("/v2/events/app/manifests/v2").status_code == 202  # OCI: the tag only
    assert outbox.new() == [("ECR Image Action", "DELETE", "v2", digest)]
    result = ecr.batch_delete_image(repositoryName="events/app", imageIds=[{"imageTag": "v1"}])  # its last tag
    assert result["failures"] == []
    assert outbox.new() == [("ECR Image Action", "DELETE", "v1", digest)]

    push_image_over_http(client, "events/other", "latest", seed="y")  # created on push: CREATE, then PUSH
    assert [e[:2] for e in outbox.new()] == [("Soko Repository Action", "CREATE"), ("ECR Image Action", "PUSH")]
    ecr.delete_repository(repositoryName="events/other", force=True)
    assert outbox.new() == [("Soko Repository Action", "DELETE", None, None)]


def test_deleting_an_image_by_digest_leaves_a_delete_per_tag(registry) -> None:
    outbox = Outbox(registry)
    ref = RepoRef(ACCOUNT, "events/tags")
    digest = push_image(registry, ref, "a", [b"layer"])
    registry.manifests.put(ref, "b", registry.manifests.get(ref, digest).payload, None)
    untagged = push_image(registry, ref, "c", [b"other layer"])
    registry.manifests.delete(ref, "c")  # OCI tag delete: the image stays, untagged
    outbox.new()
    registry.manifests.delete(ref, digest)
    assert outbox.new() == [("ECR Image Action", "DELETE", "a", digest), ("ECR Image Action", "DELETE", "b", digest)]
    registry.manifests.delete(ref, untagged)
    assert outbox.new() == [("ECR Image Action", "DELETE", None, untagged)]


def test_a_lifecycle_expiry_leaves_its_delete_its_expiry_event_and_its_audit_record(registry) -> None:
    registry.ctx.clock = clock = Clock(1_800_000_000.0)
    ref = RepoRef(ACCOUNT, "events/life")
    old = old_and_new_with_an_expiry_rule(registry, clock, ref, 7)
    outbox = Outbox(registry)
    outbox.envelopes()
    (run,) = LifecycleRunner(registry).run()
    assert [e["imageDigest"] for e in run.expired] == [old]
    delete, expiry = outbox.envelopes()
    assert (delete["detail-type"], delete["detail"]["action-type"], delete["detail"]["image-tag"]) == (
        "ECR Image Action",
        "DELETE",
        "v1",
    )
    assert (expiry["source"], expiry["detail-type"]) == ("soko.registry", "Soko Lifecycle Expiry")
    assert expiry["detail"] == {
        "result": "SUCCESS",
        "repository-name": "events/life",
        "image-digest": old,
        "image-tags": ["v1"],
        "rule-priority": 7,
    }
    with registry.ctx.db.read() as conn:
        (audit,) = conn.execute(sa.select(audit_events).where(audit_events.c.event == "lifecycle")).all()
    assert audit.resource.endswith(f"repository/events/life@{old}") and "expired by rule 7" in audit.reason


def test_writes_that_fail_leave_no_events_reviews_audit_or_cache_bump(registry) -> None:
    outbox = Outbox(registry)
    ref = RepoRef(ACCOUNT, "events/fail")
    registry.repositories.create(ref, tag_mutability="IMMUTABLE")
    digest = push_image(registry, ref, "v1", [b"layer"])

    other = push_image(registry, RepoRef(ACCOUNT, "events/elsewhere"), "x", [b"x"])
    payload = registry.manifests.get(RepoRef(ACCOUNT, "events/elsewhere"), other).payload
    outbox.new()
    before = (reviews(registry), registry.ctx.generation.current())
    with pytest.raises(ManifestBlobUnknown):  # its blobs are not in this repository
        registry.manifests.put(ref, "v2", payload, None)
    with pytest.raises(TagImmutable):  # fails after inserting the new manifest: all of it rolls back
        registry.manifests.put(ref, "v1", registry.manifests.get(ref, digest).payload.replace(b"{", b"{ ", 1), None)
    with pytest.raises(RepositoryNotEmpty):
        registry.repositories.delete(ref)
    with pytest.raises(RuntimeError), registry.ctx.transaction(invalidates=True) as tx:
        tx.emit(image_action(ACCOUNT, ref.name, "PUSH", digest))
        tx.review_links(1, [digest], "upload")
        tx.audit("lifecycle", "soko:test", "ecr:Test", "r", "never committed")
        raise RuntimeError("the write fails after declaring its effects")
    assert outbox.new() == []
    assert (reviews(registry), registry.ctx.generation.current()) == before
    with registry.ctx.db.read() as conn:
        assert conn.execute(sa.select(audit_events.c.id).where(audit_events.c.principal == "soko:test")).all() == []
    assert registry.manifests.list_tags(ref) == ["v1"]

    with registry.ctx.transaction() as tx:  # the same, committed: exactly its effects
        tx.emit(image_action(ACCOUNT, ref.name, "PUSH", digest))
        tx.review_links(1, [digest], "upload")
    assert outbox.new() == [("ECR Image Action", "PUSH", None, digest)]
    assert reviews(registry) == before[0] + 1


def test_an_upload_and_a_mount_queue_their_reviews_in_their_own_transaction(registry) -> None:
    ref, other = RepoRef(ACCOUNT, "events/up"), RepoRef(ACCOUNT, "events/mount")
    before = reviews(registry)
    digest = push_blob(registry, ref, b"a blob")
    assert reviews(registry) == before + 1
    assert registry.blobs.mount(other, digest, ref) is not None
    assert reviews(registry) == before + 2
    assert Outbox(registry).new() == [("Soko Repository Action", "CREATE", None, None)] * 2  # blobs: no event
