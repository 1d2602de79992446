"""GC under fire, short version (~10 s per database) of ``bench/stress.py``: concurrent pushes (shared and mounted
layers, indexes), manifest and tag deletes, tag moves, pulls, lifecycle expiry (keep the last N) and GC with a 2 s
grace period; then fsck is clean, one GC with grace 0 leaves exactly the linked blobs (rows == links == files), and
metering equals a recomputation from the raw rows. ``tests/gc`` has the plain push/delete/GC race at grace 0."""

from __future__ import annotations

import os

from tests.stress.scenario import Config, Workload, verify

SECONDS = float(os.environ.get("SOKO_STRESS_SECONDS", "10"))


def test_pushes_deletes_tag_moves_lifecycle_and_gc_race_cleanly(registry) -> None:
    workload = Workload(registry, Config(seconds=SECONDS, grace=2.0, keep_images=4))
    stats = workload.run()
    verify(registry, stats)
    print(stats.summary())
    assert stats.ok, stats.summary() + "\n\n" + "\n".join(stats.failures[:5])
    # The scenario really ran: images were pushed, expired by lifecycle, deleted, re-tagged and collected.
    for op in ("push", "delete", "tag-move", "pull", "lifecycle-expired", "gc-run", "gc-blobs-deleted"):
        assert stats.ops[op] > 0, (op, stats.summary())
