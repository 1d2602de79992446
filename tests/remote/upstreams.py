"""Real upstream registries on loopback for the remote client and the pull-through cache: Distribution
(Debian's ``docker-registry``) anonymous, behind htpasswd Basic auth, or behind a Bearer token realm served by a
small real token server (ES256 JWTs with an ``x5c`` chain, as Distribution's ``token`` auth verifies them); and a
hostile server that answers with wrong digests, oversized manifests, endless bodies and redirect loops."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from soko.remote import Credentials, RegistryClient
from tests.e2e.servers import DISTRIBUTION_BIN, RegistryServer, _spawn, distribution_config, free_port

USER, PASSWORD = "puller", "s3cret-Pa55"
SERVICE, ISSUER = "test-registry", "test-token-issuer"


def bcrypt_htpasswd(user: str, password: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # libxcrypt's bcrypt: what Distribution's htpasswd file needs

        return f"{user}:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))}\n"


def start_upstream(
    root: Path,
    auth: str | None = None,
    *,
    token_realm: str | None = None,
    cert: Path | None = None,
    proxy: str | None = None,
    access_log: bool = False,
) -> RegistryServer:
    """Distribution on a free port: ``auth`` None (anonymous), "htpasswd" or "token"; ``proxy`` = proxy.remoteurl."""
    root.mkdir(parents=True, exist_ok=True)
    block = ""
    if auth == "htpasswd":
        (root.parent / f"{root.name}.htpasswd").write_text(bcrypt_htpasswd(USER, PASSWORD))
        block = f"auth:\n  htpasswd:\n    realm: basic-realm\n    path: {root.parent / f'{root.name}.htpasswd'}\n"
    elif auth == "token":
        assert token_realm and cert
        block = (
            f"auth:\n  token:\n    realm: {token_realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n"
            f"    rootcertbundle: {cert}\n"
        )
    if proxy:
        block += f"proxy:\n  remoteurl: {proxy}\n"
    port = free_port()
    host = f"127.0.0.1:{port}"
    config = root.parent / f"{root.name}.yml"
    config.write_text(distribution_config(root, host, access_log=access_log) + block)
    server = _spawn(
        "distribution", [DISTRIBUTION_BIN, "serve", str(config)], host, root, root.parent / f"{root.name}.log"
    )
    server.credentials = (USER, PASSWORD) if auth == "htpasswd" else None
    if auth == "token":
        server.credentials = None  # wait_ready accepts the 401
    server.wait_ready()
    return server


class TokenServer:
    """A Docker/Distribution token realm: GET /token?service=…&scope=… with Basic credentials → {"token": JWT}."""

    def __init__(self, directory: Path, credentials: tuple[str, str] = (USER, PASSWORD)) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "token-signer")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path = directory / "token-signer.pem"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.credentials = credentials
        self.issued = 0
        self.refused = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                from urllib.parse import parse_qs, urlsplit

                query = parse_qs(urlsplit(self.path).query)
                expected = "Basic " + base64.b64encode(":".join(outer.credentials).encode()).decode()
                if self.headers.get("Authorization") != expected:
                    outer.refused += 1
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                access = []
                for scope in query.get("scope", []):
                    kind, _, rest = scope.partition(":")
                    name, _, actions = rest.rpartition(":")
                    access.append({"type": kind, "name": name, "actions": actions.split(",")})
                token = outer.sign(query.get("service", [""])[0], access)
                outer.issued += 1
                body = json.dumps({"token": token, "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/token"

    def sign(self, audience: str, access: list[dict]) -> str:
        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        der = self.cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(der).decode()]}
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": USER,
            "aud": audience,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "access": access,
        }
        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def push_image(client: RegistryClient, repository: str, tag: str, layers: list[bytes]) -> tuple[str, bytes]:
    """Push an OCI image of these layers (and a small config) with the remote client; its digest and manifest."""
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "seed": hashlib.sha256(b"".join(layers)).hexdigest(),
        }
    ).encode()
    descriptors = []
    for blob, media_type in [(config, "application/vnd.oci.image.config.v1+json")] + [
        (layer, "application/vnd.oci.image.layer.v1.tar") for layer in layers
    ]:
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        if not client.blob_exists(repository, digest):
            client.push_blob(repository, digest, blob, len(blob))
        descriptors.append({"mediaType": media_type, "digest": digest, "size": len(blob)})
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": descriptors[0],
            "layers": descriptors[1:],
        }
    ).encode()
    digest = client.put_manifest(repository, tag, manifest, "application/vnd.oci.image.manifest.v1+json")
    return digest, manifest


Route = Callable[[BaseHTTPRequestHandler], None]


@contextmanager
def hostile_server(routes: dict[str, Route]) -> Iterator[str]:
    """An HTTP server answering each path (exact, else longest prefix) with its route; its base URL."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _route(self) -> None:
            path = self.path.split("?")[0]
            route = routes.get(path) or next(
                (routes[p] for p in sorted(routes, key=len, reverse=True) if path.startswith(p)), None
            )
            if route is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            try:
                route(self)
            except (BrokenPipeError, ConnectionResetError):
                pass

        do_GET = do_HEAD = _route

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def answer(status: int, body: bytes = b"", headers: dict[str, str] | None = None):
    """A route answering ``status`` with ``body`` and ``headers`` (no body on HEAD)."""

    def route(handler) -> None:
        handler.send_response(status)
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)

    return route


def credentials() -> Credentials:
    return Credentials(USER, PASSWORD)
