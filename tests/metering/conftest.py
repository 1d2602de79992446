"""A server with a public listener and a private-endpoint listener (a second port mapped to a VPC endpoint id)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import ROOT_KEY_ID, free_port

VPCE = "vpce-0metering0001"


@dataclass
class TwoListeners:
    public_url: str
    private_url: str
    headers: dict[str, str]


@pytest.fixture
def two_listeners(registry, settings) -> Iterator[TwoListeners]:
    from aiohttp import web

    from soko.app import build_app
    from soko.iam.service import Identity

    identity = Identity(registry.ctx)
    identity.bootstrap_root()
    token, _ = identity.tokens.issue(ROOT_KEY_ID, registry.ctx.clock())
    public, private = free_port(), free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict = {}

    async def start() -> None:
        app = build_app(settings, registry, identity, endpoints={("127.0.0.1", private): VPCE})
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", public).start()
        await web.TCPSite(runner, "127.0.0.1", private).start()
        box["runner"] = runner

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(15), "server did not start"
    yield TwoListeners(f"http://127.0.0.1:{public}", f"http://127.0.0.1:{private}", {"Authorization": f"Basic {token}"})
    asyncio.run_coroutine_threadsafe(box["runner"].cleanup(), loop).result(15)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
