"""Pull-through cache on PostgreSQL: concurrent first pulls (a fleet of nodes starting one image at once), an upstream
blob over the image size quota, and what a caller allowed only the cache's repositories can read."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil
import threading
from collections.abc import Iterator

import boto3
import httpx
import pytest

from soko.remote import RegistryClient
from tests.databases import PG_URL, fresh_database
from tests.e2e.servers import DISTRIBUTION_BIN, SOKO_REGION, RegistryServer, soko_root_key, start_soko
from tests.rawhttp import wait_until
from tests.remote.upstreams import answer, hostile_server, push_image, start_upstream

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not os.path.exists(DISTRIBUTION_BIN), reason="needs docker-registry"),
]

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RegistryServer, RegistryServer, str]]:
    import sqlalchemy as sa

    try:
        sa.create_engine(PG_URL).connect().close()
    except Exception:
        pytest.skip("PostgreSQL not reachable")
    root = tmp_path_factory.mktemp("ptc-races")
    with fresh_database("postgresql", str(root)) as database_url:
        upstream = start_upstream(root / "upstream")
        soko = start_soko(root / "soko", env={"SOKO_DATABASE_URL": database_url, "SOKO_PULL_THROUGH_RECHECK": "0s"})
        try:
            keys = soko_root_key(soko.data_dir)
            boto3.client(
                "ecr",
                endpoint_url=soko.url,
                region_name=SOKO_REGION,
                aws_access_key_id=keys["AccessKeyId"],
                aws_secret_access_key=keys["SecretAccessKey"],
            ).create_pull_through_cache_rule(ecrRepositoryPrefix="up", upstreamRegistryUrl=f"http://{upstream.host}")
            yield soko, upstream, database_url
        finally:
            soko.kill()
            upstream.kill()
            shutil.rmtree(root / "soko", ignore_errors=True)


def test_concurrent_first_pulls_of_one_tag_are_all_answered(world: tuple[RegistryServer, RegistryServer, str]) -> None:
    """Eight clients pull the same new tag at once, for several images: each request writes the tag's check row
    (pull_through_tags) and, before its blobs are in, the image's pending row; both were a delete then an insert,
    so on PostgreSQL two requests could both delete nothing and the second insert failed its primary key (500)."""
    soko, upstream, _ = world
    for round_ in range(4):
        with RegistryClient(upstream.url) as client:
            _, manifest = push_image(client, f"team/race{round_}", "v1", [os.urandom(200_000)])
        barrier = threading.Barrier(8)

        def pull(_: int, round_: int = round_, barrier: threading.Barrier = barrier) -> tuple[int, bytes]:
            with httpx.Client(base_url=soko.url, auth=soko.credentials, timeout=60) as own:
                barrier.wait()
                got = own.get(f"/v2/up/team/race{round_}/manifests/v1", headers={"Accept": MANIFEST})
                return got.status_code, got.content

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(pull, range(8)))
        assert [status for status, _ in answers] == [200] * 8, [a[1][:300] for a in answers if a[0] != 200]
        assert {body for _, body in answers} == {manifest}


def test_a_blob_over_the_image_size_quota_releases_its_upstream_connection(
    world: tuple[RegistryServer, RegistryServer, str],
) -> None:
    """A blob the upstream announces over the account's image size quota is refused before the client's 200, and
    the upstream response is closed with it: it was left open, holding a connection of the rule's pool (100 at
    most: after that every pull through the rule waits out the pool timeout) and a descriptor."""
    from soko.cli import main

    soko, _, database_url = world
    size = 2 << 20
    layer = "sha256:" + "ab" * 32
    config = b'{"architecture":"amd64","os":"linux"}'
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": 38},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": size}],
        }
    ).encode()
    closed: list[bool] = []

    def blob(handler) -> None:  # the headers, then wait for the client to hang up (or not)
        handler.send_response(200)
        handler.send_header("Content-Length", str(size))
        handler.end_headers()
        handler.wfile.flush()
        handler.connection.settimeout(15)
        try:
            closed.append(handler.connection.recv(1) == b"")
        except TimeoutError:
            closed.append(False)
        except OSError:
            closed.append(True)
        handler.close_connection = True

    routes = {
        "/v2/big/manifests/v1": answer(200, manifest, {"Content-Type": MANIFEST}),
        f"/v2/big/blobs/{config_digest}": answer(200, config),
        f"/v2/big/blobs/{layer}": blob,
        "/v2/": answer(200, b"{}"),
    }
    args = ["--data-dir", str(soko.data_dir), "--database-url", database_url]
    assert main(["account", "quota", "000000000000", "max_image_size", str(1 << 20), *args]) == 0
    try:
        with hostile_server(routes) as url, httpx.Client(base_url=soko.url, auth=soko.credentials, timeout=60) as c:
            keys = soko_root_key(soko.data_dir)
            boto3.client(
                "ecr",
                endpoint_url=soko.url,
                region_name=SOKO_REGION,
                aws_access_key_id=keys["AccessKeyId"],
                aws_secret_access_key=keys["SecretAccessKey"],
            ).create_pull_through_cache_rule(ecrRepositoryPrefix="hostile", upstreamRegistryUrl=url)
            assert c.get("/v2/hostile/big/manifests/v1", headers={"Accept": MANIFEST}).status_code == 200
            for _ in range(3):
                got = c.get(f"/v2/hostile/big/blobs/{layer}")
                assert 400 <= got.status_code < 500, got.text
            wait_until(lambda: len(closed) >= 3, "the upstream never saw the blob requests", timeout=60)
    finally:
        assert main(["account", "quota", "000000000000", "max_image_size", "default", *args]) == 0
    assert closed and all(closed), closed


def test_a_cache_repository_does_not_serve_blobs_of_repositories_the_caller_cannot_read(
    world: tuple[RegistryServer, RegistryServer, str],
) -> None:
    """A blob the cache repository lacks was linked from any repository of the account holding it (a mount with no
    check on the source), so a caller allowed only the cache's repositories read any layer whose digest it knew.
    Now only a blob an image of the cache repository names (stored or pending: the upstream vouched for it) is
    linked; any other is asked of the upstream, which does not have it."""
    import base64

    from soko.remote import Credentials

    soko, upstream, _ = world
    secret = os.urandom(100_000)
    secret_digest = "sha256:" + hashlib.sha256(secret).hexdigest()
    with RegistryClient(soko.url, Credentials(*soko.credentials)) as root:
        push_image(root, "private/secret", "v1", [secret])
    with RegistryClient(upstream.url) as client:
        push_image(client, "team/public", "v1", [os.urandom(50_000)])
    keys = soko_root_key(soko.data_dir)
    session = boto3.session.Session(
        aws_access_key_id=keys["AccessKeyId"], aws_secret_access_key=keys["SecretAccessKey"], region_name=SOKO_REGION
    )
    iam = session.client("iam", endpoint_url=soko.url)
    iam.create_user(UserName="cache-only")
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
            {"Effect": "Allow", "Action": "ecr:*", "Resource": "arn:aws:ecr:*:*:repository/up/*"},
        ],
    }
    iam.put_user_policy(UserName="cache-only", PolicyName="cache", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="cache-only")["AccessKey"]
    ecr = boto3.client(
        "ecr",
        endpoint_url=soko.url,
        region_name=SOKO_REGION,
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
    )
    token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    user, _, password = base64.b64decode(token).decode().partition(":")
    with httpx.Client(base_url=soko.url, auth=(user, password), timeout=60) as client:
        assert client.get(f"/v2/private/secret/blobs/{secret_digest}").status_code == 403
        assert client.get("/v2/up/team/public/manifests/v1", headers={"Accept": MANIFEST}).status_code == 200
        got = client.get(f"/v2/up/team/public/blobs/{secret_digest}")
        assert got.status_code == 404 and got.content != secret, got.status_code
    layers = ecr.batch_check_layer_availability(repositoryName="up/team/public", layerDigests=[secret_digest])
    assert not [x for x in layers["layers"] if x.get("layerAvailability") == "AVAILABLE"]


def test_one_pending_image_that_cannot_be_stored_does_not_hold_back_the_others(
    world: tuple[RegistryServer, RegistryServer, str],
) -> None:
    """An upstream image over the image size quota as a whole (each blob under it) is served from pending but can
    never be stored. Promotion stopped at the first such image of the repository, so the images it met after it
    stayed pending for good (served, never stored: not in DescribeImages, their fill jobs failing)."""
    from soko.cli import main

    soko, upstream, database_url = world
    args = ["--data-dir", str(soko.data_dir), "--database-url", database_url]
    with RegistryClient(upstream.url) as client:
        big, whole = push_image(client, "team/sum", "big", [os.urandom(100_000), os.urandom(100_000)])
        small: list[str] = []
        while len(small) < 2:  # after the big one in the pending rows' key order as in their insertion order
            digest, _ = push_image(client, "team/sum", f"small{len(small)}", [os.urandom(20_000)])
            if digest > big:
                small.append(digest)
    keys = soko_root_key(soko.data_dir)
    ecr = boto3.client(
        "ecr",
        endpoint_url=soko.url,
        region_name=SOKO_REGION,
        aws_access_key_id=keys["AccessKeyId"],
        aws_secret_access_key=keys["SecretAccessKey"],
    )
    assert main(["account", "quota", "000000000000", "max_image_size", "150000", *args]) == 0
    try:
        with httpx.Client(base_url=soko.url, auth=soko.credentials, timeout=60) as c:
            got = c.get("/v2/up/team/sum/manifests/big", headers={"Accept": MANIFEST})
            assert got.status_code == 200 and got.content == whole
            for blob in [json.loads(whole)["config"], *json.loads(whole)["layers"]]:
                assert c.get(f"/v2/up/team/sum/blobs/{blob['digest']}").status_code == 200
            for i in range(len(small)):
                assert c.get(f"/v2/up/team/sum/manifests/small{i}", headers={"Accept": MANIFEST}).status_code == 200

            def stored() -> bool:
                images = ecr.describe_images(repositoryName="up/team/sum")["imageDetails"]
                return sorted(i["imageDigest"] for i in images) == sorted(small)

            wait_until(stored, "the small images were never stored", timeout=30)
    finally:
        assert main(["account", "quota", "000000000000", "max_image_size", "default", *args]) == 0
