"""Control-plane bench: DescribeImages, ListImages and BatchGetImage on one repository holding 10,000 images.

    .venv/bin/python bench/control_plane_images.py --serve                 # start a throw-away Soko (SQLite)
    .venv/bin/python bench/control_plane_images.py --serve --database-url postgresql+psycopg://…/db
    .venv/bin/python bench/control_plane_images.py --endpoint http://127.0.0.1:5000 \
        --access-key-id AKIA… --secret-access-key …                       # an already running Soko

Setup: one config blob and one layer go up through the layer API (InitiateLayerUpload, UploadLayerPart,
CompleteLayerUpload), then ``--images`` tiny manifests that share them, each distinct by an annotation, go up with
PutImage (tagged ``t<N>``) from ``--clients`` threads. Then, for ``--duration`` seconds each, ``--clients`` threads,
each with its own boto3 client, call:

* DescribeImages, paginated (maxResults 100, walking the whole repository with nextToken),
* ListImages, paginated (maxResults 1000),
* BatchGetImage of 100 random tags per call (each call is a pull of 100 manifests).

A markdown table (calls/s, items/s, p50, p99) goes to stdout; progress to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
from botocore.config import Config

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from tests.e2e.servers import free_port  # noqa: E402
from tests.oci.helpers import sha256  # noqa: E402

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def soko_server(args: argparse.Namespace) -> Iterator[tuple[str, str, str]]:
    """A throw-away ``soko serve`` in its own process group; yields (endpoint, key id, secret)."""
    key_id, secret = "AKIABENCHROOT0000001", "bench-root-secret-0000000000000000000000"
    with tempfile.TemporaryDirectory(prefix="soko-bench-") as tmp:
        port = free_port()
        env = {
            **os.environ,
            "SOKO_LISTEN": f"127.0.0.1:{port}",
            "SOKO_DATA_DIR": tmp,
            "SOKO_WORKERS": str(args.workers),
            "SOKO_ROOT_ACCESS_KEY_ID": key_id,
            "SOKO_ROOT_SECRET_ACCESS_KEY": secret,
            "SOKO_LOG_LEVEL": "warning",
        }
        if args.database_url:
            env["SOKO_DATABASE_URL"] = args.database_url
        log_file = open(Path(tmp) / "server.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "soko", "serve"],
            env=env,
            cwd=REPO_ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
                if proc.poll() is not None:
                    raise SystemExit(f"soko serve exited early; see {log_file.name}")
                time.sleep(0.1)
            yield f"http://127.0.0.1:{port}", key_id, secret
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            log_file.close()


def make_client(endpoint: str, key_id: str, secret: str):
    return boto3.session.Session().client(
        "ecr",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(retries={"mode": "legacy", "max_attempts": 1}, max_pool_connections=4, tcp_keepalive=True),
    )


def upload_blob(ecr, repo: str, data: bytes) -> str:
    digest = sha256(data)
    if (
        ecr.batch_check_layer_availability(repositoryName=repo, layerDigests=[digest])["layers"][0]["layerAvailability"]
        == "AVAILABLE"
    ):
        return digest
    upload_id = ecr.initiate_layer_upload(repositoryName=repo)["uploadId"]
    ecr.upload_layer_part(
        repositoryName=repo, uploadId=upload_id, partFirstByte=0, partLastByte=len(data) - 1, layerPartBlob=data
    )
    ecr.complete_layer_upload(repositoryName=repo, uploadId=upload_id, layerDigests=[digest])
    return digest


def populate(args: argparse.Namespace, endpoint: str, key_id: str, secret: str) -> None:
    ecr = make_client(endpoint, key_id, secret)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()
    layer = os.urandom(4096)
    config_digest, layer_digest = upload_blob(ecr, args.repository, config), upload_blob(ecr, args.repository, layer)

    def manifest(n: int) -> str:
        return json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": len(config),
                           "digest": config_digest},
                "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": len(layer),
                            "digest": layer_digest}],
                "annotations": {"bench.n": str(n)},
            }
        )  # fmt: skip

    local = threading.local()
    done = [0]
    lock = threading.Lock()
    started = time.monotonic()

    def push(n: int) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = make_client(endpoint, key_id, secret)
        try:
            client.put_image(repositoryName=args.repository, imageManifest=manifest(n), imageTag=f"t{n}")
        except client.exceptions.ImageAlreadyExistsException:
            pass
        with lock:
            done[0] += 1
            if done[0] % 1000 == 0:
                log(f"  {done[0]} images ({done[0] / (time.monotonic() - started):.0f}/s)")

    with ThreadPoolExecutor(args.clients) as pool:
        list(pool.map(push, range(args.images)))
    log(f"put {args.images} images in {time.monotonic() - started:.1f} s")


def measure(
    name: str, args: argparse.Namespace, endpoint: str, key_id: str, secret: str, op: Callable[[object], int]
) -> dict:
    latencies: list[float] = []
    items = [0]
    errors = [0]
    lock = threading.Lock()
    ready = threading.Barrier(args.clients + 1)
    window: list[float] = []
    go = threading.Event()

    def worker() -> None:
        client = make_client(endpoint, key_id, secret)
        op(client)  # warm the connection before the clock starts
        ready.wait()
        go.wait()
        stop = window[0] + args.duration
        mine: list[float] = []
        count = 0
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            try:
                count += op(client)
            except Exception:
                with lock:
                    errors[0] += 1
                continue
            mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)
            items[0] += count

    threads = [threading.Thread(target=worker) for _ in range(args.clients)]
    for t in threads:
        t.start()
    ready.wait()  # every client is connected and warm
    window.append(time.monotonic())
    go.set()
    t0 = window[0]
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")

    result = {
        "op": name,
        "calls": len(latencies),
        "calls_per_s": len(latencies) / elapsed,
        "items_per_s": items[0] / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "errors": errors[0],
    }
    log(f"{name}: {result['calls_per_s']:.1f} calls/s, p99 {result['p99_ms']:.1f} ms, {errors[0]} errors")
    return result


def run(args: argparse.Namespace, endpoint: str, key_id: str, secret: str) -> None:
    admin = make_client(endpoint, key_id, secret)
    with contextlib.suppress(Exception):  # exists already, or created by the first push
        admin.create_repository(repositoryName=args.repository)
    if not args.skip_populate:
        populate(args, endpoint, key_id, secret)
    repo = args.repository

    def describe_page(client) -> int:
        token = getattr(threading.current_thread(), "token", None)
        kwargs = {"repositoryName": repo, "maxResults": 100}
        if token:
            kwargs["nextToken"] = token
        out = client.describe_images(**kwargs)
        threading.current_thread().token = out.get("nextToken")
        return len(out["imageDetails"])

    def list_page(client) -> int:
        token = getattr(threading.current_thread(), "list_token", None)
        kwargs = {"repositoryName": repo, "maxResults": 1000}
        if token:
            kwargs["nextToken"] = token
        out = client.list_images(**kwargs)
        threading.current_thread().list_token = out.get("nextToken")
        return len(out["imageIds"])

    def batch_get(client) -> int:
        ids = [{"imageTag": f"t{random.randrange(args.images)}"} for _ in range(100)]
        out = client.batch_get_image(repositoryName=repo, imageIds=ids)
        return len(out["images"])

    results = [
        measure("DescribeImages (100/page)", args, endpoint, key_id, secret, describe_page),
        measure("ListImages (1000/page)", args, endpoint, key_id, secret, list_page),
        measure("BatchGetImage (100 tags)", args, endpoint, key_id, secret, batch_get),
    ]
    print(
        f"\n{args.images} images in one repository, {args.clients} concurrent boto3 clients, "
        f"{args.duration:.0f} s each\n"
    )
    print("| operation | calls/s | items/s | p50 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['op']} | {r['calls_per_s']:.1f} | {r['items_per_s']:.0f} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['errors']} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", action="store_true", help="start a throw-away Soko for the run")
    parser.add_argument("--database-url", default="", help="with --serve: the metadata database (default SQLite)")
    parser.add_argument("--workers", type=int, default=2, help="with --serve: soko serve --workers")
    parser.add_argument("--endpoint", default=os.environ.get("SOKO_ENDPOINT", ""))
    parser.add_argument("--access-key-id", default=os.environ.get("AWS_ACCESS_KEY_ID", ""))
    parser.add_argument("--secret-access-key", default=os.environ.get("AWS_SECRET_ACCESS_KEY", ""))
    parser.add_argument("--repository", default="bench/images")
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--skip-populate", action="store_true", help="the repository already holds the images")
    args = parser.parse_args(argv)
    if args.serve:
        with soko_server(args) as (endpoint, key_id, secret):
            run(args, endpoint, key_id, secret)
        return 0
    if not (args.endpoint and args.access_key_id and args.secret_access_key):
        parser.error("give --serve, or --endpoint with --access-key-id and --secret-access-key")
    run(args, args.endpoint, args.access_key_id, args.secret_access_key)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
