"""Behind a TLS-terminating proxy: X-Forwarded-Proto/-For/-Host, believed only from the configured proxies.

Anyone can send these headers, so they count only when the peer itself is a trusted proxy (``trusted_proxies``
CIDRs). Then the scheme (``aws:SecureTransport``, the URLs and realm Soko hands back), the client address
(``aws:SourceIp``, same-region transfer, /metrics access) and the host (account routing, URLs) are the ones the
proxy reports. The client is the rightmost X-Forwarded-For address that is not itself a trusted proxy, so a
client cannot choose its own address by sending the header first. SigV4 still verifies the Host header the
request arrived with (clients sign what they sent; the proxy should pass Host through unchanged).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

from soko.http.context import split_address
from soko.http.messages import Request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    def __init__(self, cidrs: Iterable[str]) -> None:
        networks: list[Network] = []
        for cidr in cidrs:
            try:
                networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
            except ValueError:
                raise ValueError(f"trusted_proxies: {cidr!r} is not a CIDR (e.g. 10.0.0.0/8 or 192.0.2.7/32)") from None
        self.networks = tuple(networks)
        self._trusted = lru_cache(maxsize=1024)(self._match)

    def _match(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def apply(self, request: Request) -> None:
        """Take the proxy's word for scheme, client and host when the peer is a trusted proxy."""
        peer = split_address(request.client)[0] if request.client else ""
        if not self.networks or not self._trusted(peer):
            return
        headers = request.headers
        proto = _first(headers.get("x-forwarded-proto"))
        if proto in ("http", "https"):
            request.scheme = proto
        host = _first(headers.get("x-forwarded-host"))
        if host:
            request.host = host
        chain = [a.strip() for value in request.getall("x-forwarded-for") for a in value.split(",")]
        client = self._client(chain)
        if client:
            request.client = f"[{client}]:0" if ":" in client else f"{client}:0"

    def _client(self, chain: list[str]) -> str | None:
        client = None
        for address in reversed(chain):
            try:
                ipaddress.ip_address(address)
            except ValueError:
                break  # garbage: trust nothing further left
            client = address
            if not self._trusted(address):
                break
        return client


def _first(value: str | None) -> str:
    """The first entry of a comma-separated header (the proxy should set, not append, Proto and Host)."""
    return value.split(",", 1)[0].strip().lower() if value else ""
