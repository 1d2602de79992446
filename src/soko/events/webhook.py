"""Sending one event to a webhook: an HTTP(S) POST of the event's JSON, signed, to an address checked for SSRF.

Headers (documented in the README, "Events"):

* ``X-Soko-Event-Id`` — the envelope's ``id``, the same on every attempt: receivers deduplicate by it (delivery is
  at least once);
* ``X-Soko-Timestamp`` — Unix seconds when this attempt was signed;
* ``X-Soko-Signature-256`` — ``sha256=`` + hex HMAC-SHA256, keyed by the target's secret, of
  ``<timestamp> + "." + <body>`` (so a captured request cannot be replayed with another timestamp);
* ``X-Soko-Delivery-Attempt`` — 1 on the first attempt.

Only a 2xx answer is a delivery; redirects are not followed. The host name is resolved for each connection, every
address it has is checked (none may be loopback, link-local — cloud metadata lives there —, multicast, reserved or
unspecified unless ``event_target_allow_cidrs`` allows it), and the connection goes to a checked address, so a DNS
answer that changes between check and connect (rebinding) cannot steer the request elsewhere. A ``Session`` keeps
its connection alive across a batch of events while the receiver allows it.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import http.client
import ipaddress
import re
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from soko.errors import SokoError

MAX_URL = 2048
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")  # "_": container names resolve with it
USER_AGENT = "Soko-Events/1"
EVENT_ID = "X-Soko-Event-Id"
TIMESTAMP = "X-Soko-Timestamp"
SIGNATURE = "X-Soko-Signature-256"
ATTEMPT = "X-Soko-Delivery-Attempt"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Never reached unless allowed by a setting: this host, link-local (169.254.169.254 and fd00:ec2::254 are cloud
# metadata), multicast, broadcast, reserved, unspecified, and the IPv6 forms that wrap IPv4 addresses.
_DENIED = [
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "100.100.100.200/32",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "fe80::/10",
        "fd00:ec2::254/128",
        "ff00::/8",
    )
]


class InvalidTarget(SokoError):
    """A webhook URL Soko will not send to."""


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status: int | None  # the HTTP status, if one came back
    error: str  # why not ok, for last_error (never the secret, headers or body)


def check_url(url: str, allow: list[Network]) -> tuple[str, str, int, str]:
    """(scheme, host, port, path+query) of a URL Soko may POST to; literal addresses are checked here, names when
    sending."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise InvalidTarget(f"the webhook URL must be 1 to {MAX_URL} characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise InvalidTarget("the webhook URL must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidTarget(f"the webhook URL is not valid: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidTarget("the webhook URL must be http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise InvalidTarget("the webhook URL must not carry credentials (the target's secret signs each request)")
    if parts.fragment:
        raise InvalidTarget("the webhook URL must not have a fragment")
    host = parts.hostname
    if not host:
        raise InvalidTarget("the webhook URL has no host")
    if port == 0:
        raise InvalidTarget("the webhook URL's port must be 1 to 65535")
    literal = _literal(host)
    if literal is not None:
        check_address(literal, allow)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80), path


def _literal(host: str) -> Address | None:
    """The address a host stands for without DNS, or None for a (well-formed) name.

    Besides plain IPv4 and IPv6 literals, the resolver also takes the old numeric IPv4 forms (``2130706433``,
    ``0x7f.1``, ``127.1``: what ``inet_aton`` reads) and ``localhost``: they are checked as the addresses they are.
    A name must be ASCII (IDNA ``xn--`` form), labels of letters, digits, ``_`` and inner hyphens, and must not end in a
    numeric label (which resolvers read as an address)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if not host.isascii():
        raise InvalidTarget(f"the webhook URL host {host!r} is not ASCII: give an international name as xn--…")
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        pass
    name = host.lower().removesuffix(".")
    if name == "localhost" or name.endswith(".localhost"):
        return ipaddress.ip_address("127.0.0.1")
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
        raise InvalidTarget(f"the webhook URL's host {host!r} is not a host name")
    return None


def check_address(address: Address, allow: list[Network]) -> None:
    if isinstance(address, ipaddress.IPv6Address):
        wrapped = address.ipv4_mapped or address.sixtofour
        if wrapped is None and address in ipaddress.ip_network("64:ff9b::/96"):
            wrapped = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if wrapped is not None:
            check_address(wrapped, allow)
            return
    if any(address in net for net in allow if net.version == address.version):
        return
    if any(address in net for net in _DENIED if net.version == address.version) or address.is_reserved:
        raise InvalidTarget(
            f"webhook targets may not reach {address} (loopback, link-local/metadata, multicast or reserved); "
            "allow it with event_target_allow_cidrs"
        )


def allowed_networks(cidrs: list[str]) -> list[Network]:
    try:
        return [ipaddress.ip_network(c, strict=False) for c in cidrs]
    except ValueError as exc:
        raise ValueError(f"event_target_allow_cidrs: {exc}") from None


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class _Pinned(http.client.HTTPConnection):
    def __init__(self, address: str, host: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = _connect(self._address, self.port, self.timeout)


class _PinnedTLS(http.client.HTTPSConnection):
    def __init__(self, address: str, host: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=_tls_context())
        self._address = address

    def connect(self) -> None:
        raw = _connect(self._address, self.port, self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)  # type: ignore[attr-defined]


def _connect(address: str, port: int, timeout: float | None) -> socket.socket:
    """A connection to the checked address. TCP_NODELAY, as http.client's own connect sets it: a request's headers
    and body go out in two writes, and on a kept-alive connection Nagle's algorithm would hold the body until the
    receiver's delayed ACK of the headers (40 ms on Linux) — every event after a connection's first."""
    sock = socket.create_connection((address, port), timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One context for every connection: building one loads the CA store (milliseconds of CPU each time)."""
    return ssl.create_default_context()


# The peer closed a kept-alive connection while it was idle: the request is sent again on a fresh one.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class Session:
    """One target's connection, kept alive across its deliveries (a run of ``soko.events.delivery`` holds one): a
    batch of events costs one name resolution, one connect and one TLS handshake, not one each. The address is
    resolved and checked when a connection is opened and the connection stays pinned to it; any failure, a
    different URL or timeout, or a peer that does not keep connections alive closes it."""

    def __init__(self, allow: list[Network]) -> None:
        self.allow = allow
        self.connections = 0  # opened so far
        self._conn: http.client.HTTPConnection | None = None
        self._key: tuple | None = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def send(self, url: str, body: bytes, event_id: str, secret: str, attempt: int, timeout: float) -> Outcome:
        try:
            scheme, host, port, path = check_url(url, self.allow)
        except InvalidTarget as exc:
            return Outcome(False, None, exc.message)
        if self._key != (scheme, host, port, timeout):
            self.close()
        reused = self._conn is not None
        if self._conn is None:
            address = self._resolve(host, port)
            if isinstance(address, Outcome):
                return address
            kind = _PinnedTLS if scheme == "https" else _Pinned
            self._conn, self._key = kind(address, host, port, timeout), (scheme, host, port, timeout)
            self.connections += 1
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            EVENT_ID: event_id,
            TIMESTAMP: timestamp,
            SIGNATURE: signature(secret, timestamp, body),
            ATTEMPT: str(attempt),
        }
        conn = self._conn
        try:
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            response.read(65536)  # a little of the answer, to keep the connection's end tidy; never logged
            status = response.status
            if response.will_close or not response.isclosed():  # not kept alive, or more answer than we read
                self.close()
        except _STALE as exc:
            self.close()
            if reused:
                return self.send(url, body, event_id, secret, attempt, timeout)
            return Outcome(False, None, f"POST to {host}:{port} failed: {type(exc).__name__}: {exc}"[:500])
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return Outcome(False, None, f"POST to {host}:{port} failed: {type(exc).__name__}: {exc}"[:500])
        if 200 <= status < 300:
            return Outcome(True, status, "")
        return Outcome(False, status, f"POST to {host}:{port} answered HTTP {status}")

    def _resolve(self, host: str, port: int) -> str | Outcome:
        """The address to connect to, once every address the name has is checked."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
            if not addresses:
                return Outcome(False, None, f"{host} has no address")
            for address in addresses:
                check_address(address, self.allow)
        except InvalidTarget as exc:
            return Outcome(False, None, exc.message)
        except (OSError, ValueError) as exc:
            return Outcome(False, None, f"cannot resolve {host}: {exc}")
        return str(addresses[0])


def send(
    url: str, body: bytes, event_id: str, secret: str, attempt: int, timeout: float, allow: list[Network]
) -> Outcome:
    """One POST on a connection of its own."""
    with Session(allow) as session:
        return session.send(url, body, event_id, secret, attempt, timeout)
