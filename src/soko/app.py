"""Composition: settings → domain → identity → front ends behind one entry point; plus background upkeep."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor

from soko.config import Settings
from soko.console.web import PREFIX as CONSOLE_PREFIX
from soko.console.web import Console
from soko.ecr.api import EcrApi
from soko.events import Delivery
from soko.http.aws_api import AwsFrontDoor
from soko.http.bodies import BODY_BUDGET, BodyBudget
from soko.http.forwarded import TrustedProxies
from soko.http.health import Health
from soko.http.messages import AnyResponse, Request, error_response
from soko.http.metrics import metrics_handler
from soko.http.runtime import RuntimeMetrics
from soko.iam.api import IamApi
from soko.iam.layer_urls import DataUrls
from soko.iam.service import Identity
from soko.jobs import JobRunner, registry_jobs
from soko.jobs.runner import JobKind
from soko.kms.api import KmsApi
from soko.kms.service import KeyService
from soko.meta.changes import PostgresListener
from soko.oci.base import OciContext
from soko.oci.presigned import PREFIX as LAYERS_PREFIX
from soko.oci.presigned import PresignedLayers
from soko.oci.router import OciRouter
from soko.pullthrough.cache import FILL_JOB, PullThroughCache
from soko.registry import Registry
from soko.secrets.api import SecretsManagerApi
from soko.secrets.store import SecretStore
from soko.signing import KIND as SIGNING
from soko.signing.signer import Signer
from soko.storage import plain_cache
from soko.storage.plain_cache import PlainCache

log = logging.getLogger("soko")


class SokoApp:
    """Every front end behind one ``handle``: /v2/ (OCI), ``POST /`` (the AWS APIs), /layers/ (the presigned layer
    URLs GetDownloadUrlForLayer hands out), /console/ (the web console), /metrics, and the probes /healthz and
    /readyz. ``start``/``stop`` run
    this process's upkeep."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        identity: Identity | None = None,
        endpoints: dict[tuple[str, int], str] | None = None,
    ) -> None:
        identity = identity or Identity(registry.ctx)
        endpoints = endpoints or {}
        if registry.ctx.plain_cache is None:
            registry.ctx.plain_cache = open_plain_cache(settings, identity.master.storage_key)
        self.settings = settings
        self.registry = registry
        self.identity = identity
        self.bodies = BodyBudget(BODY_BUDGET)  # AWS documents and manifests held whole, in this process
        self.secrets = SecretStore(registry.ctx, identity.master)
        self.pull_through = PullThroughCache(registry, self.secrets)
        data_urls = DataUrls.from_settings(identity, settings)
        oci = OciContext(registry, identity.authorizer, settings, self.bodies, self.pull_through, data_urls)
        self.oci = OciRouter(oci, identity.authenticate, endpoints)
        ecr = EcrApi(settings, registry, identity, self.pull_through)
        query = IamApi(settings, identity)
        self.kms = KeyService(registry.ctx, identity)
        registry.encryption.attach(self.kms)  # KMS and KMS_DSSE repositories use it (soko.registry.encryption)
        self.aws = AwsFrontDoor(
            identity.credentials,
            ecr,
            query,
            _authn_auditor(identity),
            endpoints,
            settings.region,
            self.bodies,
            kms=KmsApi(self.kms),
            secrets=SecretsManagerApi(self.secrets, identity.authorizer),
        )
        self.layers = PresignedLayers(registry, identity, self.pull_through)
        self.runtime = RuntimeMetrics()
        self.metrics = metrics_handler(registry, self.runtime)
        self.health = Health(registry)
        # The web console (off with console = false: /console/ is then simply not here).
        self.console = (
            Console(settings, registry, identity, self.bodies, endpoints, iam=query) if settings.console else None
        )
        proxies = TrustedProxies(settings.trusted_proxies)
        self._proxies = proxies if proxies.networks else None
        self._upkeep: contextlib.AbstractAsyncContextManager | None = None

    async def handle(self, request: Request) -> AnyResponse:
        if self._proxies is not None:
            self._proxies.apply(request)
        path = request.path
        if path.startswith("/v2") and (len(path) == 3 or path[3] == "/"):
            return await self.oci.handle(request)
        if path == "/":
            if request.method != "POST":
                return _not_here(405, f"{request.method} / is not supported: the AWS APIs take POST /", "POST")
            return await self.aws.handle(request)
        if path.startswith(LAYERS_PREFIX):
            return await self.layers.handle(request)
        if path == "/healthz" or path == "/readyz":  # before any authentication: load balancers probe these
            return await self.health.handle(request)
        if self.console is not None and (path == "/console" or path.startswith(CONSOLE_PREFIX)):
            return await self.console.handle(request)
        if path == "/metrics":
            if request.method not in ("GET", "HEAD"):
                return _not_here(405, f"{request.method} /metrics is not supported", "GET, HEAD")
            return await self.metrics(request)
        return _not_here(404, f"nothing at {path[:200]}: the registry API is under /v2/, the AWS APIs at POST /")

    async def handle_layers(self, request: Request) -> AnyResponse:
        """The data listener's requests (presigned layer URLs only), taking a trusted proxy's word as ``handle``
        does (the access log's source behind the TLS terminator an https ``data_url`` names)."""
        if self._proxies is not None:
            self._proxies.apply(request)
        return await self.layers.handle(request)

    async def start(self) -> None:
        """Start this process's upkeep on the running loop."""
        self._upkeep = _upkeep(
            self.registry,
            self.identity,
            self.runtime,
            [kms_upkeep_job(self.kms), pull_through_fill_job(self.pull_through),
             signing_job(Signer(self.registry, self.identity.master)), secrets_purge_job(self.secrets)],
            self.kms,
        )
        await self._upkeep.__aenter__()

    async def stop(self) -> None:
        if self._upkeep is not None:
            upkeep, self._upkeep = self._upkeep, None
            await upkeep.__aexit__(None, None, None)
        self.pull_through.close()
        cache, self.registry.ctx.plain_cache = self.registry.ctx.plain_cache, None
        if cache is not None:
            cache.close()


def open_plain_cache(settings: Settings, deployment_key: bytes) -> PlainCache | None:
    """This node's plaintext blob cache as configured (``plaintext_cache_*``; None: off). A directory that is not
    memory is refused with the fix (ValueError, at start)."""
    try:
        return plain_cache.open_for(
            settings.plaintext_cache_dir,
            settings.plaintext_cache_bytes,
            settings.plaintext_cache_allow_disk,
            deployment_key,
        )
    except plain_cache.CacheRefused as exc:
        raise ValueError(f"plaintext_cache_dir: {exc}") from None
    except OSError as exc:
        raise ValueError(f"plaintext_cache_dir: cannot use it ({exc})") from None


def _not_here(status: int, message: str, allow: str | None = None) -> AnyResponse:
    headers = {"Allow": allow} if allow else None
    return error_response(status, "UNSUPPORTED" if status == 405 else "NOT_FOUND", message, headers=headers)


def pull_through_fill_job(cache: PullThroughCache) -> JobKind:
    """One-shot, keyed by pending manifest: fetch what a pull-through cached image still lacks (soko.pullthrough)."""
    return JobKind(FILL_JOB, cache.fill, 10 * 365 * 86400.0, concurrency=2, lease=300.0, keys=())


def signing_job(signer: Signer) -> JobKind:
    """One-shot, keyed by ``image_signing_status`` row: queued by a push in its unit of work
    (``soko.kernel.signing_queue``); a finished run deletes its job; the interval caps the retry backoff."""
    return JobKind(SIGNING, signer.run, 600.0, concurrency=2, lease=120.0, keys=())


def secrets_purge_job(secrets: SecretStore) -> JobKind:
    """Hourly, once in the cluster: forget the secrets whose recovery window (DeleteSecret's RecoveryWindowInDays,
    7-30 days) has passed, as Secrets Manager deletes them then; until then RestoreSecret brings them back."""

    def run(_key: str) -> str | None:
        purged = secrets.purge()
        return f"secrets: {purged} deleted secret(s) past their recovery window purged" if purged else None

    return JobKind("secrets_purge", run, 3600.0)


def kms_upkeep_job(kms: KeyService) -> JobKind:
    """Hourly, once in the cluster: destroy the material of keys whose deletion date passed (crypto-shredding) and
    rotate keys whose rotation is due (both also happen at a key's next use)."""

    def run(_key: str) -> str | None:
        deleted, rotated = kms.upkeep()
        return f"kms: deleted {deleted} key(s), rotated {rotated}" if deleted or rotated else None

    return JobKind("kms_upkeep", run, 3600.0)


PLAINTEXT_SWEEP = 30.0


async def _sweep_plaintext(cache: PlainCache, kms: KeyService) -> None:
    """Drop this node's decrypted copies of content under KMS keys that another node disabled or scheduled for
    deletion (the node that changed the key dropped its own at once; pulls check the key before serving anyway)."""
    loop = asyncio.get_running_loop()

    def sweep() -> None:
        for space in cache.key_spaces():
            if kms.key_state(space.split("/", 1)[1]) != "Enabled":
                cache.drop_space(space)

    while True:
        await asyncio.sleep(PLAINTEXT_SWEEP)
        try:
            await loop.run_in_executor(None, sweep)
        except Exception:
            log.exception("could not check the keys of the plaintext cache's entries; will retry")


def _authn_auditor(identity: Identity):
    def record(principal, decision, reason, context) -> None:
        identity.audit.record("authn", principal, None, None, decision, reason, context)

    return record


@contextlib.asynccontextmanager
async def _upkeep(
    registry: Registry,
    identity: Identity,
    runtime: RuntimeMetrics,
    more_jobs: list[JobKind],
    kms: KeyService | None = None,
):
    """Per-process background work: flush pull times, audit events and transfer counts; and this process's job
    runner, which takes its share of the cluster's leased jobs (GC, lifecycle, upload expiry, storage samples)."""
    loop = asyncio.get_running_loop()
    # Blocking work runs here: database writes, storage reads, and each push's store + hash threads (which also wait
    # on fdatasync). Threads are cheap while idle; enough of them keeps a few slow disks from queueing the database.
    loop.set_default_executor(ThreadPoolExecutor(max_workers=32, thread_name_prefix="soko-io"))

    def flush() -> None:
        registry.manifests.flush_pulls()
        identity.audit.flush()

    async def every_second() -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                runtime.sample(registry.ctx.db)  # inside: one failed sample must not end this loop's flushes
                await loop.run_in_executor(None, flush)
            except Exception:
                log.exception("could not record pull times or audit events; will retry")

    tasks = [asyncio.create_task(every_second())]
    if kms is not None and registry.ctx.plain_cache is not None:
        tasks.append(asyncio.create_task(_sweep_plaintext(registry.ctx.plain_cache, kms)))
    tasks += [asyncio.create_task(c) for c in registry.metering.upkeep()]  # transfer flushes
    # GC, lifecycle, upload expiry, storage samples and event delivery: leased jobs shared by the cluster.
    runner = JobRunner(
        registry.ctx, [*registry_jobs(registry), Delivery(registry.ctx).job(), *more_jobs], track=runtime.run
    )
    await loop.run_in_executor(None, runner.start)
    listener = None
    if not registry.ctx.db.is_sqlite:
        listener = PostgresListener(registry.ctx.db.psycopg_dsn(), registry.ctx.generation)
        listener.start()
    yield
    if listener is not None:
        await loop.run_in_executor(None, listener.stop)  # joins its thread (a hung connect: up to 5 s)
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await loop.run_in_executor(None, runner.stop)
    await loop.run_in_executor(None, flush)
    runtime.fold()  # the last requests' counts (in multiprocess mode they outlive this worker)
