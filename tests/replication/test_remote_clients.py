"""A serving process that replicates to another region logs in there (soko.replication.remote): its clients of the
other deployment are closed when the process's job runner stops, not left to the process's end."""

from __future__ import annotations

import json
import os

import httpx
import pytest

from soko.remote import RegistryClient
from soko.replication import remote
from tests.conftest import ROOT_KEY_ID, ROOT_SECRET, aws_client, make_settings, open_registry, serve
from tests.oci.helpers import image_manifest, push_blob, put_manifest
from tests.rawhttp import wait_until

ACCOUNT = "000000000000"
DEST_REGION = "eu-west-1"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_stopped_server_has_closed_its_clients_of_other_regions(settings, registry, tmp_path, monkeypatch) -> None:
    """Each client of the other region's deployment the copies logged in with (their connections are not kept between
    requests here, so they are counted as clients, not descriptors): open while the server runs, for the next copy;
    closed once it stopped."""
    made: list[RegistryClient] = []

    class Counted(RegistryClient):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(remote, "RegistryClient", Counted)
    dest_settings = make_settings(str(tmp_path / "eu"), f"sqlite:///{tmp_path / 'eu.db'}")
    dest_settings.region = DEST_REGION
    dest = open_registry(dest_settings)
    secret = tmp_path / "eu.secret"
    secret.write_text(ROOT_SECRET)
    os.chmod(secret, 0o600)
    try:
        with serve(dest_settings, dest) as eu:
            key = {"access_key_id": ROOT_KEY_ID, "secret_access_key_file": str(secret)}
            settings.regions = {DEST_REGION: {"url": eu.url, "accounts": {ACCOUNT: key}}}
            with serve(settings, registry) as us:
                ecr = aws_client(us.url)
                rule = {"destinations": [{"region": DEST_REGION, "registryId": ACCOUNT}]}
                ecr.put_replication_configuration(replicationConfiguration={"rules": [rule]})
                with httpx.Client(base_url=us.url, headers=us.basic_auth, timeout=30) as client:
                    config, layer = json.dumps({"os": "linux"}).encode(), os.urandom(2048)
                    push_blob(client, "app", config)
                    push_blob(client, "app", layer)
                    assert put_manifest(client, "app", "v1", image_manifest(config, [layer])).status_code == 201

                def replicated() -> bool:
                    statuses = ecr.describe_image_replication_status(
                        repositoryName="app", imageId={"imageTag": "v1"}
                    )["replicationStatuses"]
                    return [s["status"] for s in statuses] == ["COMPLETE"]

                wait_until(replicated, "the image was not replicated to the other region", timeout=60)
                ecr.close()
                assert made and not any(client._client.is_closed for client in made)
            assert all(client._client.is_closed for client in made), "a stopped server kept a client of eu-west-1"
    finally:
        dest.close()
