"""The leased job runner on both databases: once per interval across runners, backoff, concurrency, takeover."""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import wait

import pytest
import sqlalchemy as sa

from soko import process_identity
from soko.jobs import JobKind, JobRunner, job_table
from soko.jobs.runner import BACKOFF_BASE, stopping
from soko.meta.schema import jobs
from tests.clock import Clock

INTERVAL = 60.0


@pytest.fixture
def clock(registry) -> Clock:
    clock = Clock(1_800_000_000.0)
    registry.ctx.clock = clock
    return clock


def rows(registry) -> dict[tuple[str, str], dict]:
    return {(r["kind"], r["key"]): r for r in job_table(registry.ctx)}


def tick(*runners: JobRunner) -> int:
    """One tick of each runner, in turn; waits for what they started; returns how many jobs ran."""
    started = 0
    for runner in runners:
        futures = runner.run_due()
        wait(futures)
        started += len(futures)
    return started


def test_two_runners_run_a_periodic_job_once_per_interval(registry, clock) -> None:
    ran: list[str] = []
    kind = JobKind("count", lambda key: ran.append(key), INTERVAL)
    a, b = (JobRunner(registry.ctx, [kind], owner=name, clock=clock) for name in ("a", "b"))
    a.schedule()
    b.schedule()  # the row exists once
    assert tick(a, b) == 0  # the first run is one interval after scheduling
    for _ in range(5):
        clock.now += INTERVAL
        assert tick(a, b) + tick(b, a) == 1  # whoever comes first runs it; nobody runs it twice
    row = rows(registry)[("count", "")]
    assert (row["runs"], row["failures"], row["owner"], row["lease_until"]) == (5, 0, None, None)
    assert row["next_run"] == clock.now + INTERVAL
    assert len(ran) == 5
    for runner in (a, b):
        runner.stop()


def test_an_aligned_job_runs_once_in_every_slot_however_late_it_starts(registry, clock) -> None:
    ran: list[float] = []
    kind = JobKind("sample", lambda key: ran.append(clock.now), INTERVAL, run_at_start=True, aligned=True)
    runner = JobRunner(registry.ctx, [kind], owner="a", clock=clock)
    runner.schedule()
    for late in (7.0, 13.0, 29.0, 3.0):  # each run starts this late into its slot
        clock.now = (clock.now // INTERVAL) * INTERVAL + late
        assert tick(runner) == 1
        clock.now = rows(registry)[("sample", "")]["next_run"]
        assert clock.now % INTERVAL == 0  # the next slot's start, not started + interval
    assert [t // INTERVAL for t in ran] == [ran[0] // INTERVAL + i for i in range(4)]  # no slot skipped
    runner.stop()


def test_a_failing_job_backs_off_with_jitter_and_recovers(registry, clock) -> None:
    failing = threading.Event()
    failing.set()

    def flaky(_key: str) -> None:
        if failing.is_set():
            raise RuntimeError("storage unreachable")

    runner = JobRunner(registry.ctx, [JobKind("flaky", flaky, 3600.0)], owner="a", rng=random.Random(7), clock=clock)
    runner.schedule()
    clock.now += 3600
    delays = []
    for attempt in range(1, 5):
        assert tick(runner) == 1
        row = rows(registry)[("flaky", "")]
        assert row["attempts"] == attempt and row["last_error"] == "RuntimeError: storage unreachable"
        delay = row["next_run"] - clock.now
        assert BACKOFF_BASE * 2 ** (attempt - 1) / 2 <= delay <= BACKOFF_BASE * 2 ** (attempt - 1)
        delays.append(delay)
        assert tick(runner) == 0  # not before its backoff
        clock.now = row["next_run"]
    assert delays == sorted(delays)
    failing.clear()
    assert tick(runner) == 1
    row = rows(registry)[("flaky", "")]
    assert (row["attempts"], row["last_error"], row["runs"], row["failures"]) == (0, None, 5, 4)
    runner.stop()


def test_concurrency_per_kind_and_a_dead_owners_job_is_taken_over_after_its_lease(registry, clock) -> None:
    release = threading.Event()
    entered = threading.Semaphore(0)

    def slow(_key: str) -> None:
        entered.release()
        assert release.wait(20)

    kind = JobKind("slow", slow, INTERVAL, concurrency=2, lease=30.0, keys=("a", "b", "c"))
    dead = JobRunner(registry.ctx, [kind], owner="dead", clock=clock)
    alive = JobRunner(registry.ctx, [kind], owner="alive", clock=clock)
    dead.schedule()
    clock.now += INTERVAL
    held = dead.run_due()
    assert len(held) == 2  # two at once in one process; the third waits for a slot
    for _ in held:
        assert entered.acquire(timeout=20)
    assert {k for (k, _), r in rows(registry).items() if r["owner"] == "dead"} == {"slow"}
    # "dead" stops heartbeating (as a killed process would); within the lease nobody else takes its jobs.
    third = alive.run_due()
    assert len(third) == 1  # only the free one
    clock.now += 29
    assert alive.run_due() == []
    clock.now += 2  # the lease has passed: "alive" takes both over
    taken = alive.run_due()
    assert len(taken) == 1  # its own concurrency limit: it is already running one
    release.set()
    wait(held + third + taken)
    owners = rows(registry)
    assert all(r["owner"] is None for r in owners.values())
    # Each job counted once: the dead owner's late finish of the job taken over from it changed nothing.
    assert {key: r["runs"] for (_, key), r in owners.items()} == {"a": 1, "b": 1, "c": 1}
    dead.stop()
    alive.stop()


def test_the_cli_and_metrics_show_the_jobs(registry, settings, clock, capsys) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from soko.cli import main
    from soko.http.metrics import JobsCollector

    def boom(_key: str) -> None:
        raise ValueError("no space left on device")

    kinds = [JobKind("gc", lambda key: None, 60.0), JobKind("boom", boom, 60.0)]
    runner = JobRunner(registry.ctx, kinds, owner="x", clock=clock)
    runner.schedule()
    clock.now += 60
    assert tick(runner) == 2
    runner.stop()
    args = ["--data-dir", settings.data_dir, "--database-url", settings.effective_database_url]
    assert main(["jobs", *args]) == 0
    out = capsys.readouterr().out
    assert "boom" in out and "ValueError: no space left on device" in out and "gc" in out
    assert main(["jobs", "--format", "json", *args]) == 0
    listed = {row["kind"]: row for row in json.loads(capsys.readouterr().out)}
    assert (listed["gc"]["runs"], listed["boom"]["failures"], listed["boom"]["attempts"]) == (1, 1, 1)

    collectors = CollectorRegistry(auto_describe=False)
    collectors.register(JobsCollector(registry.ctx))
    text = generate_latest(collectors).decode()
    assert 'soko_job_runs_total{key="",kind="gc"} 1.0' in text
    assert 'soko_job_failures_total{key="",kind="boom"} 1.0' in text


def _until_stopped(started: threading.Event, ran: list) -> JobKind:
    """A long job (GC-like): works in batches until told to stop."""

    def run(_key: str) -> None:
        started.set()
        while not stopping():
            ran.append(1)
            time.sleep(0.01)

    return JobKind("long", run, INTERVAL, lease=30.0)


def test_a_run_that_lost_its_lease_stops_and_says_so_once(registry, clock, caplog) -> None:
    started, ran = threading.Event(), []
    kind = _until_stopped(started, ran)
    stalled = JobRunner(registry.ctx, [kind], owner="stalled", clock=clock)
    other = JobRunner(registry.ctx, [kind], owner="other", clock=clock)
    stalled.schedule()
    clock.now += INTERVAL
    (future,) = stalled.run_due()
    assert started.wait(20)
    clock.now += 31  # "stalled" missed its heartbeats: "other" takes the job over
    (taken,) = other.run_due()
    with caplog.at_level(logging.WARNING, logger="soko.jobs"):
        for _ in range(3):
            stalled.run_due()
            clock.now += 1
    future.result(timeout=20)  # the run stopped at its next batch boundary
    lost = [r for r in caplog.records if "lost the lease" in r.getMessage()]
    assert len(lost) == 1
    assert rows(registry)[("long", "")]["owner"] == "other"  # the stopped run recorded nothing
    other.stop()
    taken.result(timeout=20)
    stalled.stop()


def test_shutdown_stops_a_long_run_at_a_batch_boundary_and_releases_its_lease(registry, clock) -> None:
    started, ran = threading.Event(), []
    runner = JobRunner(registry.ctx, [_until_stopped(started, ran)], owner="a", clock=clock)
    runner.schedule()
    clock.now += INTERVAL
    (future,) = runner.run_due()
    assert started.wait(20)
    began = time.monotonic()
    runner.stop()
    assert future.done() and time.monotonic() - began < 5
    row = rows(registry)[("long", "")]
    # Released, not counted: due again at once for another process.
    assert (row["owner"], row["lease_until"], row["runs"]) == (None, None, 0)
    assert row["next_run"] <= clock.now


def test_stop_lets_go_of_what_the_kinds_hold_once_their_runs_ended(registry, clock) -> None:
    """``JobKind.close`` (a kind's clients, e.g. replication's of other regions): called by ``stop`` after the runs
    ended, once however many kinds share it, and for a kind switched off here too."""
    started, ran, closed = threading.Event(), [], []

    def close() -> None:
        closed.append(len(ran))  # (how far the run had gone: it ended first)

    long = _until_stopped(started, ran)
    kinds = [
        JobKind(long.name, long.run, long.interval, lease=long.lease, close=close),
        JobKind("same", lambda key: None, INTERVAL, close=close),
        JobKind("off", lambda key: None, 0, close=lambda: closed.append("off")),
    ]
    runner = JobRunner(registry.ctx, kinds, owner="a", clock=clock)
    runner.schedule()
    clock.now += INTERVAL
    futures = runner.run_due()
    assert started.wait(20) and not closed
    runner.stop()
    assert all(f.done() for f in futures)
    assert closed == [len(ran), "off"]
    runner.stop()  # (again: nothing more)
    assert closed == [len(ran), "off"]


def test_owners_are_process_tokens_and_a_dead_processs_job_is_taken_at_once(registry, clock) -> None:
    runner = JobRunner(registry.ctx, [JobKind("count", lambda key: None, INTERVAL)], clock=clock)
    assert runner.owner.startswith(process_identity.node() + ".")
    runner.schedule()
    clock.now += INTERVAL
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    token = f"{process_identity.node()}.{dead.pid}.1.{'0' * 32}"  # a process of this node that is gone
    with registry.ctx.db.write() as conn:
        conn.execute(sa.update(jobs).values(owner=token, lease_until=clock.now + 3600))
    assert tick(runner) == 1  # not an hour later
    runner.stop()
