"""Replication within one deployment (cross-account, same region) through the real job runner, on SQLite and
PostgreSQL: push events → outbox reader → one leased job per image and destination → the copy."""

from __future__ import annotations

import json
import threading
from concurrent.futures import wait

import pytest
import sqlalchemy as sa

from soko.errors import SokoError
from soko.jobs import JobRunner, registry_jobs
from soko.jobs.runner import JobKind
from soko.meta.schema import event_outbox, jobs
from soko.registry.models import RepoRef
from soko.replication import KIND, MAX_ATTEMPTS, Replicator
from tests.clock import Clock
from tests.domain import push_blob, push_image

SRC, DST, OTHER = "111111111111", "222222222222", "333333333333"
REGION = "us-east-1"


def grant(source: str, actions=("ecr:ReplicateImage", "ecr:CreateRepository")) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "replication",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{source}:root"},
                    "Action": list(actions),
                    "Resource": f"arn:aws:ecr:{REGION}:{DST}:repository/*",
                }
            ],
        }
    )


def configure(registry, *destinations: str, filters: list[str] | None = None, account: str = SRC) -> None:
    rule: dict = {"destinations": [{"region": REGION, "registryId": d} for d in destinations]}
    if filters:
        rule["repositoryFilters"] = [{"filter": f, "filterType": "PREFIX_MATCH"} for f in filters]
    registry.replication.put(account, [rule])


@pytest.fixture
def runner(registry):
    clock = Clock(2_000_000_000.0)  # ahead of the wall clock the domain queues jobs with: they are due at once
    kinds = [k for k in registry_jobs(registry) if k.name in ("replication_outbox", KIND)]
    runner = JobRunner(registry.ctx, kinds, owner="node-a", clock=clock)
    runner.clock_ = clock  # type: ignore[attr-defined]
    runner.schedule()
    yield runner
    runner.stop()


def drain(runner: JobRunner, rounds: int = 10) -> None:
    """Run due jobs until none is left due (the outbox reader is periodic: moved past its interval each round)."""
    for _ in range(rounds):
        runner.clock_.now += 1.0  # type: ignore[attr-defined]
        futures = runner.run_due()
        wait(futures)
        for f in futures:
            f.result()


def status(registry, ref: RepoRef, digest: str) -> list[tuple[str, str, str | None]]:
    return [(r.destination.registry_id, r.status, r.failure_code) for r in Replicator(registry).statuses(ref, digest)]


def push_signature(registry, ref: RepoRef, subject: str) -> str:
    blob = push_blob(registry, ref, b"a signature")
    empty = push_blob(registry, ref, b"{}")
    doc = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.dev.cosign.simplesigning.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": blob, "size": 11}],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject, "size": 1},
    }
    return registry.manifests.put(
        ref, doc["config"]["digest"] and _digest_of(doc), json.dumps(doc).encode(), None
    ).digest


def _digest_of(doc: dict) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(json.dumps(doc).encode()).hexdigest()


def test_cross_account_needs_the_destination_registry_policy(registry, runner) -> None:
    src = RepoRef(SRC, "prod/app")
    configure(registry, DST, filters=["prod/"])
    digest = push_image(registry, src, "v1", [b"layer one", b"layer two"])
    drain(runner)
    [(dest, state, code)] = status(registry, src, digest)
    assert (dest, state) == (DST, "FAILED") and code.startswith("REPLICATION_NOT_AUTHORIZED")
    with pytest.raises(SokoError):
        registry.manifests.get(RepoRef(DST, "prod/app"), digest)

    # ReplicateImage alone is not enough while the repository must be created
    registry.policies.put_registry_policy(DST, grant(SRC, ["ecr:ReplicateImage"]), "V2")
    push_image(registry, src, "v2", [b"layer three"])
    drain(runner)
    assert (
        "CreateRepository"
        in Replicator(registry).statuses(src, registry.manifests.get(src, "v2").digest)[0].failure_code
    )

    registry.policies.put_registry_policy(DST, grant(SRC), "V2")
    digest3 = push_image(registry, src, "v3", [b"layer one", b"layer four"])
    drain(runner)
    assert status(registry, src, digest3) == [(DST, "COMPLETE", None)]
    dst = RepoRef(DST, "prod/app")
    record = registry.manifests.get(dst, "v3")
    assert record.digest == digest3 and record.payload == registry.manifests.get(src, digest3).payload
    # blobs readable in the destination, byte for byte
    for layer in (b"layer one", b"layer four"):
        d = _blob_digest(layer)
        with registry.blobs.reader(registry.blobs.open(dst, d)) as f:
            assert f.read() == layer
    # not replicated: a repository the filter does not take
    other = RepoRef(SRC, "dev/app")
    other_digest = push_image(registry, other, "v1", [b"dev layer"])
    drain(runner)
    assert status(registry, other, other_digest) == []


def _blob_digest(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_referrers_travel_with_their_image_and_nothing_chains(registry, runner) -> None:
    registry.policies.put_registry_policy(DST, grant(SRC), "V2")
    configure(registry, DST)
    configure(registry, OTHER, account=DST)  # the destination replicates its own pushes on: not replicated copies
    src = RepoRef(SRC, "app")
    digest = push_image(registry, src, "latest", [b"base layer"])
    signature = push_signature(registry, src, digest)
    drain(runner)
    dst = RepoRef(DST, "app")
    assert registry.manifests.get(dst, "latest").digest == digest
    assert [r["digest"] for r in registry.manifests.referrers(dst, digest)] == [signature]
    assert status(registry, src, digest) == [(DST, "COMPLETE", None)]
    # the destination announces the copies as ECR Replication Actions, never as pushes; nothing reached OTHER
    with registry.ctx.db.read() as conn:
        events = [
            json.loads(b)
            for b in conn.execute(sa.select(event_outbox.c.body).where(event_outbox.c.account_id == DST)).scalars()
        ]
    kinds = {e["detail-type"] for e in events if e["source"] == "aws.ecr"}
    assert kinds == {"ECR Replication Action"}
    tagged = [e["detail"] for e in events if e["detail"].get("image-tag") == "latest"]
    assert tagged[0]["source-account"] == SRC and tagged[0]["action-type"] == "REPLICATE"
    with registry.ctx.db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(jobs).where(jobs.c.kind == KIND)).scalar() == 0
    assert registry.repositories.list_names(OTHER) == []


def test_an_immutable_tag_at_the_destination_is_left_as_it_was(registry, runner) -> None:
    registry.policies.put_registry_policy(DST, grant(SRC), "V2")
    dst = RepoRef(DST, "app")
    registry.repositories.create(dst, tag_mutability="IMMUTABLE")
    theirs = push_image(registry, dst, "v1", [b"their layer"])
    configure(registry, DST)
    src = RepoRef(SRC, "app")
    ours = push_image(registry, src, "v1", [b"our layer"])
    drain(runner)
    assert status(registry, src, ours) == [(DST, "COMPLETE", None)]
    assert registry.manifests.get(dst, "v1").digest == theirs
    assert registry.manifests.get(dst, ours).digest == ours  # arrived untagged, as ECR does


def test_a_replication_template_sets_up_the_destination_repository(registry, runner) -> None:
    from soko.registry.templates import Template

    registry.policies.put_registry_policy(DST, grant(SRC), "V2")
    registry.templates.create(
        Template(
            account_id=DST,
            prefix="team",
            description="",
            applied_for=["REPLICATION"],
            tag_mutability="IMMUTABLE",
            tag_mutability_filters=[],
            resource_tags=[{"Key": "origin", "Value": "replica"}],
            encryption={"encryptionType": "AES256"},
            repository_policy="",
            lifecycle_policy="",
            custom_role_arn="",
            created_at=0.0,
            updated_at=0.0,
        )
    )
    configure(registry, DST)
    push_image(registry, RepoRef(SRC, "team/api"), "v1", [b"api layer"])
    drain(runner)
    repo = registry.repositories.get(RepoRef(DST, "team/api"))
    assert repo.tag_mutability == "IMMUTABLE"
    assert registry.repositories.resource_tags(RepoRef(DST, "team/api")) == [{"Key": "origin", "Value": "replica"}]


def test_a_kms_replication_template_encrypts_the_destination_with_its_key(registry, runner) -> None:
    """A REPLICATION template with a KMS key: the destination repository is created bound to the key, and the
    replicated layer is re-encrypted under it (a copy in the key's keyspace), readable through the destination."""
    from soko.access import Principal
    from soko.iam.service import Identity
    from soko.kms.service import KeyService
    from soko.meta.schema import blob_copies
    from soko.registry.templates import Template

    kms = KeyService(registry.ctx, Identity(registry.ctx))
    registry.encryption.attach(kms)
    key = kms.create_key(Principal(f"arn:aws:iam::{DST}:root", DST, "Account"), "replicas")
    registry.policies.put_registry_policy(DST, grant(SRC), "V2")
    template = Template(DST, "team", ["REPLICATION"], encryption={"encryptionType": "KMS", "kmsKey": key.arn})
    registry.templates.create(template)
    configure(registry, DST)
    digest = push_image(registry, RepoRef(SRC, "team/api"), "v1", [b"kms layer"])
    drain(runner)
    dst = RepoRef(DST, "team/api")
    repo = registry.repositories.get(dst)
    assert (repo.encryption_type, repo.kms_key) == ("KMS", key.arn)
    assert registry.manifests.get(dst, "v1").digest == digest
    layer = json.loads(registry.manifests.get(dst, "v1").payload)["layers"][0]["digest"]
    with registry.ctx.db.read() as conn:
        spaces = set(conn.execute(sa.select(blob_copies.c.keyspace).where(blob_copies.c.digest == layer)).scalars())
    assert spaces == {f"kms/{key.key_id}"}
    with registry.blobs.reader(registry.blobs.open(dst, layer)) as f:
        assert f.read() == b"kms layer"


def test_backfill_copies_existing_images_once(registry, runner) -> None:
    registry.policies.put_registry_policy(DST, grant(SRC), "V2")
    src = RepoRef(SRC, "old")
    digests = [push_image(registry, src, f"v{i}", [f"layer {i}".encode(), b"shared"]) for i in range(50)]
    configure(registry, DST)
    drain(runner)
    assert all(status(registry, src, d) == [] for d in digests)  # pushed before the rule: not replicated
    replicator = Replicator(registry)
    assert replicator.backfill(SRC, "old") == (50, 50)
    assert replicator.backfill(SRC) == (50, 50)  # not run yet: requested again, still one job each
    drain(runner, rounds=20)
    assert all(status(registry, src, d) == [(DST, "COMPLETE", None)] for d in digests)
    assert sorted(registry.manifests.list_tags(RepoRef(DST, "old"))) == sorted(f"v{i}" for i in range(50))
    assert replicator.backfill(SRC) == (50, 0)  # idempotent: everything is COMPLETE


def test_retries_back_off_then_fail_and_a_new_request_succeeds(registry, runner) -> None:
    """A transient failure (the source blob is gone from storage) is retried with exponential backoff; after
    MAX_ATTEMPTS it is FAILED; once the cause is gone a new request completes."""
    registry.policies.put_registry_policy(DST, grant(SRC), "V2")
    configure(registry, DST)
    src = RepoRef(SRC, "flaky")
    digest = push_image(registry, src, "v1", [b"flaky layer"])
    layer = _blob_digest(b"flaky layer")
    # the source's link to the layer goes missing from under the image (what a racing collector would leave)
    from soko.meta.schema import repository_blobs

    with registry.ctx.db.write() as conn:
        conn.execute(sa.delete(repository_blobs).where(repository_blobs.c.digest == layer))
    clock = runner.clock_  # type: ignore[attr-defined]
    drain(runner, rounds=2)
    [req] = Replicator(registry).statuses(src, digest)
    assert req.status == "IN_PROGRESS" and "BlobUnknown" in (req.failure_code or "")
    delays = []
    for _ in range(MAX_ATTEMPTS - 1):
        with registry.ctx.db.read() as conn:
            next_run = conn.execute(sa.select(jobs.c.next_run).where(jobs.c.kind == KIND)).scalar_one()
        delays.append(next_run - clock.now)
        clock.now = next_run
        wait(runner.run_due())
    assert delays[3] > delays[0] * 2  # exponential
    assert max(delays) <= 600.0  # capped
    [req] = Replicator(registry).statuses(src, digest)
    assert req.status == "FAILED" and req.failure_code.startswith("RETRIES_EXHAUSTED")
    push_blob(registry, src, b"flaky layer")
    assert Replicator(registry).backfill(SRC, "flaky") == (1, 1)
    drain(runner)
    assert status(registry, src, digest) == [(DST, "COMPLETE", None)]


def test_a_node_killed_mid_replication_is_taken_over(registry, runner) -> None:
    registry.policies.put_registry_policy(DST, grant(SRC), "V2")
    configure(registry, DST)
    src = RepoRef(SRC, "app")
    digest = push_image(registry, src, "v1", [b"a layer"])
    clock = runner.clock_  # type: ignore[attr-defined]
    stuck, release = threading.Event(), threading.Event()

    def dies_mid_copy(_key: str) -> None:
        stuck.set()
        assert release.wait(30)

    (kind,) = [k for k in runner.kinds.values() if k.name == KIND]
    (reader,) = [k for k in runner.kinds.values() if k.name == "replication_outbox"]
    dead = JobRunner(
        registry.ctx,
        [reader, JobKind(KIND, dies_mid_copy, kind.interval, lease=kind.lease, keys=())],
        owner="dead",
        clock=clock,
    )
    dead.schedule()
    clock.now += 2
    wait(dead.run_due())  # reads the outbox
    held = dead.run_due()
    assert len(held) == 1 and stuck.wait(30)
    assert status(registry, src, digest) == [(DST, "IN_PROGRESS", None)]
    assert runner.run_due() == []  # the lease holds
    clock.now += kind.lease + 1
    drain(runner)
    assert status(registry, src, digest) == [(DST, "COMPLETE", None)]
    release.set()
    wait(held)
    dead.stop()
    assert status(registry, src, digest) == [(DST, "COMPLETE", None)]
