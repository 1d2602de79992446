"""Applying lifecycle policies to real repositories (both databases): expiry, dry run, audit, index children."""

from __future__ import annotations

import json

import pytest

from soko.audit import AuditLog, AuditQuery
from soko.cli import main
from soko.errors import ManifestUnknown
from soko.registry.lifecycle_runner import LifecycleRunner
from soko.registry.models import RepoRef
from tests.clock import Clock
from tests.domain import push_blob, push_image

ACCOUNT = "000000000000"
KEEP_TWO = json.dumps(
    {
        "rules": [
            {
                "rulePriority": 1,
                "description": "keep the two newest v* images",
                "selection": {
                    "tagStatus": "tagged",
                    "tagPrefixList": ["v"],
                    "countType": "imageCountMoreThan",
                    "countNumber": 2,
                },
                "action": {"type": "expire"},
            }
        ]
    }
)


@pytest.fixture
def clock(registry) -> Clock:
    clock = Clock(1_800_000_000.0)
    registry.ctx.clock = clock
    return clock


def test_keep_last_two_expires_the_rest_with_all_their_tags(registry, clock) -> None:
    ref = RepoRef(ACCOUNT, "life/app")
    digests = []
    for i in range(5):
        clock.now += 60
        digests.append(push_image(registry, ref, f"v{i}", [f"layer {i}".encode()]))
    clock.now += 1
    registry.manifests.put(ref, "stable", registry.manifests.get(ref, digests[0]).payload, None)  # 2nd tag on v0
    registry.lifecycle.put(ref, KEEP_TWO)
    audit = AuditLog(registry.ctx)

    (dry,) = LifecycleRunner(registry).run(dry_run=True)
    assert [e["imageDigest"] for e in dry.expired] == digests[:3]
    assert registry.manifests.list_tags(ref) == ["stable", "v0", "v1", "v2", "v3", "v4"]  # nothing changed

    (run,) = LifecycleRunner(registry).run()
    assert [e["imageDigest"] for e in run.expired] == digests[:3]
    assert registry.manifests.list_tags(ref) == ["v3", "v4"]  # v0's other tag "stable" went with it
    for digest in digests[:3]:
        with pytest.raises(ManifestUnknown):
            registry.manifests.get(ref, digest)
    assert registry.lifecycle.get(ref).last_evaluated_at == clock.now
    events = [e for e in audit.query(AuditQuery()) if e["event"] == "lifecycle"]
    assert len(events) == 3 and all("expired by rule 1" in e["reason"] for e in events)
    # Running again expires nothing more.
    assert LifecycleRunner(registry).run()[0].expired == []


def test_an_index_child_is_never_expired_before_its_index(registry, clock) -> None:
    ref = RepoRef(ACCOUNT, "life/multi")
    clock.now += 10
    child = push_image(registry, ref, "child-tmp", [b"arm64 layer"])
    registry.manifests.delete(ref, "child-tmp")  # untagged, but referenced by the index below
    clock.now += 10
    child_payload = registry.manifests.get(ref, child).payload
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": child,
                    "size": len(child_payload),
                    "platform": {"architecture": "arm64", "os": "linux"},
                }
            ],
        }
    ).encode()
    index_digest = registry.manifests.put(ref, "release", index, None).digest
    expire_untagged = json.dumps(
        {
            "rules": [
                {
                    "rulePriority": 1,
                    "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1},
                    "action": {"type": "expire"},
                }
            ]
        }
    )
    registry.lifecycle.put(ref, expire_untagged)
    push_blob(registry, ref, b"noise")
    (run,) = LifecycleRunner(registry).run()
    assert run.expired == []  # the only untagged image is the index's child
    assert registry.manifests.get(ref, child).digest == child
    assert registry.manifests.get(ref, "release").digest == index_digest


def test_soko_lifecycle_run_cli(registry, clock, settings, capsys) -> None:
    ref = RepoRef(ACCOUNT, "life/cli")
    for i in range(3):
        clock.now += 60
        push_image(registry, ref, f"v{i}", [f"cli layer {i}".encode()])
    registry.lifecycle.put(ref, KEEP_TWO)
    args = ["--data-dir", settings.data_dir, "--database-url", settings.effective_database_url]
    assert main(["lifecycle", "run", "--dry-run", "--repository", "life/cli", *args]) == 0
    assert "would expire 1 image(s)" in capsys.readouterr().out
    assert main(["lifecycle", "run", "--repository", "life/cli", *args]) == 0
    assert "expired 1 image(s)" in capsys.readouterr().out
