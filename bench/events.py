"""Push throughput with events on and off, and event delivery lag under that push load.
``python bench/events.py [--seconds 10] [--clients 8] [--rounds 2] [--database sqlite|postgresql]``

Each run starts a fresh ``soko serve`` (one worker, a fresh data dir; PostgreSQL: a fresh schema) and pushes small
images (a config and a 4 KiB layer, unique each, then the manifest under a new tag) over HTTP from ``--clients``
threads for ``--seconds``: pushes per second. ``on``: a webhook target (``soko events add``) delivers every event to
a real receiver on loopback while the load runs; lag = the receiver's arrival time minus the event's commit time
(``event_outbox.created_at``), p50/p99 over every event, after the load has drained. ``off``: the same server with
the outbox write removed (a wrapper replaces ``UnitOfWork.emit`` with a no-op; no target, no delivery): what events
cost in all. Rounds alternate off/on; the markdown table goes to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

ENV = {"SOKO_EVENT_TARGET_ALLOW_CIDRS": "127.0.0.1/32", "SOKO_ACCESS_LOG": "off", "SOKO_LOG_LEVEL": "warning"}
NO_EVENTS = """import sys
from soko.kernel.unit_of_work import UnitOfWork
UnitOfWork.emit = lambda self, event: None  # the bench's "off": no outbox row, nothing to deliver
from soko.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _push_load(server, seconds: float, clients: int) -> int:
    import httpx
    from tests.oci.helpers import push_blob, put_manifest

    stop = time.monotonic() + seconds
    counts = [0] * clients

    def worker(n: int) -> None:
        auth = httpx.BasicAuth(*server.credentials) if server.credentials else None
        with httpx.Client(base_url=server.url, auth=auth, timeout=60) as client:
            i = 0
            while time.monotonic() < stop:
                seed = f"{n}-{i}-{os.urandom(4).hex()}"
                config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
                layer = os.urandom(4096)
                push_blob(client, f"bench/events-{n}", config)
                push_blob(client, f"bench/events-{n}", layer)
                manifest = {
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {
                        "mediaType": "application/vnd.oci.image.config.v1+json",
                        "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
                        "size": len(config),
                    },
                    "layers": [
                        {
                            "mediaType": "application/vnd.oci.image.layer.v1.tar",
                            "digest": "sha256:" + hashlib.sha256(layer).hexdigest(),
                            "size": len(layer),
                        }
                    ],
                }
                r = put_manifest(client, f"bench/events-{n}", f"t{i}", manifest)
                assert r.status_code == 201, r.text
                i += 1
            counts[n] = i

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts)


def _database(kind: str, tmp: str) -> contextlib.AbstractContextManager[str]:
    from tests.databases import fresh_database

    return fresh_database(kind, tmp, prefix="bench")


def run(mode: str, kind: str, seconds: float, clients: int) -> dict:
    from tests.e2e.servers import start_soko
    from tests.events.receiver import Receiver

    with tempfile.TemporaryDirectory() as tmp, _database(kind, tmp) as url:
        data_dir = Path(tmp) / "data"
        env = ENV | ({"SOKO_DATABASE_URL": url} if kind == "postgresql" else {})
        template = None
        if mode == "off":
            wrapper = Path(tmp) / "serve_without_events.py"
            wrapper.write_text(NO_EVENTS)
            template = f"{{python}} {wrapper} serve --listen {{listen}} --data-dir {{data_dir}} --workers 1"
        server = start_soko(data_dir, workers=1, template=template, env=env)
        receiver = Receiver().start()
        try:
            if mode == "on":
                clean = {k: v for k, v in os.environ.items() if not k.startswith("SOKO_")} | env
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "soko",
                        "events",
                        "add",
                        "hook",
                        "--url",
                        receiver.url,
                        "--data-dir",
                        str(data_dir),
                    ],
                    check=True,
                    capture_output=True,
                    env=clean,
                )
            pushes = _push_load(server, seconds, clients)
            result = {"mode": mode, "database": kind, "pushes": pushes, "per_second": pushes / seconds}
            if mode == "on":
                expected = _outbox(data_dir, url if kind == "postgresql" else None)
                receiver.wait_for(len(expected), timeout=120)
                arrived = {}
                for request in receiver.requests:
                    event_id = json.loads(request["body"])["id"]
                    arrived.setdefault(event_id, request["at"])
                lags = sorted(arrived[e] - created for e, created in expected.items() if e in arrived)
                result |= {
                    "events": len(expected),
                    "delivered": len(arrived),
                    "lag_p50_ms": 1000 * statistics.median(lags),
                    "lag_p99_ms": 1000 * lags[min(len(lags) - 1, int(0.99 * len(lags)))],
                }
            return result
        finally:
            server.stop()
            receiver.stop()


def _outbox(data_dir: Path, url: str | None) -> dict[str, float]:
    import sqlalchemy as sa

    from soko.meta.schema import event_outbox

    engine = sa.create_engine(url or f"sqlite:///{data_dir / 'metadata.db'}")
    try:
        with engine.connect() as conn:
            return dict(conn.execute(sa.select(event_outbox.c.event_id, event_outbox.c.created_at)).all())
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="postgresql")
    args = parser.parse_args()
    results = []
    for _ in range(args.rounds):
        for mode in ("off", "on"):
            results.append(run(mode, args.database, args.seconds, args.clients))
            print(json.dumps(results[-1]), file=sys.stderr)
    off = statistics.mean(r["per_second"] for r in results if r["mode"] == "off")
    on = statistics.mean(r["per_second"] for r in results if r["mode"] == "on")
    print(f"| {args.database}, {args.clients} clients, {args.seconds:.0f} s x {args.rounds} | pushes/s |")
    print("|---|---|")
    print(f"| events off (no outbox row, no delivery) | {off:.1f} |")
    print(f"| events on (outbox + webhook delivery) | {on:.1f} ({100 * (on - off) / off:+.1f} %) |")
    for r in results:
        if r["mode"] == "on":
            print(
                f"| delivery lag, {r['events']} events ({r['delivered']} delivered) | "
                f"p50 {r['lag_p50_ms']:.0f} ms, p99 {r['lag_p99_ms']:.0f} ms |"
            )


if __name__ == "__main__":
    main()
