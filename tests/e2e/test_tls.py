"""TLS end to end: ``soko serve --tls-cert --tls-key`` with a CA and server certificate this test makes, used by
skopeo (verifying the certificate: no --tls-verify=false), the AWS CLI (--ca-bundle) and boto3 (verify=CA); HTTP/2
by ALPN, with the host taken from :authority for routing and SigV4 (curl, which speaks both); and the
certificate reloaded without a restart when its files are replaced."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from tests.tls_certs import Pki, make_pki

from .aws_cli import AwsCli
from .conftest import _require
from .images import build_image
from .layout import ImageRef, assert_same_content
from .servers import E2E_TARGET, RegistryServer, soko_root_key, start_soko
from .skopeo import Skopeo

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(E2E_TARGET != "soko", reason="Soko's own TLS listener"),
]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> ImageRef:
    _require("umoci", "skopeo")
    return build_image(tmp_path_factory.mktemp("tls-images") / "oci", "small", "tls", [32 * 1024])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[RegistryServer]:
    server = start_soko(tmp_path_factory.mktemp("tls") / "data", tls=pki)
    try:
        yield server
    finally:
        code = server.stop()
    assert code == 0, f"soko exited with {code} after SIGTERM\n{server.log_tail()}"


def https_host(server: RegistryServer) -> str:
    return f"localhost:{server.host.rsplit(':', 1)[1]}"  # a name the certificate holds


def test_skopeo_and_aws_cli_over_tls(server: RegistryServer, pki: Pki, image: ImageRef, tmp_path: Path) -> None:
    host = https_host(server)
    aws = AwsCli.for_key(f"https://{host}", soko_root_key(server.data_dir), tmp_path / "aws", ca_bundle=pki.ca)
    repo = aws.json("ecr", "create-repository", "--repository-name", "tls/app")["repository"]
    assert repo["repositoryUri"] == f"{host}/tls/app"

    skopeo = Skopeo.create(tmp_path / "skopeo", {host: ("AWS", aws.login_password())})
    certs = tmp_path / "certs.d"
    certs.mkdir()
    shutil.copy(pki.ca, certs / "ca.crt")  # skopeo trusts *.crt in a cert dir as CAs
    auth = ["--authfile", str(skopeo.authfile)]
    skopeo.run("copy", *auth, "--dest-cert-dir", str(certs), image.ref, f"docker://{host}/tls/app:v1")
    pulled = image.with_path(tmp_path / "pulled")
    skopeo.run("copy", *auth, "--src-cert-dir", str(certs), f"docker://{host}/tls/app:v1", pulled.ref)
    assert pulled.top_manifest() == image.top_manifest()
    assert_same_content(image.closure(), pulled.closure())

    # without the CA, the certificate is refused (it really is verified)
    untrusted = skopeo.run("inspect", *auth, f"docker://{host}/tls/app:v1", check=False)
    assert untrusted.returncode != 0 and "certificate" in untrusted.stderr, untrusted.stderr[-2000:]


def test_boto3_over_tls(server: RegistryServer, pki: Pki) -> None:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import SSLError

    key = soko_root_key(server.data_dir)
    host = https_host(server)

    def client(service: str, verify: str | bool):
        return boto3.client(service, endpoint_url=f"https://{host}", region_name="us-east-1", verify=verify,
                            aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"],
                            config=Config(retries={"max_attempts": 1}))

    assert client("sts", str(pki.ca)).get_caller_identity()["Account"] == "000000000000"
    ecr = client("ecr", str(pki.ca))
    ecr.create_repository(repositoryName="boto/app")
    assert "boto/app" in [r["repositoryName"] for r in ecr.describe_repositories()["repositories"]]
    token = ecr.get_authorization_token()["authorizationData"][0]
    assert token["proxyEndpoint"] == f"https://{host}"  # the scheme served
    with pytest.raises(SSLError):
        client("ecr", True).describe_repositories()  # the system's CAs do not know ours


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, text=True, timeout=60, check=False)


def test_http2_routes_and_signs_by_authority(server: RegistryServer, pki: Pki) -> None:
    """HTTP/2 has no Host header: the realm, the account routing and SigV4 use :authority."""
    _require("curl")
    host = https_host(server)
    ping = curl("--http2", "--cacert", str(pki.ca), "-o", "/dev/null", "-D", "-", f"https://{host}/v2/")
    assert ping.stdout.startswith("HTTP/2 401"), ping.stdout + ping.stderr
    assert f'realm="https://{host}/"' in ping.stdout  # the scheme served, the host addressed
    key = soko_root_key(server.data_dir)
    signed = curl(
        "--http2", "--cacert", str(pki.ca), "--aws-sigv4", "aws:amz:us-east-1:ecr",
        "--user", f"{key['AccessKeyId']}:{key['SecretAccessKey']}",
        "-H", "X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.DescribeRegistry",
        "-H", "Content-Type: application/x-amz-json-1.1", "-d", "{}", "-w", "\n%{http_version}",
        f"https://{host}/",
    )
    body, _, version = signed.stdout.rpartition("\n")
    assert version == "2", signed.stdout + signed.stderr
    assert json.loads(body)["registryId"] == "000000000000", body
    plain = curl("--http1.1", "-o", "/dev/null", "-w", "%{http_code}", f"http://{server.host}/v2/")
    assert plain.returncode != 0, plain.stdout  # plain HTTP is not served on the TLS port


def served_serial(host: str, ca: Path) -> int:
    context = ssl.create_default_context(cafile=str(ca))
    name, port = host.rsplit(":", 1)
    with socket.create_connection((name, int(port)), timeout=10) as raw, context.wrap_socket(
        raw, server_hostname=name
    ) as tls:
        der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


def test_certificate_reloads_without_restart(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    server = start_soko(tmp_path / "data", tls=pki, env={"SOKO_TLS_RELOAD_INTERVAL": "0.2"})
    try:
        host = https_host(server)
        first = served_serial(host, pki.ca)
        renewed = pki.reissue("soko test server, renewed")
        deadline = time.monotonic() + 10
        while served_serial(host, pki.ca) != renewed.serial_number:
            assert time.monotonic() < deadline, f"still serving serial {first}\n{server.log_tail()}"
            time.sleep(0.3)
        assert server.proc.poll() is None  # the same process, never restarted
        assert "reloaded the TLS certificate" in server.log_tail()
    finally:
        assert server.stop() == 0, server.log_tail()


def test_large_streamed_bodies_over_http2(tmp_path: Path) -> None:
    """A blob decrypted as it streams (plaintext cache off), 4 MiB and more: sent from a pipe (soko.http.piped),
    whole and exact over HTTP/2, a range too."""
    _require("curl")
    pki = make_pki(tmp_path / "pki")
    server = start_soko(tmp_path / "data", tls=pki, env={"SOKO_PLAINTEXT_CACHE_BYTES": "0"})
    try:
        host = https_host(server)
        data = os.urandom(12 << 20)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blob = tmp_path / "blob"
        blob.write_bytes(data)
        auth = [arg for key, value in server.auth_header().items() for arg in ("-H", f"{key}: {value}")]
        pushed = curl("--cacert", str(pki.ca), *auth, "-o", "/dev/null", "-w", "%{http_code}", "--data-binary",
                      f"@{blob}", "-H", "Content-Type: application/octet-stream",
                      f"https://{host}/v2/big/blobs/uploads/?digest={digest}")
        assert pushed.stdout == "201", pushed.stdout + pushed.stderr
        for extra, want in (([], data), (["-H", "Range: bytes=100-"], data[100:])):
            out = tmp_path / "out"
            got = curl("--http2", "--cacert", str(pki.ca), *auth, *extra, "-o", str(out), "-w", "%{http_version}",
                       f"https://{host}/v2/big/blobs/{digest}")
            assert got.stdout == "2", got.stdout + got.stderr
            assert out.read_bytes() == want
    finally:
        assert server.stop() == 0, server.log_tail()
