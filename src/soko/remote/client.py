"""An OCI Distribution client for talking to other registries: pull (manifests, streamed blobs) and push.

Auth as Distribution, Docker Hub, GHCR and Soko answer it: anonymous, ``Basic`` (credentials sent after a 401 that
asks for them), and ``Bearer`` token realms (the ``WWW-Authenticate`` challenge names a realm, service and scope;
the token comes from the realm — with the credentials as Basic auth when there are any — and is reused per scope
until it is refused).

Everything an upstream sends is untrusted: manifests are bounded (``max_manifest``) and verified against the digest
asked for or announced; a blob stream is verified against its digest and the expected size as it arrives and fails
at the first byte past it; redirects are bounded (and drop the ``Authorization`` header when they leave the host,
as httpx does); every wait is bounded by ``timeout``. Failures are one exception, :class:`UpstreamError`, whose
``code`` is ECR's failure code (``UpstreamAccessDenied``, ``UpstreamTooManyRequests``, ``UpstreamUnavailable``) or
``NotFound`` / ``Invalid`` (the upstream's content is not what it claims). Credentials and tokens never appear in
messages or logs.

Blocking (httpx's sync client): callers run it on worker threads, as the domain runs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import httpx
from httpcore._sync import http11 as _http11

from soko.digest import Digest

# httpcore reads a response body 64 KiB per recv, and each read costs a pass through h11's parser: blobs of hundreds
# of MiB spend more in that Python than in the socket. 256 KiB reads cut the per-byte cost of a blob stream by about
# a quarter (bench/pull_through.py). A class attribute of httpcore's (pinned in pyproject); ignored if it goes away.
if getattr(_http11.HTTP11Connection, "READ_NUM_BYTES", 0) < 256 << 10:
    _http11.HTTP11Connection.READ_NUM_BYTES = 256 << 10

ACCEPT_MANIFESTS = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
MAX_MANIFEST = 4 << 20  # ECR's PutImage limit
MAX_TOKEN_RESPONSE = 1 << 20
MAX_ERROR_BODY = 64 << 10
PIECE = 1 << 20
USER_AGENT = "soko-remote/1"

_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


class UpstreamError(Exception):
    """A call to another registry failed. ``code``: ECR's Upstream* failure code, ``NotFound`` or ``Invalid``."""

    def __init__(self, code: str, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


@dataclass(frozen=True)
class RemoteManifest:
    payload: bytes
    media_type: str
    digest: str


@dataclass(frozen=True)
class ManifestHead:
    digest: str
    media_type: str
    size: int


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="…",service="…",scope="…"`` → ("bearer", {realm, service, scope})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
        for m in _CHALLENGE_PARAM.finditer(rest)
    }
    return scheme.lower(), params


def classify(status: int, what: str) -> UpstreamError:
    """An upstream HTTP status → ECR's failure code and a message that says what to do."""
    if status in (401, 403):
        return UpstreamError(
            "UpstreamAccessDenied",
            f"the upstream registry refused access to {what} (HTTP {status}): check the rule's credentials",
            status=status,
        )
    if status == 429:
        return UpstreamError(
            "UpstreamTooManyRequests", f"the upstream registry is rate-limiting requests for {what}", status=status
        )
    if status == 404:
        return UpstreamError("NotFound", f"the upstream registry has no {what}", status=status)
    if 400 <= status < 500:
        return UpstreamError(
            "Invalid", f"the upstream registry refused the request for {what} (HTTP {status})", status=status
        )
    return UpstreamError(
        "UpstreamUnavailable", f"the upstream registry failed on {what} (HTTP {status})", status=status
    )


class BlobStream:
    """A blob's content as it arrives from the upstream: iterate it (pieces of up to 1 MiB), then it is verified —
    the iteration raises ``UpstreamError("Invalid")`` instead of ending when the bytes do not hash to the digest or
    overrun/underrun the size. Close it (or use ``with``) when done."""

    def __init__(
        self, response: httpx.Response, digest: str, size: int | None, limit: int, verify: bool = True
    ) -> None:
        self._response = response
        self.digest = digest
        declared = response.headers.get("content-length")
        self.size = size if size is not None else (int(declared) if declared and declared.isdigit() else None)
        self._limit = limit if self.size is None else min(limit, self.size)
        self._hasher = Digest.parse(digest).hasher() if verify else None
        self.received = 0

    def __iter__(self) -> Iterator[bytes]:
        # What the connection hands over is gathered into ~1 MiB pieces with one join (httpx's own re-chunking
        # copies every byte twice more), so storing, hashing and sending see few, large pieces.
        parts: list[bytes] = []
        buffered = 0
        try:
            for data in self._response.iter_bytes():
                self.received += len(data)
                if self.received > self._limit:
                    raise UpstreamError(
                        "Invalid",
                        f"the upstream sent more than the {self._limit} bytes expected of blob {self.digest}",
                    )
                parts.append(data)
                buffered += len(data)
                if buffered >= PIECE:
                    yield self._piece(parts)
                    parts, buffered = [], 0
            if parts:
                yield self._piece(parts)
        except httpx.HTTPError as exc:
            raise UpstreamError(
                "UpstreamUnavailable",
                f"the upstream connection broke while sending blob {self.digest}: {type(exc).__name__}",
            ) from None
        if self.size is not None and self.received != self.size:
            raise UpstreamError(
                "Invalid", f"the upstream sent {self.received} bytes of blob {self.digest}, not its {self.size}"
            )
        if self._hasher is None:
            return
        algorithm = self.digest.partition(":")[0]
        actual = f"{algorithm}:{self._hasher.hexdigest()}"
        if actual != self.digest:
            raise UpstreamError("Invalid", f"the upstream's content for blob {self.digest} hashes to {actual}")

    def _piece(self, parts: list[bytes]) -> bytes:
        piece = parts[0] if len(parts) == 1 else b"".join(parts)
        if self._hasher is not None:
            self._hasher.update(piece)
        return piece

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> BlobStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RegistryClient:
    """One upstream registry (``base_url`` = scheme://host[:port]), its connections and its tokens."""

    def __init__(
        self,
        base_url: str,
        credentials: Credentials | None = None,
        *,
        timeout: float = 30.0,
        max_manifest: int = MAX_MANIFEST,
        max_redirects: int = 5,
        verify: bool | str = True,
        headers: dict[str, str] | None = None,
    ) -> None:
        """``headers``: sent with every request (e.g. replication's ``Soko-Replicated-From``)."""
        parts = urlsplit(base_url if "://" in base_url else f"https://{base_url}")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"'{base_url}' is not a registry URL (https://host[:port])")
        self.base_url = f"{parts.scheme}://{parts.netloc}"
        self.credentials = credentials
        self.max_manifest = max_manifest
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            follow_redirects=True,
            max_redirects=max_redirects,
            verify=verify,
            headers={"User-Agent": USER_AGENT, **(headers or {})},
            trust_env=False,
        )
        self._lock = threading.Lock()
        self._tokens: dict[str, str] = {}  # scope → "Bearer …" / "Basic …"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- auth -----------------------------------------------------------------------------------------------------

    def _authorization(self, scope: str) -> str | None:
        with self._lock:
            return self._tokens.get(scope)

    def _login(self, challenge: str, scope: str, what: str) -> str:
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if self.credentials is None:
                raise UpstreamError(
                    "UpstreamAccessDenied", f"the upstream registry requires credentials for {what}", status=401
                )
            value = self.credentials.basic()
        elif scheme == "bearer" and params.get("realm"):
            value = "Bearer " + self._token(params, scope)
        else:
            raise UpstreamError(
                "UpstreamAccessDenied", f"the upstream registry asks for an unsupported authentication ({scheme[:20]})"
            )
        with self._lock:
            self._tokens[scope] = value
        return value

    def _token(self, params: dict[str, str], scope: str) -> str:
        realm = params["realm"]
        if urlsplit(realm).scheme not in ("http", "https"):
            raise UpstreamError("UpstreamAccessDenied", "the upstream's token realm is not an http(s) URL")
        query: dict[str, str] = {}
        if params.get("service"):
            query["service"] = params["service"]
        query["scope"] = params.get("scope") or scope
        headers = {"Authorization": self.credentials.basic()} if self.credentials else {}
        try:
            with self._client.stream("GET", realm, params=query, headers=headers) as response:
                body = self._bounded(response, MAX_TOKEN_RESPONSE, "the token response")
                status = response.status_code
        except httpx.HTTPError as exc:
            raise UpstreamError(
                "UpstreamUnavailable", f"the upstream's token service is unreachable ({type(exc).__name__})"
            ) from None
        if status != 200:
            raise classify(status, "a token")
        try:
            document = json.loads(body)
            token = document.get("token") or document.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token or len(token) > 16384:
            raise UpstreamError("UpstreamUnavailable", "the upstream's token service answered without a token")
        return token

    # --- requests -------------------------------------------------------------------------------------------------

    @staticmethod
    def _bounded(response: httpx.Response, limit: int, what: str) -> bytes:
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise UpstreamError("Invalid", f"{what} is {declared} bytes, over the {limit}-byte limit")
        body = bytearray()
        for piece in response.iter_bytes(PIECE):
            body += piece
            if len(body) > limit:
                raise UpstreamError("Invalid", f"{what} is over the {limit}-byte limit")
        return bytes(body)

    def _send(
        self, method: str, path: str, scope: str, what: str, *, headers: dict[str, str] | None = None, **kwargs: object
    ) -> httpx.Response:
        """A request with auth as the upstream asks (at most one login per call); the response is open (stream):
        the caller reads and closes it. Non-2xx answers other than 401 are returned for the caller to classify."""
        url = self.base_url + path
        auth = self._authorization(scope)
        for attempt in range(2):
            sent = dict(headers or {})
            if auth:
                sent["Authorization"] = auth
            try:
                request = self._client.build_request(method, url, headers=sent, **kwargs)  # type: ignore[arg-type]
                response = self._client.send(request, stream=True)
            except httpx.TooManyRedirects:
                raise UpstreamError("UpstreamUnavailable", f"the upstream redirected too often for {what}") from None
            except httpx.HTTPError as exc:
                raise UpstreamError(
                    "UpstreamUnavailable", f"the upstream registry is unreachable for {what} ({type(exc).__name__})"
                ) from None
            if response.status_code != 401 or attempt == 1:
                return response
            challenge = response.headers.get("www-authenticate", "")
            response.close()
            if not challenge:
                raise classify(401, what)
            auth = self._login(challenge, scope, what)
        raise AssertionError("unreachable")

    @staticmethod
    def _path(repository: str) -> str:
        return quote(repository, safe="/")

    def ping(self) -> None:
        """GET /v2/, logging in if asked: raises UpstreamError when the registry is unreachable or refuses us."""
        with closing(self._send("GET", "/v2/", "registry:catalog:*", "/v2/")) as response:
            if response.status_code >= 300:
                raise classify(response.status_code, "/v2/")

    def manifest(self, repository: str, reference: str, accept: str = ACCEPT_MANIFESTS) -> RemoteManifest:
        """GET a manifest, bounded and verified: against ``reference`` when it is a digest, else against the
        ``Docker-Content-Digest`` the upstream announced (if any); the digest returned is of the bytes received."""
        what = f"manifest {repository}:{reference}"
        scope = f"repository:{repository}:pull"
        path = f"/v2/{self._path(repository)}/manifests/{quote(reference, safe=':')}"
        with closing(self._send("GET", path, scope, what, headers={"Accept": accept})) as response:
            if response.status_code != 200:
                raise classify(response.status_code, what)
            payload = self._bounded(response, self.max_manifest, what)
            media_type = response.headers.get("content-type", "").split(";")[0].strip()
            announced = response.headers.get("docker-content-digest")
        expected = reference if ":" in reference else announced
        algorithm = "sha256"
        if expected:
            try:
                algorithm = Digest.parse(expected).algorithm
            except Exception:
                raise UpstreamError("Invalid", f"the upstream announced a malformed digest for {what}") from None
        digest = f"{algorithm}:{hashlib.new(algorithm, payload).hexdigest()}"
        if expected and digest != expected:
            raise UpstreamError("Invalid", f"the upstream's {what} hashes to {digest}, not {expected}")
        if not media_type or media_type in ("application/json", "application/octet-stream", "text/plain"):
            media_type = _media_type_in(payload)
        return RemoteManifest(payload, media_type, digest)

    def manifest_head(self, repository: str, reference: str, accept: str = ACCEPT_MANIFESTS) -> ManifestHead:
        """HEAD a manifest: its digest (from Docker-Content-Digest) without its bytes."""
        what = f"manifest {repository}:{reference}"
        path = f"/v2/{self._path(repository)}/manifests/{quote(reference, safe=':')}"
        with closing(
            self._send("HEAD", path, f"repository:{repository}:pull", what, headers={"Accept": accept})
        ) as response:
            if response.status_code != 200:
                raise classify(response.status_code, what)
            digest = response.headers.get("docker-content-digest", "")
            media_type = response.headers.get("content-type", "").split(";")[0].strip()
            length = response.headers.get("content-length", "")
        try:
            Digest.parse(digest)
        except Exception:
            raise UpstreamError("Invalid", f"the upstream gave no digest for {what}") from None
        return ManifestHead(digest, media_type, int(length) if length.isdigit() else -1)

    def blob(
        self, repository: str, digest: str, *, size: int | None = None, limit: int = 1 << 40, verify: bool = True
    ) -> BlobStream:
        """Open a blob's content (follows the upstream's redirect to its object store); iterate the result.
        ``verify=False``: the caller hashes the bytes itself (size is still checked)."""
        Digest.parse(digest)
        what = f"blob {digest} of {repository}"
        response = self._send(
            "GET", f"/v2/{self._path(repository)}/blobs/{digest}", f"repository:{repository}:pull", what
        )
        if response.status_code != 200:
            response.close()
            raise classify(response.status_code, what)
        return BlobStream(response, digest, size, limit, verify)

    # --- push (replication) ---------------------------------------------------------------------------------------

    def blob_exists(self, repository: str, digest: str) -> bool:
        what = f"blob {digest} of {repository}"
        scope = f"repository:{repository}:pull,push"
        with closing(self._send("HEAD", f"/v2/{self._path(repository)}/blobs/{digest}", scope, what)) as response:
            if response.status_code == 200:
                return True
            if response.status_code == 404:
                return False
            raise classify(response.status_code, what)

    def push_blob(
        self, repository: str, digest: str, content: bytes | Iterator[bytes], size: int | None = None
    ) -> None:
        """Upload a blob (POST then one PUT with the whole body), or mount nothing: the caller checks first."""
        what = f"an upload of {digest} to {repository}"
        scope = f"repository:{repository}:pull,push"
        with closing(self._send("POST", f"/v2/{self._path(repository)}/blobs/uploads/", scope, what)) as response:
            if response.status_code not in (201, 202):
                raise classify(response.status_code, what)
            location = response.headers.get("location", "")
        if not location:
            raise UpstreamError("Invalid", f"the registry gave no upload location for {what}")
        target = httpx.URL(self.base_url).join(location)
        separator = "&" if target.query else "?"
        url = f"{target}{separator}digest={quote(digest, safe='')}"
        path = url[len(self.base_url) :] if url.startswith(self.base_url) else url
        headers = {"Content-Type": "application/octet-stream"}
        if size is not None:
            headers["Content-Length"] = str(size)
        if path.startswith("http"):
            raise UpstreamError("Invalid", f"the registry's upload location for {what} is on another host")
        with closing(self._send("PUT", path, scope, what, headers=headers, content=content)) as response:
            if response.status_code != 201:
                raise classify(response.status_code, what)

    def put_manifest(self, repository: str, reference: str, payload: bytes, media_type: str) -> str:
        what = f"manifest {repository}:{reference}"
        path = f"/v2/{self._path(repository)}/manifests/{quote(reference, safe=':')}"
        scope = f"repository:{repository}:pull,push"
        with closing(
            self._send("PUT", path, scope, what, headers={"Content-Type": media_type}, content=payload)
        ) as response:
            if response.status_code != 201:
                raise classify(response.status_code, what)
            return response.headers.get("docker-content-digest") or f"sha256:{hashlib.sha256(payload).hexdigest()}"


def _media_type_in(payload: bytes) -> str:
    """The mediaType a manifest declares in its body (upstreams that answer with a generic Content-Type)."""
    try:
        value = json.loads(payload).get("mediaType")
    except (ValueError, AttributeError):
        value = None
    return value if isinstance(value, str) else "application/vnd.oci.image.manifest.v1+json"
