"""Push throughput with events off, outbox only and on, and event delivery lag under that push load.
``python bench/events.py [--seconds 10] [--clients 8] [--rounds 5] [--database sqlite|postgresql]``

Each run starts a fresh ``soko serve`` (one worker, a fresh data dir; PostgreSQL: a fresh schema) and pushes small
images (a config and a 4 KiB layer, unique each, then the manifest under a new tag) over HTTP from ``--clients``
threads for ``--seconds``: pushes per second. Modes:

* ``off``: the outbox write removed (a wrapper replaces ``UnitOfWork.emit`` with a no-op): no event, no delivery;
* ``outbox``: events written (the outbox row, its lock and notification) but no webhook target;
* ``on``: a webhook target (``soko events add``) delivers every event to a real receiver on loopback, in a process
  of its own (so it takes no GIL from the load's threads); lag = the receiver's arrival time minus the event's
  commit time (``event_outbox.created_at``), p50/p99 over every event, after the load has drained.

Each round runs every mode once, in a rotated order (no mode always first); the table reports each mode's median
and range over the rounds and the per-round ratios to ``off`` (the machine's load moves between rounds, so the
ratios within a round are the fairer figure), for throughput and for the server's CPU time per push (its process
tree's utime + stime from /proc, over the load and, ``on``, until every event is delivered, less its idle rate
measured for 3 s before): on a shared machine throughput follows the neighbours' load, CPU per push much less.
PostgreSQL's own CPU is not counted (its server is shared). The markdown table goes to stdout, each run's JSON to
stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
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
sys.path.insert(0, str(ROOT / "bench"))

from procstat import cpu_seconds  # noqa: E402

ENV = {"SOKO_EVENT_TARGET_ALLOW_CIDRS": "127.0.0.1/32", "SOKO_ACCESS_LOG": "off", "SOKO_LOG_LEVEL": "warning"}
IDLE = 3.0  # seconds of the idle server's CPU measured before each load, and subtracted from it
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

    with tempfile.TemporaryDirectory() as tmp, _database(kind, tmp) as url:
        data_dir = Path(tmp) / "data"
        env = ENV | ({"SOKO_DATABASE_URL": url} if kind == "postgresql" else {})
        template = None
        if mode == "off":
            wrapper = Path(tmp) / "serve_without_events.py"
            wrapper.write_text(NO_EVENTS)
            template = f"{{python}} {wrapper} serve --listen {{listen}} --data-dir {{data_dir}} --workers 1"
        server = start_soko(data_dir, workers=1, template=template, env=env)
        receiver = arrivals = None
        try:
            if mode == "on":
                arrivals = Path(tmp) / "arrivals.json"
                receiver = subprocess.Popen(
                    [sys.executable, __file__, "--receiver", str(arrivals)], stdout=subprocess.PIPE, text=True
                )
                assert receiver.stdout is not None
                receiver_url = receiver.stdout.readline().strip()
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
                        receiver_url,
                        "--data-dir",
                        str(data_dir),
                    ],
                    check=True,
                    capture_output=True,
                    env=clean,
                )
            idle_from, idle_cpu = time.monotonic(), cpu_seconds(server.pid)
            time.sleep(IDLE)  # the server's own upkeep (job ticks, samples): not the pushes' cost
            idle_rate = (cpu_seconds(server.pid) - idle_cpu) / (time.monotonic() - idle_from)
            load_before = os.getloadavg()[0]
            started, cpu_before = time.monotonic(), cpu_seconds(server.pid)
            pushes = _push_load(server, seconds, clients)
            cpu = cpu_seconds(server.pid) - cpu_before  # "on": the rest of the delivery is added below
            result = {
                "mode": mode,
                "database": kind,
                "pushes": pushes,
                "per_second": pushes / seconds,
                "load": round((load_before + os.getloadavg()[0]) / 2, 1),
            }
            if mode == "on":
                assert receiver is not None and arrivals is not None
                expected = _outbox(data_dir, url if kind == "postgresql" else None)
                deadline = time.monotonic() + 120
                arrived: dict[str, float] = {}
                while time.monotonic() < deadline:
                    arrived = _arrivals(receiver, arrivals)
                    if len(arrived) >= len(expected):
                        break
                    time.sleep(0.5)
                cpu = cpu_seconds(server.pid) - cpu_before  # every event delivered: its whole cost
                lags = sorted(arrived[e] - created for e, created in expected.items() if e in arrived)
                result |= {
                    "events": len(expected),
                    "delivered": len(arrived),
                    "lag_p50_ms": 1000 * statistics.median(lags),
                    "lag_p99_ms": 1000 * lags[min(len(lags) - 1, int(0.99 * len(lags)))],
                    "lags": lags,
                }
            cpu -= idle_rate * (time.monotonic() - started)
            result["cpu_ms_per_push"] = 1000 * cpu / max(pushes, 1)
            return result
        finally:
            server.stop()
            if receiver is not None:
                receiver.kill()
                receiver.wait()


def _arrivals(receiver: subprocess.Popen, path: Path) -> dict[str, float]:
    """The receiver process's first arrival time of each event id (it writes them when signalled)."""
    path.unlink(missing_ok=True)
    receiver.send_signal(signal.SIGUSR1)
    for _ in range(100):
        with contextlib.suppress(FileNotFoundError, ValueError):
            return json.loads(path.read_text())
        time.sleep(0.05)
    raise RuntimeError("the receiver process did not answer")


def serve_receiver(path: str) -> None:
    """``--receiver PATH``: a webhook receiver in this process; prints its URL, and on SIGUSR1 writes
    {event id: first arrival time} to PATH (atomically)."""
    from tests.events.receiver import Receiver

    receiver = Receiver().start()

    def dump(*_: object) -> None:
        first: dict[str, float] = {}
        for request in list(receiver.requests):
            first.setdefault(json.loads(request["body"])["id"], request["at"])
        Path(path + ".tmp").write_text(json.dumps(first))
        os.replace(path + ".tmp", path)

    signal.signal(signal.SIGUSR1, dump)
    print(receiver.url, flush=True)
    while True:
        signal.pause()


def _outbox(data_dir: Path, url: str | None) -> dict[str, float]:
    import sqlalchemy as sa

    from soko.meta.schema import event_outbox

    engine = sa.create_engine(url or f"sqlite:///{data_dir / 'metadata.db'}")
    try:
        with engine.connect() as conn:
            return dict(conn.execute(sa.select(event_outbox.c.event_id, event_outbox.c.created_at)).all())
    finally:
        engine.dispose()


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--modes", default="off,outbox,on", help="comma-separated: off, outbox, on")
    parser.add_argument("--receiver", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:
        serve_receiver(args.receiver)
        return
    modes = args.modes.split(",")
    rounds: list[dict[str, dict]] = []
    for n in range(args.rounds):
        done: dict[str, dict] = {}
        for mode in modes[n % len(modes) :] + modes[: n % len(modes)]:
            done[mode] = run(mode, args.database, args.seconds, args.clients)
            print(json.dumps({k: v for k, v in done[mode].items() if k != "lags"}), file=sys.stderr)
        rounds.append(done)
    loads = [r["load"] for done in rounds for r in done.values()]
    print(
        f"| {args.database}, {args.clients} clients, {args.seconds:.0f} s x {args.rounds} rounds, load "
        f"{min(loads):.0f}-{max(loads):.0f} | pushes/s: median (range) | vs off, per round: median (range) "
        "| server CPU ms per push | vs off, per round |"
    )
    print("|---|---|---|---|---|")
    for mode, label in (
        ("off", "events off (no outbox row, no delivery)"),
        ("outbox", "outbox only (events written, no target)"),
        ("on", "events on (outbox + webhook delivery)"),
    ):
        if mode not in modes:
            continue
        rates = [done[mode]["per_second"] for done in rounds]
        ratios = (
            [100 * (done[mode]["per_second"] / done["off"]["per_second"] - 1) for done in rounds]
            if "off" in modes and mode != "off"
            else []
        )
        versus = f"{statistics.median(ratios):+.1f} % ({min(ratios):+.1f} to {max(ratios):+.1f})" if ratios else "-"
        cpu = [done[mode]["cpu_ms_per_push"] for done in rounds]
        cpu_ratios = (
            [100 * (done[mode]["cpu_ms_per_push"] / done["off"]["cpu_ms_per_push"] - 1) for done in rounds]
            if "off" in modes and mode != "off"
            else []
        )
        cpu_versus = (
            f"{statistics.median(cpu_ratios):+.1f} % ({min(cpu_ratios):+.1f} to {max(cpu_ratios):+.1f})"
            if cpu_ratios
            else "-"
        )
        print(f"| {label} | {_spread(rates)} | {versus} | {_spread(cpu)} | {cpu_versus} |")
    if "on" in modes:
        lags = sorted(lag for done in rounds for lag in done["on"]["lags"])
        events = sum(done["on"]["events"] for done in rounds)
        delivered = sum(done["on"]["delivered"] for done in rounds)
        p50s = [done["on"]["lag_p50_ms"] for done in rounds]
        p99s = [done["on"]["lag_p99_ms"] for done in rounds]
        print(
            f"| delivery lag, {events} events ({delivered} delivered), all rounds | "
            f"p50 {1000 * statistics.median(lags):.0f} ms, p99 {1000 * lags[int(0.99 * (len(lags) - 1))]:.0f} ms | "
            f"per round: p50 {min(p50s):.0f}-{max(p50s):.0f} ms, p99 {min(p99s):.0f}-{max(p99s):.0f} ms | | |"
        )


if __name__ == "__main__":
    main()
