"""Soko is validated against the newest botocore ECR model; every operation it does not implement answers
UnsupportedOperationException naming the operation, whatever parameters the request carried."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from soko.aws.service_model import get_service_model
from soko.ecr.api import EcrApi
from tests.ecr.test_images import raw_json

# The four replication-backfill operations arrived with the 62-operation model (botocore 1.44.x).
BACKFILL = {
    "StartReplicationBackfill",
    "StopReplicationBackfill",
    "ListReplicationBackfills",
    "DescribeReplicationBackfillResults",
}
# What Soko does not implement yet (59 of 62): excluding principals from updating an image's last pull time.
PULL_TIME_EXCLUSIONS = {
    "RegisterPullTimeUpdateExclusion",
    "DeregisterPullTimeUpdateExclusion",
    "ListPullTimeUpdateExclusions",
}


def _unimplemented(server) -> list[str]:
    implemented = EcrApi(server.registry.settings, server.registry, server.identity).operations
    return sorted(set(get_service_model("ecr").operation_names) - set(implemented))


def test_model_is_the_newest_with_62_operations():
    names = set(get_service_model("ecr").operation_names)
    assert len(names) == 62
    assert names >= BACKFILL


def test_every_unimplemented_operation_is_unsupported_by_name(server):
    missing = _unimplemented(server)
    assert set(missing) == PULL_TIME_EXCLUSIONS
    for operation in missing:
        status, body = raw_json(server, operation, {})  # even without its required parameters
        assert status == 400, (operation, body)
        assert body["__type"] == "UnsupportedOperationException", (operation, body)
        assert f"The ECR operation {operation} is not supported" in body["message"]
    status, body = raw_json(server, "LaunchRocket", {})
    assert (status, body["__type"]) == (400, "UnknownOperationException")


def test_boto3_sees_unsupported_operation(aws):
    ecr = aws("ecr")
    with pytest.raises(ClientError) as exc:
        ecr.register_pull_time_update_exclusion(principalArn="arn:aws:iam::000000000000:role/ci")
    assert exc.value.response["Error"]["Code"] == "UnsupportedOperationException"
    assert "RegisterPullTimeUpdateExclusion" in exc.value.response["Error"]["Message"]
