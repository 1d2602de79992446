"""Three stateless `soko serve` nodes on one PostgreSQL database and one S3 bucket, as behind a load balancer.

The real clients run against the cluster two ways: through a round-robin load balancer (:class:`RoundRobinProxy`:
each connection to the next node; skopeo, the AWS CLI) or with calls deliberately spread over the nodes (boto3:
each call to the next node, and uploads started, continued and completed on different nodes). What one node
writes — a tag, an IAM policy, a deactivated key — is what the other nodes answer with on the very next request:
their caches are invalidated through PostgreSQL LISTEN/NOTIFY.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

import tests.ecr.test_terraform_sequences as terraform
from tests.databases import fresh_database
from tests.s3 import S3Server, rgw  # noqa: F401 - fixture

from .aws_cli import AwsCli
from .layout import ImageRef, assert_same_content
from .round_robin import RoundRobin, RoundRobinProxy
from .servers import E2E_TARGET, SOKO_REGION, RegistryServer, start_soko
from .skopeo import Skopeo
from .test_skopeo_roundtrip import docker_ref, pull, push

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.xdist_group("e2e-registry"),
    pytest.mark.skipif(E2E_TARGET != "soko", reason="a Soko cluster"),
]

ROOT = {"AccessKeyId": "AKIACLUSTERROOT00001", "SecretAccessKey": "cluster-root-secret-0000000000000000000000"}
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SDK = Config(retries={"max_attempts": 1, "mode": "legacy"})  # each call's first answer, as the suite does


@pytest.fixture(scope="module")
def bucket_server(rgw: S3Server) -> S3Server:  # noqa: F811
    """The S3 server the cluster keeps its blobs in: Ceph's radosgw (``moto`` would do for a quick run)."""
    return rgw


@dataclass
class Cluster:
    nodes: list[RegistryServer]
    proxy: RoundRobinProxy
    workdir: Path

    def client(self, service: str, node: int, key: dict[str, str] = ROOT):
        return boto3.client(
            service, endpoint_url=self.nodes[node].url, region_name=SOKO_REGION, config=SDK,
            aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"],
        )

    def round_robin(self, service: str, key: dict[str, str] = ROOT) -> RoundRobin:
        return RoundRobin([self.client(service, i, key) for i in range(len(self.nodes))])

    def http(self, node: int) -> httpx.Client:
        return httpx.Client(base_url=self.nodes[node].url, headers=self.nodes[node].auth_header(), timeout=60)


@pytest.fixture(scope="module")
def cluster(bucket_server: S3Server, tmp_path_factory) -> Iterator[Cluster]:
    bucket = bucket_server.new_bucket("soko-cluster")
    workdir = tmp_path_factory.mktemp("cluster")
    with fresh_database("postgresql", str(workdir)) as database_url:
        env = {  # what every node shares, all from the environment: nothing comes from one node's files
            "SOKO_DATABASE_URL": database_url,
            "SOKO_STORAGE_URL": bucket_server.storage_url(bucket),
            **bucket_server.env,  # the bucket's credentials, through the standard AWS chain
            "SOKO_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
            "SOKO_ROOT_ACCESS_KEY_ID": ROOT["AccessKeyId"],
            "SOKO_ROOT_SECRET_ACCESS_KEY": ROOT["SecretAccessKey"],
        }
        with ThreadPoolExecutor(3) as pool:  # started at once: they race for the migration lock on an empty database
            starting = [pool.submit(start_soko, workdir / f"node-{i + 1}", env=env) for i in range(3)]
            nodes = [future.result() for future in starting]
        proxy = RoundRobinProxy([node.host for node in nodes])
        try:
            yield Cluster(nodes, proxy, workdir)
        finally:
            proxy.close()
            for node in nodes:
                node.stop()


def test_skopeo_push_and_pull_through_a_round_robin_balancer(cluster: Cluster, images: dict[str, ImageRef],
                                                             tmp_path: Path) -> None:
    """skopeo sees one registry; its connections land on all three nodes (the proxy rotates per connection)."""
    skopeo = Skopeo.create(tmp_path / "skopeo-home")
    skopeo.add_registry(cluster.proxy.host, cluster.nodes[0].credentials)  # one node's token is good on all
    proxied = RegistryServer("soko", cluster.proxy.host, tmp_path, tmp_path / "none.log", cluster.nodes[0].proc)
    for name in ("many-layers", "multiarch"):
        image = images[name]
        push(skopeo, image, docker_ref(proxied, f"cluster/{name}"))
        assert skopeo.inspect_raw(docker_ref(proxied, f"cluster/{name}")) == image.top_manifest()
        pulled = pull(skopeo, docker_ref(proxied, f"cluster/{name}"), image, tmp_path / f"pulled-{name}")
        assert pulled.top_manifest() == image.top_manifest()
        assert_same_content(image.closure(), pulled.closure())
    assert set(cluster.proxy.connections) == {node.host for node in cluster.nodes}, cluster.proxy.connections
    for node in cluster.nodes:  # blobs live in the bucket only, never on a node's disk
        assert not (node.data_dir / "storage").exists()


def _upload_path(location: str) -> str:
    return location if location.startswith("/") else httpx.URL(location).raw_path.decode()


@pytest.mark.parametrize("sizes", [(9 << 20, 3 << 20, 6 << 20), (1 << 20, 1 << 20, 1 << 20)],
                         ids=["chunks-spanning-parts", "chunks-smaller-than-a-part"])
def test_upload_started_continued_and_completed_on_three_nodes(cluster: Cluster, sizes: tuple[int, ...]) -> None:
    chunks = [os.urandom(size) for size in sizes]
    blob = b"".join(chunks)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    clients = [cluster.http(i) for i in range(3)]
    try:
        started = clients[0].post("/v2/cluster/spread/blobs/uploads/")
        assert started.status_code == 202, started.text
        path = _upload_path(started.headers["Location"])
        offset = 0
        for node, chunk in zip((0, 1), chunks[:2], strict=True):  # PATCH on node 1, then node 2
            if offset:  # each node sees the session and its offset
                status = clients[node].get(path)
                assert status.status_code == 204 and status.headers["Range"] == f"0-{offset - 1}"
            span = f"{offset}-{offset + len(chunk) - 1}"
            r = clients[node].patch(path, content=chunk, headers={"Content-Range": span})
            assert r.status_code == 202, r.text
            offset += len(chunk)
        last = chunks[2]  # completed on node 3 with the last chunk in the PUT
        r = clients[2].put(path, params={"digest": digest}, content=last,
                           headers={"Content-Range": f"{offset}-{offset + len(last) - 1}"})
        assert r.status_code == 201, r.text
        for client in clients:
            head = client.head(f"/v2/cluster/spread/blobs/{digest}")
            assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(blob)
            got = client.get(f"/v2/cluster/spread/blobs/{digest}")  # decrypted by whichever node answers
            assert got.status_code == 200 and got.content == blob
    finally:
        for client in clients:
            client.close()


def _layer_upload(ecr: RoundRobin, repository: str, data: bytes) -> str:
    """ECR's layer API, each call on the next node: initiate, parts, complete."""
    upload_id = ecr.initiate_layer_upload(repositoryName=repository)["uploadId"]
    split = 5 << 20 if len(data) > 5 << 20 else len(data)  # ECR: every part but the last is at least 5 MiB
    for first, part in ((0, data[:split]), (split, data[split:])):
        if not part:
            continue
        ecr.upload_layer_part(repositoryName=repository, uploadId=upload_id, partFirstByte=first,
                              partLastByte=first + len(part) - 1, layerPartBlob=part)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    done = ecr.complete_layer_upload(repositoryName=repository, uploadId=upload_id, layerDigests=[digest])
    assert done["layerDigest"] == digest
    return digest


def _manifest(ecr: RoundRobin, repository: str, seed: str) -> tuple[str, str]:
    """Uploads a config and a layer through the ECR API; the manifest's text and digest."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    layer = os.urandom((5 << 20) + (64 << 10))  # two parts
    descriptors = [
        {"mediaType": media_type, "digest": _layer_upload(ecr, repository, data), "size": len(data)}
        for media_type, data in (("application/vnd.oci.image.config.v1+json", config),
                                 ("application/vnd.oci.image.layer.v1.tar+gzip", layer))
    ]
    text = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descriptors[0],
                       "layers": descriptors[1:]})
    return text, "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def test_boto3_push_and_pull_with_every_call_on_the_next_node(cluster: Cluster) -> None:
    ecr = cluster.round_robin("ecr")
    ecr.create_repository(repositoryName="cluster/boto3")
    text, digest = _manifest(ecr, "cluster/boto3", "boto3")
    ecr.put_image(repositoryName="cluster/boto3", imageManifest=text, imageTag="v1")
    for _ in range(3):  # read back on every node
        got = ecr.batch_get_image(repositoryName="cluster/boto3", imageIds=[{"imageTag": "v1"}])
        assert got["images"][0]["imageManifest"] == text and got["images"][0]["imageId"]["imageDigest"] == digest
        details = ecr.describe_images(repositoryName="cluster/boto3")["imageDetails"]
        assert [d["imageTags"] for d in details] == [["v1"]]
    layer = json.loads(text)["layers"][0]
    for _ in range(3):
        url = ecr.get_download_url_for_layer(repositoryName="cluster/boto3", layerDigest=layer["digest"])["downloadUrl"]
        data = httpx.get(url, timeout=60, follow_redirects=True).content
        assert "sha256:" + hashlib.sha256(data).hexdigest() == layer["digest"]
    assert {node for _, node in ecr.calls} == {0, 1, 2}


def _put_tag(client: httpx.Client, repository: str, tag: str, manifest: str) -> None:
    r = client.put(f"/v2/{repository}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text


#: how long another node may answer as before a write it did not serve: PostgreSQL delivers the NOTIFY to each
#: node's listener after the commit (soko.meta.changes); measured here at up to 90 ms under heavy load
CROSS_NODE_BOUND = 2.0


def _lag(read: Callable[[], object], expected: object) -> float:
    """Seconds until ``read()`` answers ``expected`` (0.0: the very first read did); fails past the bound."""
    start = time.monotonic()
    if read() == expected:
        return 0.0
    while (got := read()) != expected:
        assert time.monotonic() - start < CROSS_NODE_BOUND, f"still {got!r}, not {expected!r}"
        time.sleep(0.001)
    return time.monotonic() - start


def test_a_tag_moved_on_one_node_is_read_on_the_others_at_once(cluster: Cluster) -> None:
    """The node that took the write answers with it at once; the others as soon as PostgreSQL has delivered
    the notification to them (the lags are printed: almost always none)."""
    ecr = cluster.round_robin("ecr")
    manifests = [_manifest(ecr, "cluster/tags", f"tag-{i}") for i in range(2)]
    clients = [cluster.http(i) for i in range(3)]
    lags: list[float] = []

    def digest_on(node: int, method: str) -> Callable[[], object]:
        def read() -> object:
            r = clients[node].request(method, "/v2/cluster/tags/manifests/latest", headers={"Accept": OCI_MANIFEST})
            return r.status_code, r.headers.get("Docker-Content-Digest")

        return read

    try:
        for round_ in range(12):  # the tag moves back and forth, written on each node in turn
            text, digest = manifests[round_ % 2]
            writer = round_ % 3
            _put_tag(clients[writer], "cluster/tags", "latest", text)
            assert digest_on(writer, "GET")() == (200, digest)  # read-your-writes on the same node: exact
            for reader in range(3):  # every node has the old answer cached from the round before
                for method in ("HEAD", "GET"):
                    lags.append(_lag(digest_on(reader, method), (200, digest)))
            described = ecr.describe_images(repositoryName="cluster/tags", imageIds=[{"imageTag": "latest"}])
            assert described["imageDetails"][0]["imageDigest"] == digest
        deleted = clients[0].delete(f"/v2/cluster/tags/manifests/{manifests[1][1]}")
        assert deleted.status_code == 202, deleted.text
        for client in clients[1:]:
            gone = lambda c=client: c.get(f"/v2/cluster/tags/manifests/{manifests[1][1]}").status_code  # noqa: E731
            lags.append(_lag(gone, 404))
    finally:
        for client in clients:
            client.close()
    stale = sorted(lag for lag in lags if lag)
    print(f"cross-node reads: {len(lags)}, stale at first: {len(stale)}, "
          f"lags (ms): {[round(x * 1e3, 1) for x in stale]}")


def _denied(call) -> str:
    try:
        call()
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    return "allowed"


def test_an_iam_change_on_one_node_is_honoured_on_the_others(cluster: Cluster) -> None:
    iam = [cluster.client("iam", i) for i in range(3)]
    iam[0].create_user(UserName="cluster-reader")
    key = iam[1].create_access_key(UserName="cluster-reader")["AccessKey"]
    allow = {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "ecr:DescribeRepositories", "Resource": "*"}]}
    iam[2].put_user_policy(UserName="cluster-reader", PolicyName="read", PolicyDocument=json.dumps(allow))
    as_user = [cluster.client("ecr", i, key) for i in range(3)]
    for ecr in as_user:  # allowed everywhere: each node has now cached the key and the decision
        _lag(lambda e=ecr: _denied(e.describe_repositories), "allowed")
    deny = {"Version": "2012-10-17",
            "Statement": [{"Effect": "Deny", "Action": "ecr:DescribeRepositories", "Resource": "*"}]}
    iam[1].put_user_policy(UserName="cluster-reader", PolicyName="deny", PolicyDocument=json.dumps(deny))
    assert _denied(as_user[1].describe_repositories) == "AccessDeniedException"  # the writing node: at once
    for ecr in as_user:  # the others: once the notification has reached them (see CROSS_NODE_BOUND)
        _lag(lambda e=ecr: _denied(e.describe_repositories), "AccessDeniedException")
    iam[1].delete_user_policy(UserName="cluster-reader", PolicyName="deny")
    for ecr in as_user:
        _lag(lambda e=ecr: _denied(e.describe_repositories), "allowed")
    iam[2].update_access_key(UserName="cluster-reader", AccessKeyId=key["AccessKeyId"], Status="Inactive")
    for ecr in as_user:
        _lag(lambda e=ecr: _denied(e.describe_repositories), "UnrecognizedClientException")


def test_aws_cli_through_a_round_robin_balancer(cluster: Cluster, tmp_path: Path) -> None:
    """Each `aws` run is a new connection, so consecutive commands land on consecutive nodes."""
    aws = AwsCli.for_key(cluster.proxy.url, ROOT, tmp_path / "home")
    before = sum(cluster.proxy.connections.values())
    created = aws.json("ecr", "create-repository", "--repository-name", "cluster/cli",
                       "--image-tag-mutability", "IMMUTABLE")["repository"]
    assert created["imageTagMutability"] == "IMMUTABLE"
    for _ in range(3):
        repos = aws.json("ecr", "describe-repositories", "--repository-names", "cluster/cli")["repositories"]
        assert repos[0]["repositoryArn"] == created["repositoryArn"] and repos[0]["imageTagMutability"] == "IMMUTABLE"
    aws.run("ecr", "put-image-tag-mutability", "--repository-name", "cluster/cli", "--image-tag-mutability", "MUTABLE")
    for _ in range(3):
        repos = aws.json("ecr", "describe-repositories", "--repository-names", "cluster/cli")["repositories"]
        assert repos[0]["imageTagMutability"] == "MUTABLE"
    password = aws.login_password()
    for node in cluster.nodes:  # one login, good on every node
        r = httpx.get(f"{node.url}/v2/", auth=("AWS", password), timeout=10)
        assert r.status_code == 200, r.text
    aws.run("ecr", "delete-repository", "--repository-name", "cluster/cli")
    for _ in range(3):
        gone = aws.run("ecr", "describe-repositories", "--repository-names", "cluster/cli", check=False)
        assert gone.returncode != 0 and "RepositoryNotFoundException" in gone.stderr
    assert sum(cluster.proxy.connections.values()) - before >= 9


@pytest.mark.parametrize("sequence", [name for name in vars(terraform) if name.startswith("test_aws_ecr_")])
def test_terraform_call_sequences_with_every_call_on_the_next_node(cluster: Cluster, sequence: str) -> None:
    """The provider's create, read-after-write, update, delete and NotFound polling, each call on another node."""
    getattr(terraform, sequence)(cluster.round_robin("ecr"))


def test_terraform_lifecycle_policy_with_every_call_on_the_next_node(cluster: Cluster) -> None:
    ecr = cluster.round_robin("ecr")
    ecr.create_repository(repositoryName="tf/lifecycle")
    policy = {"rules": [{"rulePriority": 1, "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed",
                                                           "countUnit": "days", "countNumber": 14},
                         "action": {"type": "expire"}}]}
    ecr.put_lifecycle_policy(repositoryName="tf/lifecycle", lifecyclePolicyText=json.dumps(policy))
    for _ in range(3):
        got = ecr.get_lifecycle_policy(repositoryName="tf/lifecycle")
        assert json.loads(got["lifecyclePolicyText"]) == policy
    ecr.delete_lifecycle_policy(repositoryName="tf/lifecycle")
    for _ in range(3):
        assert _denied(lambda: ecr.get_lifecycle_policy(repositoryName="tf/lifecycle")) == (
            "LifecyclePolicyNotFoundException")
    ecr.delete_repository(repositoryName="tf/lifecycle", force=True)
