"""Open upload sessions are capped per principal and repository (max_open_uploads): abandoned sessions cannot pile
up by the thousand. /v2/ answers 429 TOOMANYREQUESTS, ECR's InitiateLayerUpload LimitExceededException."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from soko.errors import UploadLimitExceeded
from soko.registry.models import RepoRef
from tests.oci.helpers import assert_oci_error, push_blob, start_upload


def test_open_sessions_are_capped_per_principal_and_repository(server, client, aws) -> None:
    server.registry.settings.max_open_uploads = 3
    sessions = [start_upload(client, "cap/app") for _ in range(3)]
    body = assert_oci_error(client.post("/v2/cap/app/blobs/uploads/"), 429, "TOOMANYREQUESTS")
    assert "3 upload sessions to 'cap/app' are open" in body["errors"][0]["message"]
    with pytest.raises(ClientError) as refused:
        aws("ecr").initiate_layer_upload(repositoryName="cap/app")
    assert refused.value.response["Error"]["Code"] == "LimitExceededException"
    start_upload(client, "cap/other")  # another repository has its own count
    assert client.delete(sessions[0]).status_code == 204  # finishing or cancelling one frees a place
    push_blob(client, "cap/app", b"a monolithic push is a session too, for a moment")
    assert aws("ecr").initiate_layer_upload(repositoryName="cap/app")["uploadId"]


def test_each_principal_has_its_own_count(registry) -> None:
    registry.settings.max_open_uploads = 2
    ref = RepoRef(registry.settings.account_id, "cap/owners")
    for _ in range(2):
        registry.uploads.start(ref, "arn:aws:iam::000000000000:user/a")
    with pytest.raises(UploadLimitExceeded):
        registry.uploads.start(ref, "arn:aws:iam::000000000000:user/a")
    registry.uploads.start(ref, "arn:aws:iam::000000000000:user/b")
