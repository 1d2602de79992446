"""Serving: one process, or a supervisor forking N workers that share the listening sockets (``soko.http.supervisor``).

Each worker runs granian's HTTP engine on every socket (soko.http.listener) in front of one SokoApp. Workers open
their own database connections after the fork (connections must never cross a fork). SIGTERM/SIGINT stop
accepting, let in-flight requests finish (up to ``SHUTDOWN_TIMEOUT``), then exit.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import ipaddress
import logging
import os
import signal
import socket
import sys

from soko.config import Settings
from soko.http import piped
from soko.http.access_log import open_access_log
from soko.http.data_listener import DataListener
from soko.http.forwarded import TrustedProxies
from soko.http.listener import BACKLOG, Listeners, connection_limit, raise_open_files_limit
from soko.http.rsgi import RsgiApp
from soko.http.runtime import shared_across_workers, worker_died
from soko.http.supervisor import Supervisor
from soko.http.tls import TlsFiles
from soko.http.tls import watch as watch_tls

log = logging.getLogger("soko.server")
logging.getLogger("_granian").setLevel(logging.WARNING)  # worker start/stop lines: Soko prints its own
SHUTDOWN_TIMEOUT = 30.0


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"invalid listen address {listen!r}: use HOST:PORT, e.g. 127.0.0.1:5000")
    return host.strip("[]") or "0.0.0.0", int(port)


def bind(listen: str) -> socket.socket:
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    sock.set_inheritable(True)
    return sock


def descriptor_shares(sockets: int, data_listener: bool) -> int:
    """The parts a worker's descriptor budget is cut into (``connection_limit``): one per listening socket, two
    for the data listener."""
    return sockets + (2 if data_listener else 0)


async def run_worker(
    app,
    socks: list[socket.socket],
    stop: asyncio.Event,
    ready_message: str | None = None,
    worker_id: int = 1,
    data_sock: socket.socket | None = None,
) -> None:
    """Serve ``app`` (a SokoApp) on ``socks`` in the running loop until ``stop`` is set, then shut down gracefully;
    with ``data_sock``, the data listener (layer downloads by sendfile) too, on a thread of its own."""
    access_log = open_access_log(app.settings.access_log)
    runtime = app.runtime
    if access_log is None:
        observe = runtime.observe
    else:
        record = access_log.record

        def observe(request, status: int, sent: int, started: float, now: float) -> None:
            record(request, status, sent, started, now)
            runtime.observe(request, status, sent, started, now)

    rsgi = RsgiApp(app.handle, observe)
    runtime.in_flight_source = lambda: rsgi.in_flight + (data.in_flight if data is not None else 0)
    listeners: Listeners | None = None
    data: DataListener | None = None
    tls = TlsFiles.from_settings(app.settings)
    reloader: asyncio.Task | None = None
    await app.start()
    # The descriptor budget, cut in one part per listening socket and two for the data listener (a download holds
    # its socket and its file): every listener full at once still leaves the reserve.
    shares = descriptor_shares(len(socks), data_sock is not None)
    try:
        listeners = Listeners(rsgi, socks, worker_id, tls, app.settings.keepalive_timeout, shares)
        if data_sock is not None:
            loop = asyncio.get_running_loop()

            def observe_here(*finished) -> None:  # the access log and metrics are kept on this loop's thread
                loop.call_soon_threadsafe(observe, *finished)

            limit = connection_limit(shares)
            # Two threads or more: sendfile copies outside the GIL, so one worker's downloads use both cores
            # (32 pullers: 1.13x Distribution's aggregate with two threads, 0.99x with one; docs/performance.md).
            threads = min(4, max(2, os.cpu_count() or 1))
            data = DataListener(app.handle_layers, data_sock, observe_here, app.settings.keepalive_timeout, limit,
                                threads)
        if tls is not None:

            def restart() -> None:  # a renewed certificate: new listeners first, then the old ones stop accepting
                nonlocal listeners
                old, listeners = listeners, Listeners(rsgi, socks, worker_id, tls, app.settings.keepalive_timeout,
                                                      shares)
                if old is not None:
                    old.close()

            reloader = asyncio.create_task(watch_tls(tls, restart, app.settings.tls_reload_interval))
        if ready_message:
            print(ready_message, flush=True)
        await stop.wait()
    finally:
        log.info("shutting down: finishing in-flight requests")
        if reloader is not None:
            reloader.cancel()
        if listeners is not None:
            listeners.close()
        if data is not None:
            await asyncio.get_running_loop().run_in_executor(None, data.close, SHUTDOWN_TIMEOUT)
        for sock in [*socks, data_sock] if data_sock is not None else socks:  # the port is free for the next
            sock.close()  # start as soon as every process has let go of it
        if not await rsgi.drain(SHUTDOWN_TIMEOUT):
            log.warning("%d request(s) still running after %.0f s; stopping anyway", rsgi.in_flight, SHUTDOWN_TIMEOUT)
        # write ends of bodies that ended early, kept for a late open by granian: this loop's timers end with it
        late = asyncio.create_task(piped.close_late())  # (seconds at most: alongside the upkeep's stop)
        try:
            await app.stop()
        finally:
            await late
        if access_log is not None:
            access_log.close()


async def _serve(
    settings: Settings,
    socks: list[tuple[socket.socket, str]],
    ready_message: str | None,
    worker_id: int = 1,
    data_sock: socket.socket | None = None,
) -> None:
    from soko.app import SokoApp
    from soko.registry import Registry

    registry = Registry.open(settings, migrate=False)
    endpoints = {sock.getsockname()[:2]: name for sock, name in socks if name != "public"}
    app = SokoApp(settings, registry, endpoints=endpoints)
    # Everything built so far lives as long as the process: keep the cyclic collector from scanning it again (a full
    # collection over the ~110,000 objects of the loaded code and models takes ~60 ms here, with requests waiting).
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run_worker(app, [sock for sock, _ in socks], stop, ready_message, worker_id, data_sock)
    finally:
        registry.close()


def parse_endpoint(spec: str) -> tuple[str, str]:
    name, sep, listen = spec.partition("=")
    if not sep or not name.startswith("vpce-"):
        raise ValueError(f"invalid endpoint {spec!r}: use vpce-<id>=HOST:PORT, e.g. vpce-0abc1234=127.0.0.2:5000")
    parse_listen(listen)
    return name, listen


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def initialise(settings: Settings) -> None:
    """Create the data dir and schema and the default account's root key, once, before any worker starts."""
    from soko.app import open_plain_cache
    from soko.iam.service import Identity
    from soko.registry import Registry

    registry = Registry.open(settings)
    identity = Identity(registry.ctx)
    generated = identity.bootstrap_root()
    registry.close()
    cache = open_plain_cache(settings, identity.master.storage_key)  # refuses a directory that is not memory
    if cache is not None:
        cache.close()
    if generated:
        key_id, secret = generated
        path = os.path.join(os.path.abspath(settings.data_dir), "root-credentials")
        print(
            f"soko: created the root access key of account {settings.account_id} (shown once; also in {path}):\n"
            f"  AWS_ACCESS_KEY_ID={key_id}\n  AWS_SECRET_ACCESS_KEY={secret}",
            flush=True,
        )


def _in_child(fn, *args) -> None:
    """Run ``fn`` in a forked child, so the supervisor of several workers never holds a database connection."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fn(*args)
        except BaseException as exc:
            print(f"soko serve: {exc}", file=sys.stderr, flush=True)
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(os.waitstatus_to_exitcode(status))


def _preload() -> None:
    """Load the code and the AWS service models once, before forking, and keep the collector off them: the workers
    then share those pages copy-on-write instead of holding ~60 MB each (as gunicorn's --preload). Nothing here
    opens a database connection or starts a thread, so nothing crosses the fork that must not."""
    import soko.app  # noqa: F401 — the whole application's code
    from soko.aws.service_model import get_service_model

    for service in ("ecr", "iam", "sts"):
        get_service_model(service)
    gc.collect()
    gc.freeze()


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread that allocates its own malloc arena (up to 8 per core), and each arena keeps what was
    freed in it. Blob pieces are allocated on the I/O threads and freed on the loop, so a worker's RSS crept up by
    ~60 MB under pushes and pulls; two shared arenas keep it flat at no measurable cost."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def serve(settings: Settings) -> int:
    _limit_malloc_arenas()
    open_files = raise_open_files_limit()
    tls = TlsFiles.from_settings(settings)
    if tls is not None:
        tls.check()  # refuse to start on a key others can read, or a certificate that does not load
    TrustedProxies(settings.trusted_proxies)  # a typo in a CIDR stops the start, not the first request
    if settings.workers <= 1:
        initialise(settings)
    else:
        _in_child(initialise, settings)
    endpoints = [parse_endpoint(spec) for spec in settings.endpoints]
    sock = bind(settings.listen)
    scheme = "https" if tls else "http"
    ready = f"soko: serving the registry on {scheme}://{settings.listen} (data: {os.path.abspath(settings.data_dir)})"
    for name, listen in endpoints:
        ready += f"\nsoko: private endpoint {name} on {scheme}://{listen}"
    socks = [(sock, "public")] + [(bind(listen), name) for name, listen in endpoints]
    data_sock = bind(settings.data_listen) if settings.data_listen else None
    if data_sock is not None:
        ready += f"\nsoko: layer downloads (sendfile) on http://{settings.data_listen}"
        if _loopback(parse_listen(settings.data_listen)[0]) and not _loopback(parse_listen(settings.listen)[0]):
            log.warning(
                "data_listen %s is on loopback while the registry listens on %s: clients on other hosts will be "
                "redirected to a port they cannot reach; listen on an address they reach (e.g. 0.0.0.0:%s)",
                settings.data_listen, settings.listen, parse_listen(settings.data_listen)[1],
            )
    log.info(
        "open-files limit %d: up to %d connections per worker and listener", open_files,
        connection_limit(descriptor_shares(len(socks), data_sock is not None)),
    )
    if settings.workers <= 1:
        asyncio.run(_serve(settings, socks, ready, data_sock=data_sock))
        return 0
    with shared_across_workers():  # /metrics sums every worker's request and run metrics
        return _supervise(settings, socks, ready, data_sock)


def _supervise(
    settings: Settings, socks: list[tuple[socket.socket, str]], ready: str, data_sock: socket.socket | None
) -> int:
    _preload()

    def work(worker_id: int, first: bool) -> None:
        asyncio.run(_serve(settings, socks, ready if first and worker_id == 1 else None, worker_id, data_sock))

    def close_sockets() -> None:  # workers stopping close theirs too: the port is free once the last one has
        for listening, _ in socks:
            listening.close()
        if data_sock is not None:
            data_sock.close()

    status = Supervisor(settings.workers, work, close_sockets, worker_died).run()
    sys.stdout.flush()
    return status
