"""Composition: settings → domain → identity → front ends → one aiohttp application; plus background upkeep."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from soko.config import Settings
from soko.ecr.api import EcrApi
from soko.http.aws_api import AwsFrontDoor
from soko.http.context import ENDPOINTS_KEY
from soko.iam.api import IamApi
from soko.iam.service import Identity
from soko.meta.changes import PostgresListener
from soko.metering.prometheus import metrics_handler
from soko.oci import presigned
from soko.oci.base import OciContext
from soko.oci.router import OciRouter
from soko.registry import Registry
from soko.registry.lifecycle_runner import LifecycleRunner

log = logging.getLogger("soko")
REGISTRY_KEY = web.AppKey("soko_registry", Registry)
IDENTITY_KEY = web.AppKey("soko_identity", Identity)


def build_app(
    settings: Settings,
    registry: Registry,
    identity: Identity | None = None,
    endpoints: dict[tuple[str, int], str] | None = None,
) -> web.Application:
    identity = identity or Identity(registry.ctx)
    # Upload bodies are streamed, never buffered: the aiohttp body limit only guards request.read() elsewhere.
    app = web.Application(client_max_size=1 << 20, handler_args={"max_field_size": 16384, "max_line_size": 16384})
    app[REGISTRY_KEY] = registry
    app[IDENTITY_KEY] = identity
    app[ENDPOINTS_KEY] = endpoints or {}
    OciRouter(OciContext(registry, identity.authorizer, settings), identity.authenticate).install(app)
    ecr = EcrApi(settings, registry, identity)
    query = _query_service(settings, registry, identity)
    AwsFrontDoor(identity.credentials, ecr, query, _authn_auditor(identity)).install(app)
    presigned.install(app, registry, identity)  # GetDownloadUrlForLayer's expiring URLs
    app.router.add_get("/metrics", metrics_handler(registry))
    app.cleanup_ctx.append(_upkeep)
    return app


def _query_service(settings: Settings, registry: Registry, identity: Identity) -> IamApi:
    return IamApi(settings, registry, identity)


def _authn_auditor(identity: Identity):
    def record(principal, decision, reason, context) -> None:
        identity.audit.record("authn", principal, None, None, decision, reason, context)

    return record


async def _upkeep(app: web.Application):
    """Per-process background work: flush pull times and audit events, expire abandoned uploads."""
    registry = app[REGISTRY_KEY]
    identity = app[IDENTITY_KEY]
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=16, thread_name_prefix="soko-io"))

    def flush() -> None:
        registry.manifests.flush_pulls()
        identity.audit.flush()

    async def every_second() -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await loop.run_in_executor(None, flush)
            except Exception:
                log.exception("could not record pull times or audit events; will retry")

    async def expire_uploads() -> None:
        while True:
            await asyncio.sleep(min(registry.settings.upload_expiry / 4, 600) or 1)
            try:
                count = await loop.run_in_executor(None, registry.uploads.expire)
                if count:
                    log.info("expired %d abandoned upload(s)", count)
            except Exception:
                log.exception("upload expiry failed; will retry")

    async def collect_garbage() -> None:
        interval = registry.settings.gc_interval
        while interval > 0:
            await asyncio.sleep(interval)
            try:
                report = await loop.run_in_executor(None, registry.gc.run)
                log.info("%s", report.summary())
            except Exception:
                log.exception("garbage collection failed; will retry")

    async def apply_lifecycle_policies() -> None:
        interval = registry.settings.lifecycle_interval
        runner = LifecycleRunner(registry, identity.audit)
        while interval > 0:
            await asyncio.sleep(interval)
            try:
                runs = await loop.run_in_executor(None, runner.run)
                expired = sum(len(r.expired) for r in runs)
                if expired:
                    log.info("lifecycle policies expired %d image(s) in %d repositories", expired, len(runs))
            except Exception:
                log.exception("lifecycle evaluation failed; will retry")

    periodic = (every_second, expire_uploads, collect_garbage, apply_lifecycle_policies)
    tasks = [asyncio.create_task(t()) for t in periodic]
    tasks += [asyncio.create_task(c) for c in registry.metering.upkeep()]  # transfer flushes, storage samples
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
    await loop.run_in_executor(None, flush)
