"""Lifecycle policy previews are leased jobs: a process that dies mid-preview has it run again elsewhere, and
GetLifecyclePolicyPreview's state says IN_PROGRESS until then (both databases)."""

from __future__ import annotations

import json
import threading
from concurrent.futures import wait

from soko.jobs import JobKind, JobRunner, registry_jobs
from soko.registry.lifecycle_store import PREVIEW_JOB
from soko.registry.models import RepoRef
from tests.clock import Clock
from tests.domain import push_image

POLICY = json.dumps(
    {
        "rules": [
            {
                "rulePriority": 1,
                "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1},
                "action": {"type": "expire"},
            }
        ]
    }
)


def test_a_preview_whose_process_died_is_run_again_by_another(registry) -> None:
    ref = RepoRef("000000000000", "preview/app")
    for tag in ("v1", "v2", "v3"):
        push_image(registry, ref, tag, [f"layer {tag}".encode()])
    clock = Clock(2_000_000_000.0)  # the runners' clock (a job is due at once: enqueued at the wall clock's now)
    stuck, release = threading.Event(), threading.Event()

    def dies_mid_preview(_key: str) -> None:  # a process that took the job and then hangs (or was killed)
        stuck.set()
        assert release.wait(30)

    dead = JobRunner(registry.ctx, [JobKind(PREVIEW_JOB, dies_mid_preview, 3600.0, keys=())], owner="dead", clock=clock)
    (preview_kind,) = [k for k in registry_jobs(registry) if k.name == PREVIEW_JOB]
    alive = JobRunner(registry.ctx, [preview_kind], owner="alive", clock=clock)

    registry.lifecycle.start_preview(ref, POLICY)
    held = dead.run_due()
    assert len(held) == 1 and stuck.wait(30)
    assert alive.run_due() == []  # the lease holds
    assert registry.lifecycle.get_preview(ref).status == "IN_PROGRESS"
    clock.now += preview_kind.lease + 1  # no heartbeat from "dead": its lease passes
    wait(alive.run_due())
    state = registry.lifecycle.get_preview(ref)
    assert state.status == "COMPLETE" and state.summary == {"expiringImageTotalCount": 2}
    release.set()
    wait(held)
    assert alive.run_due() == []  # done: not run again
    dead.stop()
    alive.stop()
