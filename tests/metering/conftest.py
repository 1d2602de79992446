"""A server with a public listener and a private-endpoint listener (a second port mapped to a VPC endpoint id)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import listening_socket, serve

VPCE = "vpce-0metering0001"


@dataclass
class TwoListeners:
    public_url: str
    private_url: str
    headers: dict[str, str]


@pytest.fixture
def two_listeners(registry, settings) -> Iterator[TwoListeners]:
    public, private = listening_socket(), listening_socket()
    private_port = private.getsockname()[1]
    with serve(settings, registry, [public, private], {("127.0.0.1", private_port): VPCE}) as server:
        yield TwoListeners(server.url, f"http://127.0.0.1:{private_port}", server.basic_auth)
