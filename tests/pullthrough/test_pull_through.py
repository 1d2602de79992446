"""Pull-through cache end to end: a real Soko, real upstreams on loopback (Distribution anonymous, with htpasswd
Basic auth, behind a Bearer token realm; a hostile server), rules and secrets through boto3, pulls with skopeo and
raw HTTP."""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import botocore.exceptions
import httpx
import pytest

from soko.remote import RegistryClient
from tests.e2e.images import build_image, build_multiarch
from tests.e2e.layout import ImageRef, assert_same_content
from tests.e2e.servers import DISTRIBUTION_BIN, SOKO_REGION, soko_root_key, start_soko
from tests.e2e.skopeo import Skopeo
from tests.oci.helpers import image_manifest
from tests.rawhttp import wait_until
from tests.remote.upstreams import PASSWORD, USER, TokenServer, answer, hostile_server, push_image, start_upstream

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not (os.path.exists(DISTRIBUTION_BIN) and shutil.which("skopeo") and shutil.which("umoci")),
        reason="needs docker-registry, skopeo and umoci",
    ),
]

INDEX = "application/vnd.oci.image.index.v1+json"
SECRET = json.dumps({"username": USER, "accessToken": PASSWORD})


class World:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.key_arn = ""
        self.stack: list = []
        self.tokens = TokenServer(root)
        self.anon = start_upstream(root / "anon", access_log=True)
        self.basic = start_upstream(root / "basic", "htpasswd")
        self.token = start_upstream(root / "token", "token", token_realm=self.tokens.realm, cert=self.tokens.cert_path)
        # every tag pull re-checks its upstream (the 24 h default made 0 here), so "upstream down" is exercised
        self.soko = start_soko(
            root / "soko", env={"SOKO_PULL_THROUGH_RECHECK": "0s", "SOKO_PULL_THROUGH_TIMEOUT": "5s"}
        )
        keys = soko_root_key(self.soko.data_dir)
        session = boto3.session.Session(
            aws_access_key_id=keys["AccessKeyId"],
            aws_secret_access_key=keys["SecretAccessKey"],
            region_name=SOKO_REGION,
        )
        self.ecr = session.client("ecr", endpoint_url=self.soko.url)
        self.sm = session.client("secretsmanager", endpoint_url=self.soko.url)
        self.iam = session.client("iam", endpoint_url=self.soko.url)
        self.kms = session.client("kms", endpoint_url=self.soko.url)
        self.skopeo = Skopeo.create(
            root / "skopeo",
            {self.soko.host: self.soko.credentials, self.basic.host: (USER, PASSWORD)},
        )
        layout = root / "images"
        self.image = build_image(layout, "v1", "ptc-single", [300_000, 2_000_000])
        self.big = build_image(layout, "big", "ptc-big", [24 << 20])
        self.multi = build_multiarch(layout, "multi", "ptc-multi")
        for server, creds in ((self.anon, None), (self.basic, (USER, PASSWORD)), (self.token, (USER, PASSWORD))):
            extra = ["--dest-creds", f"{creds[0]}:{creds[1]}"] if creds else []
            for image, repo in ((self.image, "team/app:v1"), (self.big, "team/big:v1"), (self.multi, "team/multi:v1")):
                self.skopeo.run(
                    "copy",
                    "--dest-tls-verify=false",
                    *extra,
                    *(["--all"] if image is self.multi else []),
                    image.ref,
                    f"docker://{server.host}/{repo}",
                )

    def close(self) -> None:
        for server in (self.soko, self.anon, self.basic, self.token):
            server.kill()
        self.tokens.close()

    def pull(self, repo: str, out: Path, like: ImageRef, *, all_images: bool = False) -> ImageRef:
        target = like.with_path(out)
        self.skopeo.copy(f"docker://{self.soko.host}/{repo}", target.ref, all_images=all_images)
        return target

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.soko.url, auth=self.soko.credentials, timeout=60)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("ptc"))
    try:
        w.sm.create_secret(Name="ecr-pullthroughcache/upstream", SecretString=SECRET)
        arn = w.sm.describe_secret(SecretId="ecr-pullthroughcache/upstream")["ARN"]
        w.ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="anon", upstreamRegistryUrl=f"http://{w.anon.host}")
        w.key_arn = w.kms.create_key(Description="pull-through cache")["KeyMetadata"]["Arn"]
        w.ecr.create_repository_creation_template(
            prefix="token",
            appliedFor=["PULL_THROUGH_CACHE"],
            imageTagMutability="IMMUTABLE",
            resourceTags=[{"Key": "cache", "Value": "token"}],
            encryptionConfiguration={"encryptionType": "KMS", "kmsKey": w.key_arn},
        )
        for prefix, server in (("basic", w.basic), ("token", w.token)):
            w.ecr.create_pull_through_cache_rule(
                ecrRepositoryPrefix=prefix, upstreamRegistryUrl=f"http://{server.host}", credentialArn=arn
            )
        yield w
    finally:
        w.close()


@pytest.mark.parametrize("prefix", ["anon", "basic", "token"])
def test_pull_through_is_byte_identical(world: World, prefix: str, tmp_path: Path) -> None:
    pulled = world.pull(f"{prefix}/team/app:v1", tmp_path / "pulled", world.image)
    assert pulled.top_manifest() == world.image.top_manifest()
    assert_same_content(world.image.closure(), pulled.closure())
    # the repository was created on demand and now holds the image: served from the cache
    images = world.ecr.describe_images(repositoryName=f"{prefix}/team/app")["imageDetails"]
    assert [d["imageDigest"] for d in images] == [world.image.top_digest()]
    again = world.pull(f"{prefix}/team/app:v1", tmp_path / "again", world.image)
    assert_same_content(world.image.closure(), again.closure())
    repository = world.ecr.describe_repositories(repositoryNames=[f"{prefix}/team/app"])["repositories"][0]
    # the PULL_THROUGH_CACHE creation template for "token" applied; the others got ECR's defaults
    assert repository["imageTagMutability"] == ("IMMUTABLE" if prefix == "token" else "MUTABLE")
    tags = world.ecr.list_tags_for_resource(resourceArn=repository["repositoryArn"])["tags"]
    assert tags == ([{"Key": "cache", "Value": "token"}] if prefix == "token" else [])
    expected = {"encryptionType": "KMS", "kmsKey": world.key_arn} if prefix == "token" else {"encryptionType": "AES256"}
    assert repository["encryptionConfiguration"] == expected
    if prefix == "token":  # its manifest (pending first, then stored) is sealed under the key, not the service key
        with sqlite3.connect(f"file:{world.soko.data_dir / 'metadata.db'}?mode=ro", uri=True) as db:
            (head,) = db.execute(
                "SELECT substr(m.payload, 1, 5) FROM manifests m JOIN repositories r ON r.id = m.repository_id "
                "WHERE r.name = 'token/team/app'"
            ).fetchone()
        assert head == b"\x00SKK1"


def test_multiarch_index_is_cached_whole(world: World, tmp_path: Path) -> None:
    pulled = world.pull("basic/team/multi:v1", tmp_path / "multi", world.multi, all_images=True)
    assert_same_content(world.multi.closure(), pulled.closure())
    digests = {d["imageDigest"] for d in world.ecr.describe_images(repositoryName="basic/team/multi")["imageDetails"]}
    assert world.multi.top_digest() in digests and len(digests) == 3


def test_rules_api(world: World) -> None:
    rules = world.ecr.describe_pull_through_cache_rules()["pullThroughCacheRules"]
    assert {r["ecrRepositoryPrefix"] for r in rules} >= {"anon", "basic", "token"}
    basic = world.ecr.describe_pull_through_cache_rules(ecrRepositoryPrefixes=["basic"])["pullThroughCacheRules"][0]
    assert basic["credentialArn"].startswith(f"arn:aws:secretsmanager:{SOKO_REGION}:")
    assert basic["upstreamRepositoryPrefix"] == "ROOT"
    assert world.ecr.validate_pull_through_cache_rule(ecrRepositoryPrefix="token")["isValid"] is True
    with pytest.raises(botocore.exceptions.ClientError) as exists:
        world.ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="anon", upstreamRegistryUrl="quay.io")
    assert exists.value.response["Error"]["Code"] == "PullThroughCacheRuleAlreadyExistsException"
    with pytest.raises(botocore.exceptions.ClientError) as missing:
        world.ecr.delete_pull_through_cache_rule(ecrRepositoryPrefix="nope")
    assert missing.value.response["Error"]["Code"] == "PullThroughCacheRuleNotFoundException"
    absent = f"arn:aws:secretsmanager:{SOKO_REGION}:000000000000:secret:ecr-pullthroughcache/absent"
    with pytest.raises(botocore.exceptions.ClientError) as no_secret:
        world.ecr.create_pull_through_cache_rule(
            ecrRepositoryPrefix="other", upstreamRegistryUrl="quay.io", credentialArn=absent
        )
    assert no_secret.value.response["Error"]["Code"] == "SecretNotFoundException"
    with pytest.raises(botocore.exceptions.ClientError) as roles:
        world.ecr.create_pull_through_cache_rule(
            ecrRepositoryPrefix="other",
            upstreamRegistryUrl="quay.io",
            customRoleArn="arn:aws:iam::000000000000:role/x",
        )
    assert roles.value.response["Error"]["Code"] == "UnsupportedOperationException"
    with pytest.raises(botocore.exceptions.ClientError) as bad_url:
        world.ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="other", upstreamRegistryUrl="ftp://x/y")
    assert bad_url.value.response["Error"]["Code"] == "InvalidParameterException"
    # a wrong password: validation says so in the body; the secret's value never appears
    world.sm.create_secret(
        Name="ecr-pullthroughcache/wrong", SecretString=json.dumps({"username": USER, "accessToken": "nope-123"})
    )
    wrong = world.sm.describe_secret(SecretId="ecr-pullthroughcache/wrong")["ARN"]
    world.ecr.create_pull_through_cache_rule(
        ecrRepositoryPrefix="wrong", upstreamRegistryUrl=f"http://{world.basic.host}", credentialArn=wrong
    )
    result = world.ecr.validate_pull_through_cache_rule(ecrRepositoryPrefix="wrong")
    assert result["isValid"] is False and "UpstreamAccessDenied" in result["failure"]
    assert "nope-123" not in json.dumps(result)
    with world.http() as client:
        denied = client.get("/v2/wrong/team/app/manifests/v1")
    assert (denied.status_code == 403 and "UpstreamAccessDenied" in denied.text) or "refused" in denied.text
    updated = world.ecr.update_pull_through_cache_rule(
        ecrRepositoryPrefix="wrong",
        credentialArn=world.sm.describe_secret(SecretId="ecr-pullthroughcache/upstream")["ARN"],
    )
    assert updated["ecrRepositoryPrefix"] == "wrong"
    assert world.ecr.validate_pull_through_cache_rule(ecrRepositoryPrefix="wrong")["isValid"] is True
    deleted = world.ecr.delete_pull_through_cache_rule(ecrRepositoryPrefix="wrong")
    assert deleted["upstreamRegistryUrl"] == f"http://{world.basic.host}"


def test_secrets_manager_subset(world: World) -> None:
    created = world.sm.create_secret(Name="ecr-pullthroughcache/rotating", SecretString="one")
    assert re.fullmatch(
        r"arn:aws:secretsmanager:[\w-]+:\d{12}:secret:ecr-pullthroughcache/rotating-\w{6}", created["ARN"]
    )
    world.sm.put_secret_value(SecretId=created["ARN"], SecretString="two")
    assert world.sm.get_secret_value(SecretId="ecr-pullthroughcache/rotating")["SecretString"] == "two"
    previous = world.sm.get_secret_value(SecretId=created["ARN"], VersionStage="AWSPREVIOUS")
    assert previous["SecretString"] == "one"
    names = [s["Name"] for s in world.sm.list_secrets()["SecretList"]]
    assert "ecr-pullthroughcache/rotating" in names
    for after in ("{}", "[1]", "7", "null"):  # a token that decodes to something other than an ARN
        token = base64.urlsafe_b64encode(f'{{"after": {after}}}'.encode()).decode()
        with pytest.raises(botocore.exceptions.ClientError) as bad:
            world.sm.list_secrets(NextToken=token)
        assert bad.value.response["Error"]["Code"] == "InvalidNextTokenException"
    world.sm.delete_secret(SecretId=created["ARN"], RecoveryWindowInDays=7)
    with pytest.raises(botocore.exceptions.ClientError) as gone:
        world.sm.get_secret_value(SecretId=created["ARN"])
    assert gone.value.response["Error"]["Code"] == "InvalidRequestException"
    assert "DeletedDate" in world.sm.describe_secret(SecretId=created["ARN"])
    world.sm.delete_secret(SecretId=created["ARN"], ForceDeleteWithoutRecovery=True)
    with pytest.raises(botocore.exceptions.ClientError) as missing:
        world.sm.describe_secret(SecretId=created["ARN"])
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(botocore.exceptions.ClientError) as unsupported:
        world.sm.rotate_secret(SecretId="ecr-pullthroughcache/upstream")
    assert unsupported.value.response["Error"]["Code"] == "UnsupportedOperationException"
    # values are encrypted at rest: not in the database file
    database = (world.soko.data_dir / "metadata.db").read_bytes()
    assert PASSWORD.encode() not in database and b"accessToken" not in database


def test_concurrent_first_pulls_fetch_a_blob_once(world: World) -> None:
    layer = world.big.layers()[0]["digest"]
    with world.http() as client:
        assert (
            client.get(
                "/v2/anon/team/big/manifests/v1", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}
            ).status_code
            == 200
        )

        def fetch(_: int) -> str:
            with world.http() as own:
                response = own.get(f"/v2/anon/team/big/blobs/{layer}")
                assert response.status_code == 200, response.text
                return "sha256:" + hashlib.sha256(response.content).hexdigest()

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            assert set(pool.map(fetch, range(4))) == {layer}
    log = world.anon.log_path.read_text(errors="replace")
    assert len(re.findall(rf"GET /v2/team/big/blobs/{layer} ", log)) == 1, log[-3000:]


def test_manifest_pull_prefetches_the_blobs_side_by_side(world: World) -> None:
    """A first manifest pull starts fetching the image's blobs at once: the image is cached whole without the
    client asking for a blob, and a blob asked for meanwhile follows the fetch under way (one upstream GET each)."""
    layers = [os.urandom(3 << 20), os.urandom(1 << 20)]
    with RegistryClient(world.anon.url) as upstream:
        digest, manifest = push_image(upstream, "team/prefetch", "v1", layers)
    first = "sha256:" + hashlib.sha256(layers[0]).hexdigest()
    with world.http() as client:
        got = client.get(
            "/v2/anon/team/prefetch/manifests/v1", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}
        )
        assert got.status_code == 200 and got.content == manifest
        assert client.get(f"/v2/anon/team/prefetch/blobs/{first}").content == layers[0]

    def cached() -> bool:
        return bool(world.ecr.describe_images(repositoryName="anon/team/prefetch")["imageDetails"])

    wait_until(cached, "the prefetch never stored the image", timeout=60)
    images = world.ecr.describe_images(repositoryName="anon/team/prefetch")["imageDetails"]
    assert [i["imageDigest"] for i in images] == [digest]
    log = world.anon.log_path.read_text(errors="replace")
    for blob in json.loads(manifest)["layers"] + [json.loads(manifest)["config"]]:
        assert len(re.findall(rf"GET /v2/team/prefetch/blobs/{blob['digest']} ", log)) == 1, log[-3000:]


def test_range_of_an_uncached_blob(world: World) -> None:
    """A Range GET of a blob the cache lacks is answered 206 with that range while the blob is fetched whole (and
    stored); outside the blob it is 416; once cached, ranges come from storage."""
    layer = os.urandom((2 << 20) + 12345)
    with RegistryClient(world.anon.url) as upstream:
        push_image(upstream, "team/ranged", "v1", [layer])
        push_image(upstream, "team/ranged-far", "v1", [layer[::-1]])
    digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    far = "sha256:" + hashlib.sha256(layer[::-1]).hexdigest()
    url = f"/v2/anon/team/ranged/blobs/{digest}"
    with world.http() as client:
        got = client.get(url, headers={"Range": "bytes=1000-1048575"})
        assert got.status_code == 206, got.text
        assert got.headers["content-range"] == f"bytes 1000-1048575/{len(layer)}"
        assert got.content == layer[1000:1048576]
        bad = client.get(f"/v2/anon/team/ranged-far/blobs/{far}", headers={"Range": f"bytes={len(layer)}-"})
        assert bad.status_code == 416 and bad.headers["content-range"] == f"bytes */{len(layer)}"
        tail = client.get(f"/v2/anon/team/ranged-far/blobs/{far}", headers={"Range": "bytes=-100"})
        assert tail.status_code == 206 and tail.content == layer[::-1][-100:]
        cached = client.get(url, headers={"Range": "bytes=5-9"})
        assert cached.status_code == 206 and cached.content == layer[5:10]
        assert client.get(url).content == layer


def test_pulls_through_the_ecr_api(world: World) -> None:
    """BatchGetImage and GetDownloadUrlForLayer on a cache rule's repository go through the cache as ECR's do."""
    layers = [os.urandom(2 << 20), os.urandom(70_000)]
    with RegistryClient(world.anon.url) as upstream:
        digest, manifest = push_image(upstream, "team/api", "v1", layers)
    got = world.ecr.batch_get_image(repositoryName="anon/team/api", imageIds=[{"imageTag": "v1"}, {"imageTag": "no"}])
    assert [i["imageId"]["imageDigest"] for i in got["images"]] == [digest]
    assert got["images"][0]["imageManifest"].encode() == manifest
    assert [f["failureCode"] for f in got["failures"]] == ["ImageNotFound"]
    for layer in layers:
        layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
        url = world.ecr.get_download_url_for_layer(repositoryName="anon/team/api", layerDigest=layer_digest)
        assert httpx.get(url["downloadUrl"], timeout=60).content == layer  # no Authorization: the URL is
    with pytest.raises(world.ecr.exceptions.LayersNotFoundException):
        world.ecr.get_download_url_for_layer(repositoryName="anon/team/api", layerDigest="sha256:" + "5" * 64)
    wait_until(
        lambda: bool(world.ecr.describe_images(repositoryName="anon/team/api")["imageDetails"]), "never cached", 60
    )

    world.ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="gone", upstreamRegistryUrl="http://127.0.0.1:9")
    down = world.ecr.batch_get_image(repositoryName="gone/team/api", imageIds=[{"imageTag": "v1"}])
    assert [f["failureCode"] for f in down["failures"]] == ["UpstreamUnavailable"] and not down["images"]
    # each sync with the upstream is ECR's "ECR Pull Through Cache Action" event (tx.emit: the events outbox)
    with sqlite3.connect(f"file:{world.soko.data_dir / 'metadata.db'}?mode=ro", uri=True) as db:
        bodies = [json.loads(b) for (b,) in db.execute("SELECT body FROM event_outbox")]
    synced = {
        e["detail"]["repository-name"]: e
        for e in bodies
        if e["detail-type"] == "ECR Pull Through Cache Action" and e["detail"].get("image-tag") == "v1"
    }
    ok, failed = synced["anon/team/api"], synced["gone/team/api"]
    assert ok["source"] == "aws.ecr" and ok["resources"] == [
        f"arn:aws:ecr:{SOKO_REGION}:{ok['account']}:repository/anon/team/api"
    ]
    assert {k: v for k, v in ok["detail"].items() if k != "upstream-registry-url"} == {
        "rule-version": "1",
        "sync-status": "SUCCESS",
        "ecr-repository-prefix": "anon",
        "repository-name": "anon/team/api",
        "image-tag": "v1",
        "image-digest": digest,
    }
    assert failed["detail"]["sync-status"] == "FAILED"
    assert failed["detail"]["failure-code"] == "UpstreamUnavailable" and failed["detail"]["failure-reason"]
    world.sm.create_secret(Name="ecr-pullthroughcache/doomed", SecretString=SECRET)
    arn = world.sm.describe_secret(SecretId="ecr-pullthroughcache/doomed")["ARN"]
    world.ecr.create_pull_through_cache_rule(
        ecrRepositoryPrefix="doomed", upstreamRegistryUrl=f"http://{world.basic.host}", credentialArn=arn
    )
    world.sm.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
    with pytest.raises(world.ecr.exceptions.UnableToGetUpstreamImageException):
        world.ecr.batch_get_image(repositoryName="doomed/team/app", imageIds=[{"imageTag": "v1"}])


def test_upstream_down_serves_the_cache(world: World, tmp_path: Path) -> None:
    root = tmp_path / "flaky"
    flaky = start_upstream(root)
    try:
        world.skopeo.run("copy", "--dest-tls-verify=false", world.image.ref, f"docker://{flaky.host}/team/app:v1")
        world.ecr.create_pull_through_cache_rule(
            ecrRepositoryPrefix="flaky", upstreamRegistryUrl=f"http://{flaky.host}"
        )
        world.pull("flaky/team/app:v1", tmp_path / "first", world.image)
    finally:
        flaky.kill()
    again = world.pull("flaky/team/app:v1", tmp_path / "again", world.image)
    assert_same_content(world.image.closure(), again.closure())
    with world.http() as client:
        missing = client.get("/v2/flaky/team/other/manifests/v1")
    assert missing.status_code == 503
    assert missing.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert "unreachable" in missing.json()["errors"][0]["message"]


def test_hostile_upstream_and_a_cut_blob(world: World) -> None:
    layer = os.urandom(3 << 20)
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = b'{"architecture":"amd64","os":"linux"}'
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps(image_manifest(config, [layer])).encode()
    typed = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    cut = threading.Event()
    cut.set()

    def blob(handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(layer)))
        handler.end_headers()
        if cut.is_set():  # half of it, then the connection dies
            handler.wfile.write(layer[: len(layer) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            handler.connection.shutdown(2)
            return
        handler.wfile.write(layer)

    routes = {
        "/v2/good/manifests/v1": answer(200, manifest, typed),
        f"/v2/good/blobs/{config_digest}": answer(200, config),
        f"/v2/good/blobs/{layer_digest}": blob,
        "/v2/liar/manifests/v1": answer(200, manifest, {**typed, "Docker-Content-Digest": "sha256:" + "1" * 64}),
        "/v2/huge/manifests/v1": answer(200, b"{" + b" " * (5 << 20) + b"}", typed),
        "/v2/loop/manifests/v1": answer(302, b"", {"Location": "/v2/loop/manifests/v1"}),
        "/v2/badindex/manifests/v1": answer(  # a child without a digest: the upstream's failure, not the client's
            200,
            json.dumps(
                {"schemaVersion": 2, "mediaType": INDEX, "manifests": [{"mediaType": INDEX, "size": 1}]}
            ).encode(),
            {"Content-Type": INDEX},
        ),
        f"/v2/liar/blobs/{layer_digest}": answer(200, os.urandom(len(layer))),
        "/v2/": answer(200, b"{}"),
    }
    with hostile_server(routes) as url, world.http() as client:
        world.ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="hostile", upstreamRegistryUrl=url)
        for repo in ("liar", "huge", "loop", "badindex"):
            got = client.get(f"/v2/hostile/{repo}/manifests/v1")
            assert got.status_code == 503, (repo, got.text)
            assert got.json()["errors"][0]["code"] == "UNAVAILABLE"
        # a wrong blob: the client never gets it whole, and its connection is cut at once (not left open until
        # the server's garbage collector runs: a timeout here is that bug)
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(f"/v2/hostile/liar/blobs/{layer_digest}", timeout=15)
        liar = world.ecr.batch_check_layer_availability(repositoryName="hostile/liar", layerDigests=[layer_digest])
        assert not [x for x in liar["layers"] if x["layerAvailability"] == "AVAILABLE"]
        assert client.get("/v2/hostile/good/manifests/v1").status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(f"/v2/hostile/good/blobs/{layer_digest}", timeout=15)
        # nothing half-visible: the blob is not in the repository, the image not stored
        layers = world.ecr.batch_check_layer_availability(repositoryName="hostile/good", layerDigests=[layer_digest])
        assert layers["layers"][0]["layerAvailability"] == "UNAVAILABLE" if layers["layers"] else layers["failures"]
        cut.clear()
        whole = client.get(f"/v2/hostile/good/blobs/{layer_digest}")
        assert whole.status_code == 200 and whole.content == layer
        assert client.get(f"/v2/hostile/good/blobs/{config_digest}").content == config
        images = world.ecr.describe_images(repositoryName="hostile/good")["imageDetails"]
        assert [i["imageDigest"] for i in images] == ["sha256:" + hashlib.sha256(manifest).hexdigest()]


def test_a_pull_that_joins_a_failing_prefetch_fetches_for_itself(world: World) -> None:
    """The manifest's prefetch of the layer is cut by the upstream after this pull joined it but before any byte
    reached the pull: the pull fetches the blob again for itself rather than inherit the prefetch's failure (a
    prefetch started while the upstream failed, still under way when it recovered, failed such pulls: a flake of
    test_hostile_upstream_and_a_cut_blob)."""
    layer = os.urandom(3 << 20)
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = b'{"architecture":"amd64","os":"linux","variant":"prefetch"}'
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps(image_manifest(config, [layer])).encode()
    lock = threading.Lock()
    gets: list[str] = []
    prefetching = threading.Event()
    cut = threading.Event()

    def blob(handler) -> None:
        with lock:
            gets.append(handler.command)
            first = len(gets) == 1
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(layer)))
        handler.end_headers()
        if first:  # the prefetch: it hangs until the pull has joined it, then the connection dies half way
            prefetching.set()
            cut.wait(60)
            handler.wfile.write(layer[: len(layer) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            handler.connection.shutdown(2)
            return
        handler.wfile.write(layer)

    typed = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    routes = {
        "/v2/img/manifests/v1": answer(200, manifest, typed),
        f"/v2/img/blobs/{config_digest}": answer(200, config),
        f"/v2/img/blobs/{layer_digest}": blob,
        "/v2/": answer(200, b"{}"),
    }
    with hostile_server(routes) as url, world.http() as client:
        world.ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="joined", upstreamRegistryUrl=url)
        assert client.get("/v2/joined/img/manifests/v1").status_code == 200  # pending: its blobs' prefetch starts
        assert prefetching.wait(60)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pulled = pool.submit(client.get, f"/v2/joined/img/blobs/{layer_digest}")
            # time for the pull to join the prefetch (not asserted: a pull that comes after the cut fetches for
            # itself all the same, and passes)
            threading.Event().wait(1)
            cut.set()
            got = pulled.result(timeout=60)
        assert got.status_code == 200 and got.content == layer
        assert gets == ["GET", "GET"]
        images = world.ecr.describe_images(repositoryName="joined/img")["imageDetails"]
        assert [i["imageDigest"] for i in images] == ["sha256:" + hashlib.sha256(manifest).hexdigest()]


def reader_client(world: World, name: str) -> httpx.Client:
    """An HTTP client for a new IAM user allowed only to read images (its registry password from
    GetAuthorizationToken)."""
    world.iam.create_user(UserName=name)
    reader = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["ecr:GetAuthorizationToken", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                "Resource": "*",
            }
        ],
    }
    world.iam.put_user_policy(UserName=name, PolicyName="read", PolicyDocument=json.dumps(reader))
    key = world.iam.create_access_key(UserName=name)["AccessKey"]
    ecr = boto3.client(
        "ecr",
        endpoint_url=world.soko.url,
        region_name=SOKO_REGION,
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
    )
    token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    user, _, password = base64.b64decode(token).decode().partition(":")
    return httpx.Client(base_url=world.soko.url, auth=(user, password), timeout=30)


def test_first_pull_needs_import_permission(world: World) -> None:
    iam = world.iam
    with reader_client(world, "puller") as client:
        denied = client.get("/v2/token/team/big/manifests/v1")
        assert denied.status_code == 403 and "ecr:BatchImportUpstreamImage" in denied.text
        importer = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": ["ecr:BatchImportUpstreamImage", "ecr:CreateRepository"], "Resource": "*"}
            ],
        }
        iam.put_user_policy(UserName="puller", PolicyName="import", PolicyDocument=json.dumps(importer))
        assert client.get("/v2/token/team/big/manifests/v1").status_code == 200


def test_terraform_call_sequences(world: World) -> None:
    """What terraform-provider-aws calls for aws_secretsmanager_secret, _secret_version and
    aws_ecr_pull_through_cache_rule: create, read back, update, delete (then reads that must say NotFound)."""
    sm, ecr = world.sm, world.ecr
    # aws_secretsmanager_secret without a value is refused (a secret without a version is not supported):
    with pytest.raises(botocore.exceptions.ClientError) as empty:
        sm.create_secret(Name="ecr-pullthroughcache/tf-empty", Description="terraform")
    assert empty.value.response["Error"]["Code"] == "InvalidParameterException"
    # aws_secretsmanager_secret + _secret_version as one create (secret_string set)
    token = "11111111-2222-3333-4444-555555555555"
    arn = sm.create_secret(Name="ecr-pullthroughcache/tf", SecretString=SECRET, ClientRequestToken=token)["ARN"]
    again = sm.create_secret(Name="ecr-pullthroughcache/tf", SecretString=SECRET, ClientRequestToken=token)
    assert again["ARN"] == arn  # the SDK's retry is idempotent
    described = sm.describe_secret(SecretId=arn)
    assert described["Name"] == "ecr-pullthroughcache/tf" and "DeletedDate" not in described
    assert sm.get_resource_policy(SecretId=arn)["ARN"] == arn
    version = sm.put_secret_value(SecretId=arn, SecretString=SECRET)["VersionId"]
    read = sm.get_secret_value(SecretId=arn, VersionId=version)
    assert read["SecretString"] == SECRET and read["VersionStages"] == ["AWSCURRENT"]
    # aws_ecr_pull_through_cache_rule: create, read (describe by prefix), update the credential, delete
    ecr.create_pull_through_cache_rule(
        ecrRepositoryPrefix="tf", upstreamRegistryUrl=f"http://{world.basic.host}", credentialArn=arn
    )
    rule = ecr.describe_pull_through_cache_rules(ecrRepositoryPrefixes=["tf"])["pullThroughCacheRules"][0]
    assert rule["credentialArn"] == arn and rule["upstreamRegistryUrl"] == f"http://{world.basic.host}"
    ecr.update_pull_through_cache_rule(ecrRepositoryPrefix="tf", credentialArn=arn)
    ecr.delete_pull_through_cache_rule(ecrRepositoryPrefix="tf")
    with pytest.raises(botocore.exceptions.ClientError) as rule_gone:
        ecr.describe_pull_through_cache_rules(ecrRepositoryPrefixes=["tf"])
    assert rule_gone.value.response["Error"]["Code"] == "PullThroughCacheRuleNotFoundException"
    # destroy: DeleteSecret with a recovery window, then reads see it scheduled; force-delete removes it
    sm.delete_secret(SecretId=arn, RecoveryWindowInDays=7)
    assert "DeletedDate" in sm.describe_secret(SecretId=arn)
    sm.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
    with pytest.raises(botocore.exceptions.ClientError) as secret_gone:
        sm.describe_secret(SecretId=arn)
    assert secret_gone.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_an_immutable_cache_repository_keeps_serving_its_tag_when_the_upstream_moves_it(world: World) -> None:
    """The "token" repositories are IMMUTABLE (their creation template): once a tag is cached, a new image the
    upstream puts under it cannot be stored under that tag. Pulls failed from then on (ImageTagAlreadyExists from
    the put, not caught), and a pending new image could never be stored (its fill job failing for good). The cache
    serves the tag it holds."""
    from soko.remote import Credentials

    with RegistryClient(world.token.url, Credentials(USER, PASSWORD)) as upstream:
        first, first_manifest = push_image(upstream, "team/mover", "v1", [os.urandom(40_000)])
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    with world.http() as client:
        got = client.get("/v2/token/team/mover/manifests/v1", headers=accept)
        assert got.status_code == 200 and got.content == first_manifest
        for blob in json.loads(first_manifest)["layers"] + [json.loads(first_manifest)["config"]]:
            assert client.get(f"/v2/token/team/mover/blobs/{blob['digest']}").status_code == 200

        def stored() -> bool:
            images = world.ecr.describe_images(repositoryName="token/team/mover")["imageDetails"]
            return [i["imageDigest"] for i in images] == [first]

        wait_until(stored, "the first image was never stored", timeout=60)
        with RegistryClient(world.token.url, Credentials(USER, PASSWORD)) as upstream:
            push_image(upstream, "team/mover", "v1", [os.urandom(40_000)])
        for _ in range(2):
            again = client.get("/v2/token/team/mover/manifests/v1", headers=accept)
            assert again.status_code == 200, again.text
            assert again.content == first_manifest


def test_a_reader_without_import_permission_pulls_what_is_cached(world: World) -> None:
    """BatchImportUpstreamImage is what a pull needs to bring something in from the upstream; a tag already cached
    is served to a caller allowed only to read (BatchGetImage), even when its upstream check is due (every pull
    here): the check is skipped for that caller instead of refusing the pull (403)."""
    with world.http() as client:
        assert client.get("/v2/anon/team/app/manifests/v1").status_code == 200
    with reader_client(world, "cached-reader") as client:
        got = client.get("/v2/anon/team/app/manifests/v1")
        assert got.status_code == 200, got.text
        assert client.get("/v2/anon/team/never-cached/manifests/v1").status_code == 403
