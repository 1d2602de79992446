"""kill -9 campaign: no acknowledged push is ever lost, whatever instant the server dies (issue 11).

Each round starts ``soko serve`` on the same data dir, runs pushes from several threads (monolithic, chunked, and a
manifest tagging each pushed layer set), kills the whole process group with SIGKILL at a random instant, and
restarts. After the last round it checks that every blob and manifest whose push was acknowledged (201) is served
byte for byte, that every upload session answers (no claim left locked), and that ``soko fsck`` is clean.

    .venv/bin/python bench/kill9.py --rounds 20 --workers 1
    .venv/bin/python bench/kill9.py --rounds 20 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.e2e.servers import run_fsck, start_soko
from tests.oci.helpers import sha256

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class Pusher(threading.Thread):
    """Pushes until told to stop or the server goes away; records what the server acknowledged."""

    def __init__(self, url: str, headers: dict, name: str, acked: dict, sessions: list, seed: int) -> None:
        super().__init__(daemon=True)
        self.client = httpx.Client(base_url=url, headers=headers, timeout=10)
        self.repo = f"kill9/{name}"
        self.acked = acked
        self.sessions = sessions
        self.rng = random.Random(seed)
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                layers = [self._blob() for _ in range(self.rng.randint(1, 3))]
                if None in layers:
                    continue
                config = json.dumps({"n": self.rng.random()}).encode()
                if self._monolithic(config) is None:
                    continue
                manifest = json.dumps({
                    "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config),
                               "size": len(config)},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s}
                               for d, s in layers],
                }).encode()
                tag = f"t{self.rng.randrange(1 << 30)}"
                r = self.client.put(f"/v2/{self.repo}/manifests/{tag}", content=manifest,
                                    headers={"Content-Type": OCI_MANIFEST})
                if r.status_code == 201:
                    self.acked[(self.repo, "manifest", tag)] = manifest
        except (httpx.HTTPError, OSError):
            pass  # the server was killed

    def _blob(self) -> tuple[str, int] | None:
        data = os.urandom(self.rng.choice([1 << 10, 1 << 20, 9 << 20]))
        digest = self._chunked(data) if self.rng.random() < 0.5 else self._monolithic(data)
        return None if digest is None else (digest, len(data))

    def _monolithic(self, data: bytes) -> str | None:
        digest = sha256(data)
        r = self.client.post(f"/v2/{self.repo}/blobs/uploads/", params={"digest": digest}, content=data)
        if r.status_code != 201:
            return None
        self.acked[(self.repo, "blob", digest)] = data
        return digest

    def _chunked(self, data: bytes) -> str | None:
        r = self.client.post(f"/v2/{self.repo}/blobs/uploads/")
        if r.status_code != 202:
            return None
        location = r.headers["Location"]
        self.sessions.append(location)
        piece = 1 << 20
        for start in range(0, len(data), piece):
            chunk = data[start : start + piece]
            r = self.client.patch(location, content=chunk,
                                  headers={"Content-Range": f"{start}-{start + len(chunk) - 1}"})
            if r.status_code != 202:
                return None
            location = r.headers["Location"]
        digest = sha256(data)
        r = self.client.put(location, params={"digest": digest})
        if r.status_code != 201:
            return None
        self.acked[(self.repo, "blob", digest)] = data
        return digest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--pushers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    acked: dict = {}
    sessions: list[str] = []
    with tempfile.TemporaryDirectory(prefix="soko-kill9-") as tmp:
        data_dir = Path(tmp) / "data"
        for round_no in range(args.rounds):
            server = start_soko(data_dir, workers=args.workers, log_path=Path(tmp) / f"round{round_no}.log")
            pushers = [Pusher(server.url, server.auth_header(), f"p{i}", acked, sessions, rng.randrange(1 << 30))
                       for i in range(args.pushers)]
            for p in pushers:
                p.start()
            time.sleep(rng.uniform(0.2, 3.0))
            server.kill()  # SIGKILL to the whole process group, mid-whatever
            for p in pushers:
                p.stop.set()
                p.join(15)
            print(f"round {round_no + 1}/{args.rounds}: killed; {len(acked)} acknowledged pushes so far", flush=True)
        server = start_soko(data_dir, workers=args.workers, log_path=Path(tmp) / "verify.log")
        lost, locked = [], 0
        try:
            with httpx.Client(base_url=server.url, headers=server.auth_header(), timeout=30) as client:
                for (repo, kind, ref), content in acked.items():
                    path = f"/v2/{repo}/{'blobs' if kind == 'blob' else 'manifests'}/{ref}"
                    r = client.get(path, headers={"Accept": OCI_MANIFEST})
                    if r.status_code != 200 or r.content != content:
                        lost.append((path, r.status_code))
                for location in sessions:
                    r = client.get(location)  # 204 (resumable) or 404 (completed/cancelled); never locked
                    if r.status_code not in (204, 404):
                        locked += 1
        finally:
            server.stop()
        fsck = run_fsck(data_dir)
    print(f"\n{args.rounds} kill -9 rounds, {args.workers} worker(s): {len(acked)} acknowledged pushes, "
          f"{len(lost)} lost, {locked} upload sessions not answering, fsck exit {fsck.returncode}")
    for item in lost[:10]:
        print("  lost:", item)
    if fsck.returncode:
        print(fsck.stdout[-2000:])
    return 1 if lost or locked or fsck.returncode else 0


if __name__ == "__main__":
    sys.exit(main())
