"""Shared fixtures: every metadata test runs on SQLite and on the local PostgreSQL (a fresh schema per test)."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

from soko.config import Settings, load_settings
from soko.crypto.driver import SealedDriver
from soko.crypto.keys import KeyRing
from soko.iam.secrets import MasterKey
from soko.meta import Database
from soko.registry import Registry
from soko.storage import FilesystemDriver
from tests.databases import PG_URL, fresh_database
from tests.migrated import close as close_migrated
from tests.migrated import migrated


def _pg_available() -> bool:
    try:
        engine = sa.create_engine(PG_URL)
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


_PG = _pg_available()


def pytest_collection_modifyitems(config, items) -> None:
    """AWS CLI tests run on SQLite only (unless marked ``both_databases``): they check the wire — what the real
    CLI sends, how it parses Soko's answers — while the domain behind each operation runs on both databases in the
    boto3 and domain tests. Each CLI call costs a second of the CLI's own start-up, so running them twice was the
    slowest part of the suite."""
    keep, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgresql = callspec is not None and callspec.params.get("database_url") == "postgresql"
        if on_postgresql and "aws_cli" in item.fixturenames and item.get_closest_marker("both_databases") is None:
            dropped.append(item)
        else:
            keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def pytest_unconfigure(config) -> None:
    close_migrated()  # the recycled PostgreSQL schemas no test took (each xdist worker has its own)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'metadata.db'}"
        return
    if not _PG:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {PG_URL}; CI must run every metadata test on it")
        pytest.skip("PostgreSQL not reachable")
    with fresh_database("postgresql", str(tmp_path)) as url:
        yield url


def make_settings(data_dir: str, database_url: str) -> Settings:
    """The settings every test server starts from: a data directory, a database and the root key below."""
    return load_settings(
        overrides={
            "data_dir": data_dir,
            "database_url": database_url,
            "root_access_key_id": ROOT_KEY_ID,
            "root_secret_access_key": ROOT_SECRET,
        },
        env={},
    )


def open_registry(settings: Settings) -> Registry:
    """A migrated database and blobs encrypted at rest, as Registry.open stores them (soko.crypto)."""
    os.makedirs(settings.data_dir, exist_ok=True)
    migrated(settings.effective_database_url)  # as Database.migrate leaves it, from a template (tests/migrated.py)
    db = Database(settings.effective_database_url, pool_size=4)
    ring = KeyRing.service(MasterKey.load(settings.master_key, settings.data_dir).storage_key)
    return Registry(settings, db, SealedDriver(FilesystemDriver(settings.blob_root), ring))


@pytest.fixture
def settings(tmp_path, database_url) -> Settings:
    return make_settings(str(tmp_path / "data"), database_url)


@pytest.fixture
def registry(settings) -> Iterator[Registry]:
    reg = open_registry(settings)
    yield reg
    reg.close()


# botocore's retries as the suite was written against them: legacy mode, one retry of transport errors and 5xx.
# (botocore 1.44 defaults to standard mode, which also retries LimitExceededException, hiding the first answer.)
SUITE_RETRIES = {"mode": "legacy", "max_attempts": 1}
ROOT_KEY_ID = "AKIATESTROOT00000001"
ROOT_SECRET = "test-root-secret-key-0000000000000000000"


@dataclass
class RunningServer:
    url: str
    host: str
    registry: Registry
    identity: object
    token: str  # the root's ECR authorizationToken: base64("AWS:<password>")
    app: Any = None  # the SokoApp serving (its state, e.g. the body budget, is this process's)

    @property
    def basic_auth(self) -> dict[str, str]:
        return {"Authorization": f"Basic {self.token}"}


class ServerThread:
    """A SokoApp served by the real HTTP engine (granian, as `soko serve` runs it) on real sockets, in a background
    thread of this process, so tests can reach into the same Registry."""

    def __init__(self, app, sockets: list[socket.socket], data_socket: socket.socket | None = None) -> None:
        from soko.server import run_worker

        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        async def main() -> None:
            self.stop = asyncio.Event()
            started.set()
            await run_worker(app, sockets, self.stop, data_sock=data_socket)

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(main())
            except BaseException as exc:  # surfaced by close()
                failure.append(exc)
                started.set()
            finally:
                self.loop.close()  # else its ResourceWarning fires in whichever test the collector next runs in

        self._failure = failure
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert started.wait(15), "server did not start"

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(15)
        if self._failure:
            raise self._failure[0]


def listening_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    return sock


@contextmanager
def serve(
    settings: Settings,
    registry: Registry,
    sockets: list[socket.socket] | None = None,
    endpoints: dict[tuple[str, int], str] | None = None,
    data_socket: socket.socket | None = None,
) -> Iterator[RunningServer]:
    """The real application and HTTP engine on real sockets (default: one fresh port; the first is the one ``url``
    names), in a background thread of this process, with the default account's root key and an ECR token for it.
    ``endpoints``: private-endpoint listeners, as ``SokoApp`` takes them; ``data_socket``: the data listener's
    (settings.data_listen must name its port). Every test server is built here."""
    from soko.app import SokoApp
    from soko.iam.service import Identity

    identity = Identity(registry.ctx)
    identity.bootstrap_root()
    token, _ = identity.tokens.issue(ROOT_KEY_ID, registry.ctx.clock())
    sockets = sockets or [listening_socket()]
    port = sockets[0].getsockname()[1]
    app = SokoApp(settings, registry, identity, endpoints)
    running = ServerThread(app, sockets, data_socket)
    try:
        yield RunningServer(f"http://127.0.0.1:{port}", f"127.0.0.1:{port}", registry, identity, token, app)
    finally:
        running.close()
        for sock in sockets:
            sock.close()


@pytest.fixture
def server(registry, settings) -> Iterator[RunningServer]:
    """The real application and HTTP engine on a real port, in a background thread, in this process."""
    with serve(settings, registry) as running:
        yield running


@pytest.fixture
def client(server):
    import httpx

    with httpx.Client(base_url=server.url, timeout=30, headers=server.basic_auth) as c:
        yield c


def aws_client(
    url: str,
    service: str = "ecr",
    key_id: str = ROOT_KEY_ID,
    secret: str = ROOT_SECRET,
    session_token: str | None = None,
):
    """A boto3 client for one of Soko's AWS APIs at ``url`` (default: signed with the default account's root key)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        aws_session_token=session_token,
        config=Config(retries=SUITE_RETRIES),
    )


@pytest.fixture
def aws(server, monkeypatch):
    """boto3 clients for Soko's AWS APIs, signed with the root key of the default account."""
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)

    def client(
        service: str = "ecr", key_id: str = ROOT_KEY_ID, secret: str = ROOT_SECRET, session_token: str | None = None
    ):
        return aws_client(server.url, service, key_id, secret, session_token)

    return client


@pytest.fixture
def aws_cli(server, tmp_path):
    """Run the real AWS CLI against Soko: aws_cli("ecr", "describe-repositories") → (exit code, stdout, stderr)."""
    import json as _json
    import subprocess
    import sys

    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "AWS_ACCESS_KEY_ID": ROOT_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": ROOT_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }
    aws_bin = os.path.join(os.path.dirname(sys.executable), "aws")

    def run(*args: str, env_extra: dict | None = None, input: str | None = None):
        proc = subprocess.run(
            [aws_bin, *args, "--endpoint-url", server.url, "--output", "json"],
            env={**env, **(env_extra or {})},
            capture_output=True,
            text=True,
            input=input,
            timeout=60,
        )
        out = proc.stdout
        try:
            parsed = _json.loads(out) if out.strip() else None
        except ValueError:
            parsed = out
        return proc.returncode, parsed, proc.stderr

    return run
