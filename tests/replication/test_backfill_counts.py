"""A backfill's progress counts its items by their replication's status (none yet, IN_PROGRESS, COMPLETE, FAILED)
and names each failure code once (the part before the detail)."""

from __future__ import annotations

import sqlalchemy as sa

from soko.meta.schema import replication_backfill_items as items
from soko.meta.schema import replication_backfills as backfills
from soko.meta.schema import replication_status as st
from soko.replication.backfills import IN_PROGRESS, Backfills
from soko.replication.service import Replicator

SRC, DST, REGION = "000000000000", "222222222222", "us-east-1"


def test_backfill_progress_counts(registry) -> None:
    outcomes = {
        "sha256:" + "1" * 64: ("COMPLETE", None),
        "sha256:" + "2" * 64: ("COMPLETE", None),
        "sha256:" + "3" * 64: ("FAILED", "IMAGE_NOT_FOUND: the source image is gone"),
        "sha256:" + "4" * 64: ("FAILED", "IMAGE_NOT_FOUND: the source image is gone too"),
        "sha256:" + "5" * 64: ("FAILED", "REPLICATION_NOT_AUTHORIZED: denied"),
        "sha256:" + "6" * 64: ("FAILED", None),
        "sha256:" + "7" * 64: ("IN_PROGRESS", "UpstreamUnavailable: retried"),
        "sha256:" + "8" * 64: None,  # its replication not yet requested
    }
    with registry.ctx.write() as conn:
        conn.execute(
            sa.insert(backfills).values(
                id="b", account_id=SRC, dest_region=REGION, dest_registry=DST, status=IN_PROGRESS, started_at=1.0
            )
        )
        for digest, outcome in outcomes.items():
            conn.execute(sa.insert(items).values(backfill_id="b", repository="old", digest=digest))
            if outcome is not None:
                conn.execute(
                    sa.insert(st).values(
                        account_id=SRC,
                        repository="old",
                        digest=digest,
                        dest_region=REGION,
                        dest_registry=DST,
                        status=outcome[0],
                        failure_code=outcome[1],
                        created_at=1.0,
                        updated_at=1.0,
                    )
                )
    backfill = Backfills(Replicator(registry)).get(SRC, "b")
    assert (backfill.total, backfill.completed, backfill.failed) == (8, 2, 4)
    assert backfill.failure_codes == ["IMAGE_NOT_FOUND", "REPLICATION_NOT_AUTHORIZED"]
    assert backfill.status == IN_PROGRESS  # two have not ended
