"""Two Soko deployments as two regions (each its own process, data dir and database): skopeo pushes to us-east-1
are replicated to eu-west-1 and pulled back byte for byte there; the destination going down for a while loses
nothing; hostile ``regions`` settings are refused at start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from .layout import ImageRef, assert_same_content
from .servers import RegistryServer, soko_root_key, start_soko
from .skopeo import Skopeo

pytestmark = [pytest.mark.e2e]

ACCOUNT = "000000000000"
DEST_REGION = "eu-west-1"


def ecr(server: RegistryServer, region: str):
    keys = soko_root_key(server.data_dir)
    return boto3.client(
        "ecr",
        endpoint_url=server.url,
        region_name=region,
        aws_access_key_id=keys["AccessKeyId"],
        aws_secret_access_key=keys["SecretAccessKey"],
        config=Config(retries={"mode": "legacy", "max_attempts": 1}),
    )


def regions_setting(dest: RegistryServer, secret_file: Path) -> str:
    keys = soko_root_key(dest.data_dir)
    secret_file.write_text(keys["SecretAccessKey"])
    os.chmod(secret_file, 0o600)
    entry = {"access_key_id": keys["AccessKeyId"], "secret_access_key_file": str(secret_file)}
    return json.dumps({DEST_REGION: {"url": dest.url, "accounts": {ACCOUNT: entry}}})


def soko_jobs(server: RegistryServer) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOKO_")}
    out = subprocess.run(
        [sys.executable, "-m", "soko", "jobs", "--format", "json", "--data-dir", str(server.data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return json.loads(out)


def wait_status(client, repository: str, tag: str, wanted: str, timeout: float = 60.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    statuses: list[dict] = []
    while time.monotonic() < deadline:
        statuses = client.describe_image_replication_status(repositoryName=repository, imageId={"imageTag": tag})[
            "replicationStatuses"
        ]
        if statuses and all(s["status"] == wanted for s in statuses):
            return statuses
        time.sleep(0.2)
    raise AssertionError(f"replication of {repository}:{tag} not {wanted} in {timeout}s: {statuses}")


@pytest.fixture
def regions(tmp_path: Path):
    dest = start_soko(tmp_path / "eu", env={"SOKO_REGION": DEST_REGION})
    source = None
    try:
        setting = regions_setting(dest, tmp_path / "eu-west-1.secret")
        source = start_soko(tmp_path / "us", env={"SOKO_REGIONS": setting})
        yield source, dest
    finally:
        for server in (source, dest):
            if server is not None:
                server.stop()


def test_push_in_one_region_is_pulled_byte_identical_in_the_other(
    regions, images: dict[str, ImageRef], tmp_path: Path
) -> None:
    source, dest = regions
    skopeo = Skopeo.create(tmp_path / "skopeo")
    skopeo.add_registry(source.host, source.credentials)
    skopeo.add_registry(dest.host, dest.credentials)
    us, eu = ecr(source, "us-east-1"), ecr(dest, DEST_REGION)
    rule = {
        "destinations": [{"region": DEST_REGION, "registryId": ACCOUNT}],
        "repositoryFilters": [{"filter": "prod/", "filterType": "PREFIX_MATCH"}],
    }
    us.put_replication_configuration(replicationConfiguration={"rules": [rule]})

    single, multi, sbom = images["single"], images["multiarch"], images["artifact"]
    skopeo.copy(single.ref, f"docker://{source.host}/prod/app:v1")
    skopeo.copy(sbom.ref, f"docker://{source.host}/prod/app:sbom")  # a referrer of v1
    skopeo.copy(multi.ref, f"docker://{source.host}/prod/multi:v1", all_images=True)
    skopeo.copy(single.ref, f"docker://{source.host}/dev/app:v1")  # no rule takes it
    for repository in ("prod/app", "prod/multi"):
        [status] = wait_status(us, repository, "v1", "COMPLETE")
        assert (status["region"], status["registryId"]) == (DEST_REGION, ACCOUNT)
    wait_status(us, "prod/app", "sbom", "COMPLETE")

    pulled = single.with_path(tmp_path / "pulled-single")
    skopeo.copy(f"docker://{dest.host}/prod/app:v1", pulled.ref)
    assert pulled.top_manifest() == single.top_manifest()
    assert_same_content(single.closure(), pulled.closure())
    pulled_multi = multi.with_path(tmp_path / "pulled-multi")
    skopeo.copy(f"docker://{dest.host}/prod/multi:v1", pulled_multi.ref, all_images=True)
    assert pulled_multi.top_manifest() == multi.top_manifest()
    assert_same_content(multi.closure(), pulled_multi.closure())
    referrers = eu.describe_images(repositoryName="prod/app")["imageDetails"]
    assert sbom.top_digest() in {d["imageDigest"] for d in referrers}
    assert [r["repositoryName"] for r in eu.describe_repositories()["repositories"]] == ["prod/app", "prod/multi"]
    # the destination announces copies, and does not replicate them on
    assert (
        us.describe_image_replication_status(repositoryName="dev/app", imageId={"imageTag": "v1"})[
            "replicationStatuses"
        ]
        == []
    )


def test_a_destination_down_for_a_while_loses_nothing(regions, images: dict[str, ImageRef], tmp_path: Path) -> None:
    source, dest = regions
    skopeo = Skopeo.create(tmp_path / "skopeo")
    skopeo.add_registry(source.host, source.credentials)
    us = ecr(source, "us-east-1")
    rule = {"destinations": [{"region": DEST_REGION, "registryId": ACCOUNT}]}
    us.put_replication_configuration(replicationConfiguration={"rules": [rule]})
    assert dest.stop() == 0
    skopeo.copy(images["many-layers"].ref, f"docker://{source.host}/app:v1")
    failures = 0
    deadline = time.monotonic() + 60
    while failures == 0 and time.monotonic() < deadline:  # until an attempt has failed (the job keeps its error)
        failures = sum(j["failures"] for j in soko_jobs(source) if j["kind"] == "replication")
        time.sleep(0.2)
    [job] = [j for j in soko_jobs(source) if j["kind"] == "replication"]
    assert job["failures"] >= 1 and "unreachable" in job["last_error"]
    [status] = us.describe_image_replication_status(repositoryName="app", imageId={"imageTag": "v1"})[
        "replicationStatuses"
    ]
    assert status["status"] == "IN_PROGRESS"
    restarted = start_soko(dest.data_dir, env={"SOKO_REGION": DEST_REGION}, port=int(dest.host.rsplit(":", 1)[1]))
    try:
        wait_status(us, "app", "v1", "COMPLETE", timeout=120)
        skopeo.add_registry(restarted.host, restarted.credentials)
        pulled = images["many-layers"].with_path(tmp_path / "pulled")
        skopeo.copy(f"docker://{restarted.host}/app:v1", pulled.ref)
        assert_same_content(images["many-layers"].closure(), pulled.closure())
    finally:
        restarted.stop()


@pytest.mark.parametrize(
    "regions_value, complaint",
    [
        ('{"eu-west-1": {"url": "ftp://x", "accounts": {}}}', "base URL"),
        ('{"not a region": {}}', "not a region name"),
        ('{"us-east-1": {"url": "http://127.0.0.1:1", "accounts": {}}}', "serves us-east-1 itself"),
        ('{"eu-west-1": {"url": "http://127.0.0.1:1", "accounts": {"12": {}}}}', "12 digits"),
        (
            '{"eu-west-1": {"url": "http://127.0.0.1:1", "accounts": {"000000000000": '
            '{"access_key_id": "AKIAXXXXXXXXXXXXXXXX", "secret_access_key_file": "/nonexistent"}}}}',
            "no such file",
        ),
        (
            '{"eu-west-1": {"url": "http://127.0.0.1:1", "accounts": {"000000000000": '
            '{"access_key_id": "AKIAXXXXXXXXXXXXXXXX", "secret_access_key_file": "OPEN"}}}}',
            "open to other users",
        ),
        ('["eu-west-1"]', "expected a table"),
        ("{not json", "regions"),
    ],
)
def test_hostile_regions_settings_are_refused_at_start(regions_value: str, complaint: str, tmp_path: Path) -> None:
    open_file = tmp_path / "open.secret"
    open_file.write_text("secret-value-never-logged")
    os.chmod(open_file, 0o644)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOKO_")}
    env["SOKO_REGIONS"] = regions_value.replace("OPEN", str(open_file))
    proc = subprocess.run(
        [sys.executable, "-m", "soko", "migrate", "--data-dir", str(tmp_path / "data")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert complaint in proc.stderr and "secret-value-never-logged" not in proc.stderr
    assert "Traceback" not in proc.stderr
