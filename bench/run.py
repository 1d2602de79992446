"""Soko vs Distribution, side by side in one run on loopback.  ``python bench/run.py [--quick]``

Interleaved rounds (server order rotated each round), medians and paired ratios; markdown on stdout,
JSON in bench/results/latest.json. See bench/README.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.e2e.images import build_image  # noqa: E402
from tests.e2e.servers import RegistryServer, free_port, start_distribution, start_soko  # noqa: E402
from tests.e2e.skopeo import Skopeo  # noqa: E402

import load  # noqa: E402
import ops  # noqa: E402
import report  # noqa: E402
import storm  # noqa: E402
from procstat import RssSampler, cpu_seconds, hwm_bytes  # noqa: E402

MiB = 1 << 20
MB = 1e6
MANIFEST_REPO, MANIFEST_TAG = "bench/manifest", "latest"
PULLS_PER_ROUND = 4


@dataclass(frozen=True)
class Config:
    rounds: int
    blob_mib: int
    chunk_mib: int
    duration: float
    big_mib: int
    layer_mib: int
    variants: list[int]
    soko_cmd: str | None
    skopeo: bool
    distribution_cache: str | None
    storm_clients: list[int]
    storm_big_mib: int
    cache_off: bool = False  # also run each Soko variant with the plaintext cache off (soko-wN-nocache)
    data_listener: bool = True  # Soko serves with --data-listen (large cached blobs sent with sendfile)
    in_band: bool = False  # also run each Soko variant without the data listener (soko-wN-inband)
    pulls_only: bool = False  # the pull rows (and the monolithic push they follow) only


def random_data(seed: str, size: int) -> bytes:
    """Deterministic incompressible bytes (``randbytes`` is limited to < 256 MiB per call)."""
    piece = 16 * MiB
    return b"".join(random.Random(f"{seed}/{i}").randbytes(min(piece, size - i)) for i in range(0, size, piece))


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short run (~1.5 min): 3 s loads, smaller blobs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", default=None, help="Soko worker counts to compare, e.g. 2,1")
    parser.add_argument("--soko-cmd", default=None,
                        help="command template instead of `python -m soko serve` ({python} {listen} {data_dir} "
                             "{workers}), or 'distribution' to stand in a second Distribution (harness test)")
    parser.add_argument("--no-skopeo", action="store_true", help="skip the skopeo push/pull test")
    parser.add_argument("--storm", default=None, help="concurrent pullers per storm, e.g. 32,128 (0: no storm)")
    parser.add_argument("--distribution-cache", default="inmemory", choices=["inmemory", "none"])
    parser.add_argument("--cache-off", action="store_true",
                        help="also run each Soko variant with its plaintext blob cache off (soko-wN-nocache)")
    parser.add_argument("--no-data-listener", action="store_true",
                        help="run Soko without --data-listen (every blob body sent by granian, in-band)")
    parser.add_argument("--in-band", action="store_true",
                        help="also run each Soko variant without its data listener (soko-wN-inband)")
    parser.add_argument("--pulls", action="store_true",
                        help="only the monolithic push and the pull rows (first, warm, CPU, storms): no chunked "
                             "push, manifest loads, skopeo or memory test")
    parser.add_argument("--workdir", default=None, help="parent of the temporary directory (default: $TMPDIR)")
    parser.add_argument("--output", default=str(REPO / "bench" / "results" / "latest.json"))
    args = parser.parse_args(argv)
    quick = args.quick
    workers = args.workers or ("2" if quick else "2,1")
    config = Config(
        rounds=max(1, args.rounds),
        blob_mib=128 if quick else 256,
        chunk_mib=16,
        duration=3.0 if quick else 10.0,
        big_mib=512 if quick else 2048,
        layer_mib=2 if quick else 8,
        variants=[int(n) for n in workers.split(",") if n],
        soko_cmd=args.soko_cmd,
        skopeo=not args.no_skopeo,
        distribution_cache=None if args.distribution_cache == "none" else args.distribution_cache,
        storm_clients=[int(n) for n in (args.storm or ("32" if quick else "32,128")).split(",") if int(n)],
        storm_big_mib=32 if quick else 100,
        cache_off=args.cache_off,
        data_listener=not args.no_data_listener,
        in_band=args.in_band and not args.no_data_listener,
        pulls_only=args.pulls,
    )
    return config, args


class Bench:
    def __init__(self, config: Config, workdir: Path, stack: contextlib.ExitStack) -> None:
        self.config, self.workdir, self.stack = config, workdir, stack
        self.servers: dict[str, RegistryServer] = {}
        self.values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        self.extra: dict[str, dict[str, float | str]] = defaultdict(dict)
        self.notes: list[str] = []
        self.errors: list[str] = []
        self.skopeo = Skopeo.create(workdir / "skopeo-home")
        self.base = random_data("blob", config.blob_mib * MiB)
        self.load_at_start = " ".join(f"{n:.2f}" for n in os.getloadavg())
        self.storm_layers: dict[str, storm.StormLayers] = {}

    # -- servers -------------------------------------------------------------------------------------------
    def _register(self, name: str, server: RegistryServer) -> None:
        self.stack.callback(self._stop, server)
        self.servers[name] = server
        self.skopeo.add_registry(server.host, server.credentials)
        log(f"{name}: {server.url} (pid {server.pid})")

    @staticmethod
    def _stop(server: RegistryServer) -> None:
        try:
            server.stop(timeout=15)
        except Exception:
            server.kill()

    def start_servers(self) -> None:
        cache = self.config.distribution_cache
        self._register("distribution", start_distribution(
            self.workdir / "distribution", cache=cache, access_log=False, log_level="warn"))
        for workers in self.config.variants:
            name, data_dir = f"soko-w{workers}", self.workdir / f"soko-w{workers}"
            if self.config.soko_cmd == "distribution":
                server = start_distribution(data_dir, cache=cache, access_log=False, log_level="warn")
            else:
                server = start_soko(data_dir, workers=workers, template=self.config.soko_cmd,
                                    env=self._data_listener())
            self._register(name, server)
            if self.config.cache_off and self.config.soko_cmd != "distribution":
                server = start_soko(self.workdir / f"{name}-nocache", workers=workers, template=self.config.soko_cmd,
                                    env={"SOKO_PLAINTEXT_CACHE_BYTES": "0", **self._data_listener()})
                self._register(f"{name}-nocache", server)
            if self.config.in_band and self.config.soko_cmd != "distribution":
                server = start_soko(self.workdir / f"{name}-inband", workers=workers, template=self.config.soko_cmd)
                self._register(f"{name}-inband", server)

    def _data_listener(self) -> dict[str, str]:
        """The environment that gives a Soko its data listener on a free port (none with --no-data-listener)."""
        return {"SOKO_DATA_LISTEN": f"127.0.0.1:{free_port()}"} if self.config.data_listener else {}

    @property
    def candidates(self) -> list[str]:
        return [name for name in self.servers if name != report.BASELINE]

    def target(self, name: str) -> ops.Target:
        server = self.servers[name]
        return ops.Target(server.host, server.auth_header())

    def order(self, round_no: int) -> list[str]:
        names = list(self.servers)
        shift = round_no % len(names)
        return names[shift:] + names[:shift]

    # -- tests ---------------------------------------------------------------------------------------------
    def warm_up(self) -> None:
        for name in self.servers:
            target = self.target(name)
            ops.push_small_image(target, MANIFEST_REPO, MANIFEST_TAG)
            self._load(name, "get", duration=2.0, record=False)
            if self.config.storm_clients:
                self.storm_layers[name] = storm.prepare(target, self.workdir, self.base, self.config.storm_big_mib,
                                                        small_kib=512, count=16)

    def _manifest_url(self, name: str) -> str:
        return f"{self.servers[name].url}/v2/{MANIFEST_REPO}/manifests/{MANIFEST_TAG}"

    def _load(self, name: str, method: str, duration: float, record: bool = True) -> None:
        server = self.servers[name]
        headers = {"Accept": ops.OCI_MANIFEST, **server.auth_header()}
        url = self._manifest_url(name)
        if method == "get":
            result = load.wrk_get(url, headers, server.pid, duration)
        else:
            result = load.hey_head(url, headers, server.pid, duration)
        if result.errors:
            self.errors.append(f"{name} manifest {method.upper()}: {result.errors} errors of {result.requests}")
        if record:
            self.values[name][f"{method}_rps"].append(result.rps)
            self.values[name][f"{method}_p99"].append(result.p99_ms)
            self.values[name][f"{method}_cpu"].append(result.cpu_us_per_request)

    def run_round(self, round_no: int) -> None:
        order = self.order(round_no)
        mono = ops.make_blob_file(self.workdir / "mono.bin", self.base, f"mono-{round_no}")
        chunked = ops.make_blob_file(self.workdir / "chunked.bin", self.base, f"chunked-{round_no}")
        repo = f"bench/blobs-r{round_no}"
        for name in order:
            seconds = ops.push_monolithic(self.target(name), repo, mono)
            self.values[name]["push_mono"].append(mono.size / MB / seconds)
        for name in order if not self.config.pulls_only else ():
            seconds = ops.push_chunked(self.target(name), repo, chunked, self.config.chunk_mib * MiB)
            self.values[name]["push_chunked"].append(chunked.size / MB / seconds)
        for name in order:
            # The first GET after the push reads whatever the push left in the page cache (Soko drops uploads from
            # it as it writes; Distribution leaves them there): reported on its own. Then the steady state, where
            # both serve the same warm blob.
            first = ops.pull_blob(self.target(name), repo, mono)
            self.values[name]["pull_first"].append(mono.size / MB / first)
            cpu = cpu_seconds(self.servers[name].pid)
            seconds = sum(ops.pull_blob(self.target(name), repo, mono) for _ in range(PULLS_PER_ROUND))
            self.values[name]["pull"].append(PULLS_PER_ROUND * mono.size / MB / seconds)
            cpu = cpu_seconds(self.servers[name].pid) - cpu
            self.values[name]["pull_cpu"].append(cpu / (PULLS_PER_ROUND * mono.size / 1e9))
        for clients in self.config.storm_clients:
            for name in order:
                self._storm(name, clients)
        for method in ("get", "head") if not self.config.pulls_only else ():
            if method == "head" and not load.have("hey"):
                continue
            for name in order:
                self._load(name, method, self.config.duration)
        if self.config.skopeo and not self.config.pulls_only:
            self._skopeo_round(round_no, order)
        mono.path.unlink()
        chunked.path.unlink()

    def _storm(self, name: str, clients: int) -> None:
        manifest = f"/v2/{MANIFEST_REPO}/manifests/{MANIFEST_TAG}"
        result, errors = storm.run(self.target(name), self.servers[name].pid, self.storm_layers[name], clients,
                                   manifest, self.workdir)
        self.errors += [f"{name} storm {clients}: {error}" for error in errors]
        self.values[name][f"storm{clients}"].append(result.mb_s)
        self.values[name][f"storm{clients}_p99"].append(result.ttfb_p99)
        self.values[name][f"storm{clients}_cpu"].append(result.cpu_s_per_gb)
        log(f"{name}: {clients}-client storm {result.mb_s:.0f} MB/s, manifest TTFB p50 {result.ttfb_p50:.1f} ms "
            f"p99 {result.ttfb_p99:.1f} ms ({len(result.ttfb_ms)} probes), {result.cpu_s_per_gb:.2f} CPU s/GB")

    def _skopeo_round(self, round_no: int, order: list[str]) -> None:
        """A fresh 12-layer image each round, so no push can reuse or mount blobs of an earlier round."""
        layout = self.workdir / "oci"
        sizes = [self.config.layer_mib * MiB] * 12
        image = build_image(layout, f"r{round_no}", f"bench-{round_no}-{time.time_ns()}", sizes)
        for name in order:
            dest = f"docker://{self.servers[name].host}/bench/skopeo-r{round_no}:v1"
            started = time.perf_counter()
            self.skopeo.copy(image.ref, dest)
            self.values[name]["skopeo_push"].append(time.perf_counter() - started)
            pulled = self.workdir / f"pulled-{name}"
            started = time.perf_counter()
            self.skopeo.copy(dest, f"oci:{pulled}:v1")
            self.values[name]["skopeo_pull"].append(time.perf_counter() - started)
            shutil.rmtree(pulled)

    def memory_test(self) -> None:
        size = self.config.big_mib * MiB
        block = random_data("big", 16 * MiB)
        digest = ops.digest_of_generated(size, block)
        for name in [*self.candidates, report.BASELINE]:
            server = self.servers[name]
            with RssSampler(server.pid) as sampler:
                seconds = ops.push_generated(self.target(name), "bench/big", size, block, digest)
            self.values[name]["rss_peak"].append(sampler.peak_pss / MB)
            per_process = ", ".join(f"{pid}: {rss / MB:.0f}" for pid, rss in sorted(sampler.per_process.items()))
            self.extra[name].update({
                "big_push_mb_s": size / MB / seconds,
                "idle_pss_mb": sampler.idle_pss / MB,
                "peak_pss_mb": sampler.peak_pss / MB,
                "peak_rss_sum_mb": sampler.peak_rss / MB,
                "peak_rss_per_process_mb": per_process,
                "lifetime_max_process_hwm_mb": hwm_bytes(server.pid) / MB,
            })
            log(f"{name}: {self.config.big_mib} MiB upload at {size / MB / seconds:.0f} MB/s, peak PSS "
                f"{sampler.peak_pss / MB:.0f} MB (idle {sampler.idle_pss / MB:.0f}), summed RSS "
                f"{sampler.peak_rss / MB:.0f} MB, RSS per process {per_process}")


def tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "missing"


def notes_for(config: Config, bench: Bench) -> list[str]:
    cache = config.distribution_cache or "disabled"
    notes = [
        f"{config.rounds} interleaved rounds (server order rotated each round); medians; ratio = median of "
        "per-round Soko/Distribution ratios (for s, ms, µs and MB lower is better, so a ratio < 1 is better)",
        f"Distribution: {tool_version(['/usr/bin/docker-registry', '--version'])}, filesystem storage, "
        f"blobdescriptor cache {cache}, access log off, log level warn",
        f"blobs: {config.blob_mib} MiB of random data, distinct per round; chunked = {config.chunk_mib} MiB "
        f"PATCHes; pull = {PULLS_PER_ROUND} sequential curl GETs to /dev/null after a first GET (reported on its own "
        "row: it reads what the push left in the page cache); MB = 10^6 bytes",
        f"manifest GET: wrk -t2 -c64 -d{config.duration:g}s --latency; HEAD: hey -c 64 -z {config.duration:g}s "
        "(wrk 4.1 cannot do HEAD); load generator on the same 2-core machine",
        "server CPU per request = Δ(utime+stime) of the server's whole process tree / requests",
        f"peak memory = largest sample (every 20 ms) of the summed PSS (smaps_rollup) of the server's "
        f"processes during a {config.big_mib} MiB monolithic upload; PSS splits pages shared by forked workers, "
        "summed RSS would count them once per process (both, per process, in the JSON 'extra')",
        f"machine: {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}; "
        f"load average at start {bench.load_at_start} (other work on the machine makes figures noisy: "
        "read the ratios)",
    ]
    if config.soko_cmd == "distribution":
        notes.append("HARNESS TEST: the 'soko' columns are a second Distribution, not Soko")
    elif config.data_listener:
        notes.append("Soko runs with its data listener (data_listen): a GET of a blob of 4 MiB or more that is in the "
                     "plaintext cache answers 307 to a presigned URL on that port, sent with sendfile(2); curl "
                     "follows it (-L), and its time includes the redirect" +
                     ("; soko-wN-inband: the same without it, every body sent by granian" if config.in_band else ""))
    elif config.soko_cmd:
        notes.append(f"soko command: {config.soko_cmd}")
    if not load.have("hey"):
        notes.append("hey is not installed (apt-get install hey): HEAD not measured")
    notes += [f"ERROR {error}" for error in bench.errors]
    return notes


def save_logs(workdir: Path, dest: Path) -> None:
    """Keep the servers' own output (bench/results/logs/, gitignored): the temp dir is about to go."""
    logs = list(workdir.glob("*.log"))
    if logs:
        dest.mkdir(parents=True, exist_ok=True)
        for path in logs:
            shutil.copyfile(path, dest / path.name)
        log(f"server logs saved in {dest}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    config, args = parse_args(argv)
    for tool in ("curl", "wrk", "umoci", "skopeo"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is missing (apt-get install curl wrk hey umoci skopeo docker-registry)",
                  file=sys.stderr)
            return 2
    signal.signal(signal.SIGTERM, _interrupt)
    started, started_at = time.monotonic(), time.strftime("%Y-%m-%dT%H:%M:%S%z")
    workdir = Path(tempfile.mkdtemp(prefix="soko-bench-", dir=args.workdir))
    try:
        with contextlib.ExitStack() as stack:
            bench = Bench(config, workdir, stack)
            bench.start_servers()
            bench.warm_up()
            for round_no in range(config.rounds):
                log(f"round {round_no + 1}/{config.rounds}")
                bench.run_round(round_no)
            if not config.pulls_only:
                log("big upload memory test")
                bench.memory_test()
    except KeyboardInterrupt:
        print("bench: interrupted; servers stopped, temporary files removed", file=sys.stderr)
        return 130
    finally:
        save_logs(workdir, Path(args.output).parent / "logs")
        shutil.rmtree(workdir, ignore_errors=True)
    summary = report.summarise(bench.values, bench.candidates)
    notes = notes_for(config, bench)
    notes.append(f"total bench time {time.monotonic() - started:.0f} s")
    run_config = {**asdict(config), "extra": bench.extra, "started": started_at}
    report.write_json(Path(args.output), run_config, bench.values, summary, notes)
    print(report.markdown(summary, bench.candidates, notes))
    log(f"JSON written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
