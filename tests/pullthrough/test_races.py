"""Pull-through cache on PostgreSQL under concurrent first pulls, as a fleet of nodes starting one image at once:
every pull is answered (never a 500 from two requests writing the same row)."""

from __future__ import annotations

import concurrent.futures
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
from tests.remote.upstreams import push_image, start_upstream

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not os.path.exists(DISTRIBUTION_BIN), reason="needs docker-registry"),
]

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RegistryServer, RegistryServer]]:
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
            yield soko, upstream
        finally:
            soko.kill()
            upstream.kill()
            shutil.rmtree(root / "soko", ignore_errors=True)


def test_concurrent_first_pulls_of_one_tag_are_all_answered(world: tuple[RegistryServer, RegistryServer]) -> None:
    """Eight clients pull the same new tag at once, for several images: each request writes the tag's check row
    (pull_through_tags) and, before its blobs are in, the image's pending row; both were a delete then an insert,
    so on PostgreSQL two requests could both delete nothing and the second insert failed its primary key (500)."""
    soko, upstream = world
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
