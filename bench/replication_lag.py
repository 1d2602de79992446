"""Replication lag across regions (issue 16): two ``soko serve`` deployments (us-east-1 → eu-west-1, each its own
data dir and SQLite database); N images pushed to the source over /v2/ at once; lag = from the last push's 201 to
the moment every image's manifest is served by the destination (polled every 50 ms).

    .venv/bin/python bench/replication_lag.py --images 1 20
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.e2e.servers import soko_root_key, start_soko
from tests.oci.helpers import image_manifest, push_blob, put_manifest

ACCOUNT, DEST = "000000000000", "eu-west-1"


def push(client: httpx.Client, name: str, seed: int, layer_size: int) -> None:
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    layer = os.urandom(layer_size)
    for blob in (config, layer):
        push_blob(client, name, blob)
    r = put_manifest(client, name, "v1", image_manifest(config, [layer]))
    assert r.status_code == 201, r.text


def run(count: int, layer_size: int, work: Path) -> float:
    dest = start_soko(work / f"eu-{count}", env={"SOKO_REGION": DEST})
    source = None
    try:
        keys = soko_root_key(dest.data_dir)
        secret = work / f"secret-{count}"
        secret.write_text(keys["SecretAccessKey"])
        os.chmod(secret, 0o600)
        entry = {"access_key_id": keys["AccessKeyId"], "secret_access_key_file": str(secret)}
        regions = json.dumps({DEST: {"url": dest.url, "accounts": {ACCOUNT: entry}}})
        source = start_soko(work / f"us-{count}", env={"SOKO_REGIONS": regions})
        skeys = soko_root_key(source.data_dir)
        boto3.client(
            "ecr",
            endpoint_url=source.url,
            region_name="us-east-1",
            aws_access_key_id=skeys["AccessKeyId"],
            aws_secret_access_key=skeys["SecretAccessKey"],
        ).put_replication_configuration(
            replicationConfiguration={"rules": [{"destinations": [{"region": DEST, "registryId": ACCOUNT}]}]}
        )
        auth = httpx.BasicAuth(*source.credentials)
        with httpx.Client(base_url=source.url, auth=auth, timeout=60) as src, ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: push(src, f"lag/img{i}", i, layer_size), range(count)))
        pushed = time.monotonic()
        pending = {f"lag/img{i}" for i in range(count)}
        with httpx.Client(base_url=dest.url, auth=httpx.BasicAuth(*dest.credentials), timeout=60) as dst:
            while pending:
                for name in list(pending):
                    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
                    if dst.head(f"/v2/{name}/manifests/v1", headers=accept).status_code == 200:
                        pending.discard(name)
                if pending:
                    time.sleep(0.05)
                    if time.monotonic() - pushed > 300:
                        raise SystemExit(f"not replicated in 300 s: {sorted(pending)[:5]}")
        return time.monotonic() - pushed
    finally:
        for server in (source, dest):
            if server is not None:
                server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[1, 20])
    parser.add_argument("--layer-size", type=int, default=1 << 20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for count in args.images:
            lag = run(count, args.layer_size, Path(tmp))
            print(f"replication lag, {count} image(s) of {args.layer_size} B: {lag:.2f} s (last push → all pullable)")


if __name__ == "__main__":
    main()
