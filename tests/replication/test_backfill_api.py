"""ECR's replication backfill operations with boto3 against a real server whose own job runner does the work:
StartReplicationBackfill, DescribeReplicationBackfillResults, ListReplicationBackfills, StopReplicationBackfill."""

from __future__ import annotations

import uuid

import pytest

from soko.registry.models import RepoRef
from tests.domain import push_image
from tests.rawhttp import wait_until
from tests.replication.test_replication import DST, REGION, grant

OTHER = "333333333333"


def test_backfill_operations(server, aws) -> None:
    registry = server.registry
    src = registry.settings.account_id
    registry.policies.put_registry_policy(DST, grant(src), "V2")
    digests = {push_image(registry, RepoRef(src, "old"), f"v{i}", [f"layer {i}".encode()]) for i in range(3)}
    ecr = aws("ecr")
    destination = {"region": REGION, "registryId": DST}
    with pytest.raises(ecr.exceptions.InvalidParameterException, match="not in the replication configuration"):
        ecr.start_replication_backfill(destination=destination)
    ecr.put_replication_configuration(replicationConfiguration={"rules": [{"destinations": [destination]}]})

    started = ecr.start_replication_backfill(destination=destination)
    assert started["status"] in ("PREPARING", "IN_PROGRESS") and started["destination"] == destination
    backfill_id = started["replicationBackfillId"]
    with pytest.raises(ecr.exceptions.ReplicationBackfillInProgressException):
        ecr.start_replication_backfill(destination=destination)

    def done() -> bool:
        return ecr.describe_replication_backfill_results(replicationBackfillId=backfill_id)["status"] == "COMPLETE"

    wait_until(done, "the backfill never completed", timeout=60)
    first = ecr.describe_replication_backfill_results(replicationBackfillId=backfill_id, maxResults=2)
    assert first["progress"] == {
        "totalReplicationCount": 3,
        "completedReplicationCount": 3,
        "failedReplicationCount": 0,
        "failureCodes": [],
    }
    rest = ecr.describe_replication_backfill_results(replicationBackfillId=backfill_id, nextToken=first["nextToken"])
    results = first["results"] + rest["results"]
    assert {r["imageId"]["imageDigest"] for r in results} == digests and "nextToken" not in rest
    assert {(r["repositoryName"], r["status"]) for r in results} == {("old", "COMPLETE")}
    failed = ecr.describe_replication_backfill_results(replicationBackfillId=backfill_id, resultStatusFilter="FAILED")
    assert failed["results"] == []
    assert sorted(registry.manifests.list_tags(RepoRef(DST, "old"))) == ["v0", "v1", "v2"]

    with pytest.raises(ecr.exceptions.ReplicationBackfillInvalidStatusException):
        ecr.stop_replication_backfill(replicationBackfillId=backfill_id)
    with pytest.raises(ecr.exceptions.ReplicationBackfillNotFoundException):
        ecr.stop_replication_backfill(replicationBackfillId=str(uuid.uuid4()))
    with pytest.raises(ecr.exceptions.InvalidParameterException, match="pagination token"):
        ecr.list_replication_backfills(nextToken="not-a-token")

    second = ecr.start_replication_backfill(destination=destination)["replicationBackfillId"]
    stopped = ecr.stop_replication_backfill(replicationBackfillId=second)
    assert stopped["status"] == "STOPPED"
    listed = ecr.list_replication_backfills()["backfills"]
    assert [(b["replicationBackfillId"], b["status"]) for b in listed] == [
        (second, "STOPPED"),
        (backfill_id, "COMPLETE"),
    ]
    page = ecr.list_replication_backfills(maxResults=1)
    assert len(page["backfills"]) == 1 and page["nextToken"]
