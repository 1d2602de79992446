"""DescribeImageReplicationStatus and the replication backfill operations (StartReplicationBackfill,
StopReplicationBackfill, DescribeReplicationBackfillResults, ListReplicationBackfills); replication itself:
``soko.replication``."""

from __future__ import annotations

from soko.ecr.api import Call
from soko.ecr.repositories import decode_token, encode_token, invalid
from soko.ecr.scanning import _image_id, _out_id, _resolve
from soko.replication import Replicator
from soko.replication.backfills import Backfill, Backfills
from soko.replication.rules import Destination


def describe_image_replication_status(call: Call) -> dict:
    ref = call.repo()
    call.authorize("ecr:DescribeImageReplicationStatus", ref.name)
    image_id = _image_id(call)
    digest = _resolve(call, image_id)  # ImageNotFound / RepositoryNotFound first
    statuses = []
    for req in Replicator(call.api.registry).statuses(ref, digest):
        status = {"region": req.destination.region, "registryId": req.destination.registry_id, "status": req.status}
        if req.failure_code and req.status == "FAILED":
            status["failureCode"] = req.failure_code
        statuses.append(status)
    return {"repositoryName": ref.name, "imageId": _out_id(digest, image_id), "replicationStatuses": statuses}


def _backfills(call: Call) -> Backfills:
    return Backfills(Replicator(call.api.registry))


def _offset(call: Call) -> int:
    after = decode_token(call.params.get("nextToken"))
    if after is None:
        return 0
    if not after.isdigit() or len(after) > 9:
        raise invalid("nextToken", "Invalid pagination token")
    return int(after)


def _summary(b: Backfill, *, progress: bool = True) -> dict:
    out: dict = {
        "replicationBackfillId": b.id,
        "registryId": b.account_id,
        "destination": {"region": b.destination.region, "registryId": b.destination.registry_id},
        "status": b.status,
        "startedAt": b.started_at,
    }
    if b.ended_at is not None:
        out["endedAt"] = b.ended_at
    if b.failure_code:
        out["failureCode"] = b.failure_code
    if progress:
        out["progress"] = {
            "totalReplicationCount": b.total,
            "completedReplicationCount": b.completed,
            "failedReplicationCount": b.failed,
            "failureCodes": b.failure_codes,
        }
    return out


def start_replication_backfill(call: Call) -> dict:
    call.authorize("ecr:StartReplicationBackfill")
    dest = call.params["destination"]
    backfill = _backfills(call).start(call.caller.account_id, Destination(dest["region"], dest["registryId"]))
    out = _summary(backfill, progress=False)
    out.pop("endedAt", None)
    return out


def stop_replication_backfill(call: Call) -> dict:
    call.authorize("ecr:StopReplicationBackfill")
    backfill = _backfills(call).stop(call.caller.account_id, call.params["replicationBackfillId"])
    out = _summary(backfill, progress=False)
    out.pop("endedAt", None)
    return out


def describe_replication_backfill_results(call: Call) -> dict:
    call.authorize("ecr:DescribeReplicationBackfillResults")
    offset, limit = _offset(call), call.params.get("maxResults") or 100
    backfill, results, more = _backfills(call).results(
        call.caller.account_id,
        call.params["replicationBackfillId"],
        call.params.get("resultStatusFilter"),
        offset,
        limit,
    )
    out = _summary(backfill)
    out["results"] = [
        {
            "repositoryName": repository,
            "imageId": {"imageDigest": digest},
            "status": status,
            **({"failureCode": code.partition(":")[0]} if code else {}),
        }
        for repository, digest, status, code in results
    ]
    if more:
        out["nextToken"] = encode_token(str(offset + limit))
    return out


def list_replication_backfills(call: Call) -> dict:
    call.authorize("ecr:ListReplicationBackfills")
    offset, limit = _offset(call), call.params.get("maxResults") or 50
    backfills, more = _backfills(call).page(call.caller.account_id, offset, limit)
    out: dict = {"registryId": call.caller.account_id, "backfills": [_summary(b) for b in backfills]}
    if more:
        out["nextToken"] = encode_token(str(offset + limit))
    return out


OPERATIONS = {
    "DescribeImageReplicationStatus": describe_image_replication_status,
    "StartReplicationBackfill": start_replication_backfill,
    "StopReplicationBackfill": stop_replication_backfill,
    "DescribeReplicationBackfillResults": describe_replication_backfill_results,
    "ListReplicationBackfills": list_replication_backfills,
}
