"""The destination side of another region's replication: pushes marked ``Soko-Replicated-From`` need
``ecr:ReplicateImage``, create a missing repository as replication does (even with create-on-push off) and are
announced as ECR Replication Actions, not pushes; a malformed mark is a clear OCI error."""

from __future__ import annotations

import json

import httpx
import sqlalchemy as sa

from soko.meta.schema import event_outbox
from tests.iam.test_api_roles import new_user
from tests.oci.helpers import assert_oci_error, image_manifest, push_blob, put_manifest, sha256

MARK = {"Soko-Replicated-From": "eu-west-1/111111111111"}


def token_for(aws, key: tuple[str, str]) -> str:
    return aws("ecr", *key).get_authorization_token()["authorizationData"][0]["authorizationToken"]


def test_replicated_push_needs_replicate_image_and_is_not_a_push(server, client, aws) -> None:
    server.registry.settings.create_repository_on_push = False
    config, layer = b'{"architecture":"amd64","os":"linux"}', b"replicated layer"
    manifest = json.dumps(image_manifest(config, [layer])).encode()

    for value in ("eu-west-1", "eu-west-1/12", "EU/111111111111", "x" * 5000, "eu-west-1/111111111111/x"):
        r = client.post("/v2/copied/blobs/uploads/", headers={"Soko-Replicated-From": value})
        assert_oci_error(r, 400, "BLOB_UPLOAD_INVALID")
        r = put_manifest(client, "copied", "v1", manifest)
        assert r.status_code in (400, 404)
        r = client.put("/v2/copied/manifests/v1", content=manifest, headers={"Soko-Replicated-From": value})
        assert_oci_error(r, 400, "MANIFEST_INVALID")

    # a user that may push but not ReplicateImage
    iam = aws("iam")
    push_actions = [
        "ecr:GetAuthorizationToken",
        "ecr:InitiateLayerUpload",
        "ecr:UploadLayerPart",
        "ecr:CompleteLayerUpload",
        "ecr:PutImage",
        "ecr:BatchCheckLayerAvailability",
    ]
    policy = json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": push_actions, "Resource": "*"}]}
    )
    pusher = new_user(iam, "pusher", policy)
    headers = {"Authorization": f"Basic {token_for(aws, pusher)}", **MARK}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as limited:
        r = limited.post("/v2/copied/blobs/uploads/")
        assert_oci_error(r, 403, "DENIED")
        assert "ecr:ReplicateImage" in r.text

    # the root may: the repository is created although create-on-push is off, and nothing is announced as a push
    with httpx.Client(base_url=server.url, headers={**client.headers, **MARK}, timeout=30) as replicator:
        for blob in (config, layer):
            r = replicator.post("/v2/copied/blobs/uploads/", params={"digest": sha256(blob)}, content=blob)
            assert r.status_code == 201, r.text
        r = replicator.put(
            "/v2/copied/manifests/v1",
            content=manifest,
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )
        assert r.status_code == 201, r.text
    with server.registry.ctx.db.read() as conn:
        events = [json.loads(b) for b in conn.execute(sa.select(event_outbox.c.body)).scalars()]
    actions = [(e["detail-type"], e["detail"].get("action-type")) for e in events if e["source"] == "aws.ecr"]
    assert actions == [("ECR Replication Action", "REPLICATE")]
    detail = next(e["detail"] for e in events if e["detail-type"] == "ECR Replication Action")
    assert (detail["source-region"], detail["source-account"], detail["image-tag"]) == (
        "eu-west-1",
        "111111111111",
        "v1",
    )
    # without the mark, create-on-push off still refuses a new repository
    assert_oci_error(client.post("/v2/other/blobs/uploads/"), 404, "NAME_UNKNOWN")
    push_blob(client, "copied", b"an ordinary push into the now existing repository")
