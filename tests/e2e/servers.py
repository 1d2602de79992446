"""Start and stop registry servers (Soko and Distribution) as subprocesses.

Shared by the end-to-end tests and by ``bench/run.py``. Credentials live in one place: :func:`start_soko`
provisions them (:func:`soko_login`: the data dir's root key + ECR ``GetAuthorizationToken``); the env vars read
by :func:`registry_credentials` override that.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DISTRIBUTION_BIN = "/usr/bin/docker-registry"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
#: which registry the end-to-end tests drive: ``soko`` (default) or ``distribution`` (proves the tests)
E2E_TARGET = os.environ.get("SOKO_E2E_TARGET", "soko")


SOKO_REGION = "us-east-1"


def registry_credentials() -> tuple[str, str] | None:
    """Explicit (user, password) from ``SOKO_E2E_USER``/``SOKO_E2E_PASSWORD``, if set."""
    user, password = os.environ.get("SOKO_E2E_USER"), os.environ.get("SOKO_E2E_PASSWORD")
    if user and password:
        return user, password
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def child_pids(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (a supervisor's workers)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.add(int(entry))
    return found


def wait_for(condition, what: str, server: RegistryServer, timeout: float = 15.0) -> None:
    """Until ``condition()``; AssertionError naming ``what`` (and the server's log) past ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:.0f} s\n{server.log_tail()}")
        time.sleep(0.1)


class ServerError(RuntimeError):
    pass


@dataclass
class RegistryServer:
    """A running registry process. ``host`` is ``127.0.0.1:PORT`` (what skopeo's docker:// wants)."""

    kind: str
    host: str
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes]
    credentials: tuple[str, str] | None = None
    exit_code: int | None = field(default=None)
    ca: Path | None = None  # serving HTTPS with a certificate this CA issued

    @property
    def url(self) -> str:
        return f"{'https' if self.ca else 'http'}://{self.host}"

    def ssl_context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=str(self.ca)) if self.ca else None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def auth_header(self) -> dict[str, str]:
        if self.credentials is None:
            return {}
        token = base64.b64encode(":".join(self.credentials).encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def log_tail(self, limit: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return "<no log>"

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last_error = "no attempt"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(
                    f"{self.kind} exited with {self.proc.returncode} before answering GET /v2/\n"
                    f"--- server output ---\n{self.log_tail()}"
                )
            request = urllib.request.Request(f"{self.url}/v2/", headers=self.auth_header())
            try:
                with urllib.request.urlopen(request, timeout=2, context=self.ssl_context()) as response:
                    if response.status == 200:
                        return
                    last_error = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and self.credentials is None:
                    return  # up, and asking for credentials: the caller provisions them next
                last_error = f"HTTP {exc.code}"
            except (OSError, urllib.error.URLError) as exc:
                last_error = repr(exc)
            time.sleep(0.1)
        self.kill()
        raise ServerError(
            f"{self.kind} did not answer 200 on GET {self.url}/v2/ within {timeout:.0f}s "
            f"(last: {last_error})\n--- server output ---\n{self.log_tail()}"
        )

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """Graceful stop: SIGTERM, wait, then SIGKILL the whole process group if needed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise ServerError(f"{self.kind} ignored SIGTERM for {timeout:.0f}s\n{self.log_tail()}") from None
        self.exit_code = self.proc.returncode
        self._kill_group()  # stray workers, if any
        return self.exit_code

    def kill(self) -> None:
        self._kill_group()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def _kill_group(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _spawn(kind: str, argv: Sequence[str], host: str, data_dir: Path, log_path: Path,
           env: dict[str, str] | None = None, cwd: Path | None = None) -> RegistryServer:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,  # own process group: Ctrl-C does not hit it, killpg reaches workers
        )
    return RegistryServer(kind, host, data_dir, log_path, proc, credentials=registry_credentials())


def _start_with_retries(
    start: Callable[[int], RegistryServer], attempts: int = 3, port: int | None = None
) -> RegistryServer:
    """``port``: that one (a restart where others know the address), else a free one, retried on a race."""
    error: ServerError | None = None
    for _ in range(1 if port else attempts):
        server = start(port or free_port())
        try:
            server.wait_ready()
            return server
        except ServerError as exc:  # most likely a port race: try another port
            server.kill()
            error = exc
    assert error is not None
    raise error


def soko_argv(listen: str, data_dir: Path, workers: int | None = None,
              template: str | None = None) -> list[str]:
    """``template`` (bench ``--soko-cmd``) may use {python}, {listen}, {data_dir}, {workers}."""
    if template:
        return template.format(python=sys.executable, listen=listen, data_dir=data_dir,
                               workers=workers or 1).split()
    argv = [sys.executable, "-m", "soko", "serve", "--listen", listen, "--data-dir", str(data_dir)]
    if workers is not None:
        argv += ["--workers", str(workers)]
    return argv


def start_soko(data_dir: Path, *, workers: int | None = None, template: str | None = None,
               log_path: Path | None = None, extra_args: Sequence[str] = (),
               env: dict[str, str] | None = None, tls: Any = None, port: int | None = None) -> RegistryServer:
    """``port``: listen there (default: a free port).
    ``extra_args`` go after ``soko serve``'s own (e.g. ``--endpoint vpce-…=127.0.0.2:PORT``); ``env`` adds
    variables (e.g. ``SOKO_ROOT_ACCESS_KEY_ID``) to the otherwise ``SOKO_``-free environment. ``tls``: serve
    HTTPS with its ``cert`` and ``key`` files (a tests.tls_certs.Pki), trusting its ``ca``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log = log_path or data_dir.parent / f"{data_dir.name}.log"
    if tls is not None:
        extra_args = [*extra_args, "--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]

    def start(port: int) -> RegistryServer:
        host = f"127.0.0.1:{port}"
        argv = soko_argv(host, data_dir, workers, template) + list(extra_args)
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SOKO_")}  # no host config leaks in
        server = _spawn("soko", argv, host, data_dir, log, {**clean, **(env or {})})
        server.ca = tls.ca if tls is not None else None
        return server

    server = _start_with_retries(start, port=port)
    if server.credentials is None and _requires_auth(server):
        env = env or {}
        root_key = None
        if env.get("SOKO_ROOT_ACCESS_KEY_ID") and env.get("SOKO_ROOT_SECRET_ACCESS_KEY"):  # no root-credentials
            root_key = {"AccessKeyId": env["SOKO_ROOT_ACCESS_KEY_ID"],
                        "SecretAccessKey": env["SOKO_ROOT_SECRET_ACCESS_KEY"]}
        try:
            server.credentials = soko_login(server, root_key, region=env.get("SOKO_REGION", SOKO_REGION))
            server.wait_ready()  # now with credentials: must be 200
        except BaseException:
            server.kill()
            raise
    return server


def _requires_auth(server: RegistryServer) -> bool:
    try:
        with urllib.request.urlopen(f"{server.url}/v2/", timeout=5, context=server.ssl_context()):
            return False
    except urllib.error.HTTPError as exc:
        return exc.code == 401


def soko_root_key(data_dir: Path) -> dict[str, str]:
    """The default account's root access key, which ``soko serve`` writes into a fresh data dir."""
    return dict(json.loads((data_dir / "root-credentials").read_text()))


def soko_login(
    server: RegistryServer, root_key: dict[str, str] | None = None, region: str = SOKO_REGION
) -> tuple[str, str]:
    """Registry credentials the ECR way: the test server's own root key (``root_key``, else the data dir's
    ``root-credentials``) calls ``GetAuthorizationToken`` over Soko's AWS API; the token is base64
    ``AWS:<password>`` for HTTP Basic auth."""
    import boto3  # test dependency; only needed once Soko asks for credentials

    keys = root_key or soko_root_key(server.data_dir)
    ecr = boto3.client(
        "ecr", endpoint_url=server.url, region_name=region, verify=str(server.ca) if server.ca else None,
        aws_access_key_id=keys["AccessKeyId"], aws_secret_access_key=keys["SecretAccessKey"],
    )
    token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    user, _, password = base64.b64decode(token).decode().partition(":")
    return user, password


def distribution_config(root: Path, host: str, *, cache: str | None = "inmemory", access_log: bool = True,
                        log_level: str = "info", s3: dict[str, str] | None = None) -> str:
    """Distribution 2.8.2 config: filesystem storage (or its ``s3`` driver with these parameters: bucket,
    regionendpoint, accesskey, secretkey…), deletes enabled, plain HTTP on loopback."""
    cache_block = f"  cache:\n    blobdescriptor: {cache}\n" if cache else ""
    if s3 is None:
        driver = f"  filesystem:\n    rootdirectory: {root}\n"
    else:  # with a regionendpoint, 2.8's driver addresses buckets path-style
        params = {"region": "us-east-1", "secure": "false", "v4auth": "true", **s3}
        driver = "  s3:\n" + "".join(f"    {key}: {value}\n" for key, value in params.items())
        driver += "  redirect:\n    disable: true\n"
    return (
        "version: 0.1\n"
        "log:\n"
        f"  level: {log_level}\n"
        f"  accesslog:\n    disabled: {'false' if access_log else 'true'}\n"
        "storage:\n"
        f"{driver}"
        "  delete:\n    enabled: true\n"
        f"{cache_block}"
        "  maintenance:\n    uploadpurging:\n      enabled: false\n"
        "http:\n"
        f"  addr: {host}\n"
    )


def start_distribution(data_dir: Path, *, cache: str | None = "inmemory", access_log: bool = True,
                       log_level: str = "info", binary: str = DISTRIBUTION_BIN,
                       log_path: Path | None = None, s3: dict[str, str] | None = None) -> RegistryServer:
    """Start Distribution (``docker-registry serve CONFIG``) with filesystem storage under ``data_dir`` (or in the
    bucket ``s3`` describes: see :func:`distribution_config`)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log = log_path or data_dir.parent / f"{data_dir.name}.log"
    config = data_dir.parent / f"{data_dir.name}.yml"

    def start(port: int) -> RegistryServer:
        host = f"127.0.0.1:{port}"
        config.write_text(distribution_config(data_dir, host, cache=cache, access_log=access_log,
                                               log_level=log_level, s3=s3))
        # the bucket is reached with the config's keys alone: no AWS_* of the host (AWS_CA_BUNDLE breaks its SDK)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "AWS_"))}
        return _spawn("distribution", [binary, "serve", str(config)], host, data_dir, log, env)

    return _start_with_retries(start)


def run_fsck(data_dir: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "soko", "fsck", "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def start_soko_with_serve_sh(repo: Path, data_dir: Path) -> RegistryServer:
    """``scripts/serve.sh --listen 127.0.0.1:PORT --data-dir DATA_DIR``, as the README starts Soko (a free port and
    a data dir of the test's own instead of the defaults). serve.sh runs bootstrap.sh first: with the venv already
    set up (scripts/test.sh does that) it installs nothing, then execs ``.venv/bin/soko serve``."""

    def start(port: int) -> RegistryServer:
        host = f"127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SOKO_", "AWS_"))}
        argv = [str(repo / "scripts" / "serve.sh"), "--listen", host, "--data-dir", str(data_dir)]
        return _spawn("soko", argv, host, data_dir, data_dir.parent / "soko.log", env, cwd=repo)

    return _start_with_retries(start)
