"""DescribeImageReplicationStatus (replication itself: ``soko.replication``)."""

from __future__ import annotations

from soko.ecr.api import Call
from soko.ecr.scanning import _image_id, _out_id, _resolve
from soko.replication import Replicator


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


OPERATIONS = {"DescribeImageReplicationStatus": describe_image_replication_status}
