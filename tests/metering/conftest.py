"""A server with a public listener and a private-endpoint listener (a second port mapped to a VPC endpoint id)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import ROOT_KEY_ID, ServerThread, listening_socket

VPCE = "vpce-0metering0001"


@dataclass
class TwoListeners:
    public_url: str
    private_url: str
    headers: dict[str, str]


@pytest.fixture
def two_listeners(registry, settings) -> Iterator[TwoListeners]:
    from soko.app import SokoApp
    from soko.iam.service import Identity

    identity = Identity(registry.ctx)
    identity.bootstrap_root()
    token, _ = identity.tokens.issue(ROOT_KEY_ID, registry.ctx.clock())
    public, private = listening_socket(), listening_socket()
    private_port = private.getsockname()[1]
    app = SokoApp(settings, registry, identity, endpoints={("127.0.0.1", private_port): VPCE})
    running = ServerThread(app, [public, private])
    yield TwoListeners(
        f"http://127.0.0.1:{public.getsockname()[1]}",
        f"http://127.0.0.1:{private_port}",
        {"Authorization": f"Basic {token}"},
    )
    running.close()
    public.close()
    private.close()
