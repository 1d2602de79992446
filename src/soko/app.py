"""Composition: settings → domain → front ends → one aiohttp application; plus background upkeep."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from soko.access import AllowAll, Authorizer, Principal
from soko.config import Settings
from soko.meta.changes import PostgresListener
from soko.oci.base import OciContext
from soko.oci.router import OciRouter
from soko.registry import Registry

log = logging.getLogger("soko")
REGISTRY_KEY = web.AppKey("soko_registry", Registry)


def open_access(request: web.Request, account_id: str) -> Principal:
    """Until identity exists every caller acts as the registry account's root."""
    return Principal(arn=f"arn:aws:iam::{account_id}:root", account_id=account_id, type="Account")


def build_app(settings: Settings, registry: Registry, authorizer: Authorizer | None = None) -> web.Application:
    # Upload bodies are streamed, never buffered: the aiohttp body limit only guards request.read() elsewhere.
    app = web.Application(client_max_size=1 << 20, handler_args={"max_field_size": 16384, "max_line_size": 16384})
    app[REGISTRY_KEY] = registry
    OciRouter(OciContext(registry, authorizer or AllowAll(), settings), open_access).install(app)
    app.cleanup_ctx.append(_upkeep)
    return app


async def _upkeep(app: web.Application):
    """Per-process background work: flush pull times, expire abandoned uploads."""
    registry = app[REGISTRY_KEY]
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=16, thread_name_prefix="soko-io"))

    async def flush_pulls() -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await loop.run_in_executor(None, registry.manifests.flush_pulls)
            except Exception:
                log.exception("could not record pull times; will retry")

    async def expire_uploads() -> None:
        while True:
            await asyncio.sleep(min(registry.settings.upload_expiry / 4, 600) or 1)
            try:
                count = await loop.run_in_executor(None, registry.uploads.expire)
                if count:
                    log.info("expired %d abandoned upload(s)", count)
            except Exception:
                log.exception("upload expiry failed; will retry")

    tasks = [asyncio.create_task(flush_pulls()), asyncio.create_task(expire_uploads())]
    listener = None
    if not registry.ctx.db.is_sqlite:
        listener = PostgresListener(registry.ctx.db.psycopg_dsn(), registry.ctx.generation)
        listener.start()
    yield
    if listener is not None:
        listener.stop()
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await loop.run_in_executor(None, registry.manifests.flush_pulls)
