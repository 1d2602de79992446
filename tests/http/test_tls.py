"""TLS files are checked before use; X-Forwarded-* counts only from trusted proxies; the Basic realm names the
scheme actually served (oras-py follows it)."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from soko.config import load_settings
from soko.http.forwarded import TrustedProxies
from soko.http.messages import Request
from soko.http.tls import TlsError, TlsFiles
from tests.tls_certs import make_pki


def test_tls_files_refuse_a_world_readable_key(tmp_path):
    pki = make_pki(tmp_path)
    files = TlsFiles(str(pki.cert), str(pki.key))
    files.check()
    os.chmod(pki.key, 0o640)  # group-readable (Debian's ssl-cert group) is fine
    files.check()
    os.chmod(pki.key, 0o644)
    with pytest.raises(TlsError, match=f"readable by every user.*chmod 600 {pki.key}"):
        files.check()


def test_tls_files_refuse_a_certificate_that_does_not_match_the_key(tmp_path):
    pki, other = make_pki(tmp_path / "a"), make_pki(tmp_path / "b")
    with pytest.raises(TlsError, match="must match the key"):
        TlsFiles(str(pki.cert), str(other.key)).check()
    with pytest.raises(TlsError, match="cannot read"):
        TlsFiles(str(tmp_path / "missing.crt"), str(pki.key)).check()


def test_tls_needs_both_files():
    with pytest.raises(TlsError, match="both tls_cert and tls_key"):
        TlsFiles.from_settings(load_settings(overrides={"tls_cert": "/x.crt"}, env={}))
    assert TlsFiles.from_settings(load_settings(env={})) is None
    env = {"SOKO_TLS_CERT": "a.crt", "SOKO_TLS_KEY": "a.key"}
    files = TlsFiles.from_settings(load_settings(env=env))
    assert files is not None and files.cert == os.path.abspath("a.crt") and files.key == os.path.abspath("a.key")


def test_serve_refuses_to_start_with_a_world_readable_key(tmp_path):
    pki = make_pki(tmp_path / "pki")
    os.chmod(pki.key, 0o644)
    argv = [sys.executable, "-m", "soko", "serve", "--data-dir", str(tmp_path / "data"), "--listen", "127.0.0.1:0",
            "--tls-cert", str(pki.cert), "--tls-key", str(pki.key)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOKO_")}
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert result.returncode == 2, result.stderr
    assert f"chmod 600 {pki.key}" in result.stderr


def request(client: str, headers: dict[str, str]) -> Request:
    return Request("GET", "/v2/", "", {k.lower(): v for k, v in headers.items()}, client, "10.0.0.1:5000", "http",
                   None)


def test_forwarded_headers_count_only_from_trusted_proxies():
    proxies = TrustedProxies(["10.0.0.0/8", "::1/128"])
    forwarded = {"Host": "soko.internal:5000", "X-Forwarded-Proto": "https",
                 "X-Forwarded-Host": "registry.example.com", "X-Forwarded-For": "203.0.113.9, 10.1.1.1"}
    trusted = request("10.2.2.2:40000", forwarded)
    proxies.apply(trusted)
    assert (trusted.scheme, trusted.secure, trusted.host) == ("https", True, "registry.example.com")
    assert trusted.client == "203.0.113.9:0"  # the rightmost address that is not a trusted proxy
    stranger = request("198.51.100.7:40000", forwarded)
    proxies.apply(stranger)
    assert (stranger.scheme, stranger.host, stranger.client) == ("http", "soko.internal:5000", "198.51.100.7:40000")


def test_forwarded_for_cannot_be_chosen_by_the_client():
    proxies = TrustedProxies(["10.0.0.0/8"])
    # the client sent "X-Forwarded-For: 10.9.9.9" itself; the proxy appended the address it saw
    spoofed = request("10.2.2.2:1", {"X-Forwarded-For": "10.9.9.9, 198.51.100.7"})
    proxies.apply(spoofed)
    assert spoofed.client == "198.51.100.7:0"
    v6 = request("10.2.2.2:1", {"X-Forwarded-For": "2001:db8::1"})
    proxies.apply(v6)
    assert v6.client == "[2001:db8::1]:0"
    garbage = request("10.2.2.2:1", {"X-Forwarded-For": "nonsense", "X-Forwarded-Proto": "gopher"})
    proxies.apply(garbage)
    assert (garbage.client, garbage.scheme) == ("10.2.2.2:1", "http")


def test_trusted_proxies_must_be_cidrs():
    with pytest.raises(ValueError, match="not a CIDR"):
        TrustedProxies(["10.0.0.0/8", "proxy.example.com"])


def test_realm_names_the_scheme_served(server):
    r = httpx.get(f"{server.url}/v2/", headers={"X-Forwarded-Proto": "https"})  # from an untrusted peer: ignored
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == f'Basic realm="http://{server.host}/",service="ecr.amazonaws.com"'


class TestBehindAProxy:
    @pytest.fixture
    def settings(self, settings):
        settings.trusted_proxies = ["127.0.0.1/32"]  # the test client plays the proxy
        return settings

    def test_scheme_and_host_from_the_proxy(self, server):
        headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "registry.example.com"}
        r = httpx.get(f"{server.url}/v2/", headers=headers)
        assert r.headers["WWW-Authenticate"] == 'Basic realm="https://registry.example.com/",service="ecr.amazonaws.com"'

    def test_account_host_from_the_proxy(self, server, aws):
        key, secret = server.identity.credentials.create_account("111122223333")
        aws("ecr", key_id=key, secret=secret).create_repository(repositoryName="b/app")
        headers = {**server.basic_auth, "X-Forwarded-Host": "111122223333.dkr.ecr.us-east-1.localhost"}
        # the default account's root, routed to B's registry by the forwarded host: B has not shared it
        r = httpx.get(f"{server.url}/v2/b/app/tags/list", headers=headers)
        assert r.status_code == 403, r.text

    def test_sigv4_covers_the_host_the_client_signed_not_the_forwarded_one(self, server, aws):
        """botocore signs the Host it sends (the proxy's address); a proxy passes Host through and adds
        X-Forwarded-Host after the signature was made. The signature is checked against Host; the forwarded host
        only changes the URLs handed back."""

        def forwarded(request, **_):  # what the proxy adds on its way, after the client signed
            request.headers["X-Forwarded-Host"] = "registry.example.com"

        ecr = aws("ecr")
        ecr.meta.events.register("before-send", forwarded)
        data = ecr.get_authorization_token()["authorizationData"][0]
        assert data["proxyEndpoint"] == "http://registry.example.com"
        assert ecr.describe_repositories()["repositories"] == []

    def test_a_proxy_that_rewrites_host_breaks_signatures(self, server, aws):
        """The client signed registry.example.com; the request arrives with another Host and the signed one in
        X-Forwarded-Host (nginx's default ``proxy_set_header Host $proxy_host``): refused, the proxy must keep Host."""
        import botocore.exceptions

        ecr = aws("ecr")
        ecr.meta.events.register("before-sign", lambda request, **_: _set_host(request, "registry.example.com"))
        ecr.meta.events.register("before-send", lambda request, **_: _set_host(request, server.host, forwarded=True))
        with pytest.raises(botocore.exceptions.ClientError) as info:
            ecr.describe_repositories()
        assert info.value.response["Error"]["Code"] == "InvalidSignatureException"


def _set_host(request, host: str, forwarded: bool = False) -> None:
    if forwarded:
        request.headers["X-Forwarded-Host"] = request.headers["Host"]
    del request.headers["Host"]
    request.headers["Host"] = host
