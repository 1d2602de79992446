"""The leased job runner: every serving process runs one; the ``jobs`` table decides which process runs what.

Each tick the runner (one thread per process)

1. renews the leases of the jobs it is running (heartbeat: ``lease_until = now + lease``, only while it is still
   the owner) — a process that dies stops renewing, and its jobs are taken over once their lease has passed;
2. for each kind with a free slot (``concurrency`` per process), takes due jobs: a job is due when ``next_run`` has
   come and nobody holds an unexpired lease. Taking it is one conditional ``UPDATE … WHERE next_run <= now AND
   (lease_until IS NULL OR lease_until < now)``: on PostgreSQL a second process's UPDATE waits for the first and
   then re-checks the condition on the new row, on SQLite writers are serialised — either way exactly one wins;
3. runs each taken job on a worker thread. Success: ``next_run = started + interval`` (so a periodic job runs once
   per interval across the cluster, however many processes and nodes serve), attempts reset, counters updated.
   Failure: ``attempts + 1``, ``next_run`` after an exponential backoff with jitter (capped by the interval), the
   error kept in ``last_error``.

4. a run whose lease was lost (a stall let another process take the job over) is told to stop (``stopping()``
   answers True in it), logged once, and its outcome not recorded; ``stop()`` (shutdown) tells every run to stop
   too, and a run that stops early releases its lease without counting as a run, so the job is due at once
   elsewhere. Long jobs (GC) ask ``stopping()`` between batches.

Owners are ``process_identity`` tokens, so a job held by a process of this node that died is taken at once, not
only once its lease has passed.

Kinds are registered with the runner (``JobKind``); periodic kinds get their row on start (first run one interval
later, as the loops they replaced did). ``soko jobs`` shows the table; ``/metrics`` exports its counters.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import sqlalchemy as sa

from soko import process_identity
from soko.kernel.leases import lease_is_free
from soko.meta.schema import jobs

log = logging.getLogger("soko.jobs")
BACKOFF_BASE = 5.0  # seconds before the first retry of a failed job (doubling, with jitter)


@dataclass(frozen=True)
class JobKind:
    name: str
    run: Callable[[str], object]  # called with the job's key; what it returns is logged
    interval: float  # seconds between runs of each job of the kind; 0: the kind is off
    concurrency: int = 1  # at most this many jobs of the kind at once in one process
    lease: float = 60.0  # seconds a job stays claimed without a heartbeat
    keys: tuple[str, ...] = ("",)  # the jobs of a periodic kind
    run_at_start: bool = False  # a new job's first run: at once (else one interval after it is scheduled)
    # Success schedules the next run at the next multiple of the interval (wall clock), not ``started + interval``,
    # which drifts later by each run's start delay: for jobs that must run once in every slot (storage samples).
    aligned: bool = False
    # What the kind holds between runs (connections, clients): let go by ``JobRunner.stop`` once its runs ended.
    close: Callable[[], None] | None = None


@dataclass
class _Run:
    lease_until: float  # what we last wrote
    stop: threading.Event = field(default_factory=threading.Event)  # set on shutdown or when the lease is lost
    lost: bool = False
    cut_short: bool = False  # the run asked ``stopping()`` and was told to stop


_current = threading.local()


def stopping() -> bool:
    """In a job's run: whether it should end now (shutdown, or its lease lost); ask it between batches."""
    run: _Run | None = getattr(_current, "run", None)
    if run is None or not run.stop.is_set():
        return False
    run.cut_short = True
    return True


def _backoff(attempts: int, cap: float, rng: random.Random) -> float:
    delay = min(cap, BACKOFF_BASE * 2 ** max(attempts - 1, 0))
    return delay * rng.uniform(0.5, 1.0)


class JobRunner:
    def __init__(
        self,
        ctx,  # soko.kernel.context.DomainContext
        kinds: list[JobKind],
        *,
        tick: float = 1.0,
        owner: str | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        track: Callable[[str], contextlib.AbstractContextManager] | None = None,
    ) -> None:
        self.ctx = ctx
        # Wall-clock time, not the domain's clock: what tests do to ctx.clock must not set jobs off.
        self.clock = clock
        self._track = track or (lambda _kind: contextlib.nullcontext())  # this process's run metrics
        self.kinds = {k.name: k for k in kinds if k.interval > 0}
        self._closes = list({id(k.close): k.close for k in kinds if k.close is not None}.values())  # (once each)
        self.tick = tick
        self.owner = owner or process_identity.new_token()
        self._rng = rng or random.Random()
        self._running: dict[tuple[str, str], _Run] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        workers = sum(k.concurrency for k in self.kinds.values()) or 1
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="soko-job")

    # ---- life cycle ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.schedule()
        self._thread = threading.Thread(target=self._loop, name="soko-jobs", daemon=True)
        self._thread.start()

    def stop(self, wait: bool = True) -> None:
        """Stop taking jobs and tell the running ones to stop (at their next batch boundary); with ``wait``, wait
        for them to end and release their leases, then let go of what the kinds hold (``JobKind.close``)."""
        self._stop.set()
        with self._lock:
            for run in self._running.values():
                run.stop.set()
        if self._thread is not None:
            self._thread.join()
        self._pool.shutdown(wait=wait)
        if wait:  # (runs still going would lose their clients)
            closes, self._closes = self._closes, []
            for close in closes:
                try:
                    close()
                except Exception:
                    log.exception("could not close what a job kind holds")

    def schedule(self) -> None:
        """Make sure every periodic job has its row (first run one interval from now, or now: ``run_at_start``)."""
        now = self.clock()
        with self.ctx.write() as conn:
            for kind in self.kinds.values():
                for key in kind.keys:
                    conn.execute(
                        self.ctx.db.insert_ignore(jobs).values(
                            kind=kind.name, key=key, next_run=now if kind.run_at_start else now + kind.interval
                        )
                    )

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_due()
            except Exception:
                log.exception("the job runner could not reach the database; retrying")
            self._stop.wait(self.tick)

    # ---- one tick ----------------------------------------------------------------------------------------------
    def run_due(self) -> list:
        """Renew this process's leases, then take and start the due jobs it has room for; returns their futures."""
        self._heartbeat()
        now = self.clock()
        with self.ctx.db.read() as conn:  # one indexed query per tick while idle
            free = self._free(conn, now)
            due = conn.execute(
                sa.select(jobs.c.kind, jobs.c.key, jobs.c.next_run)
                .where(jobs.c.next_run <= now, free)
                .order_by(jobs.c.next_run)
                .limit(100)
            ).all()
        futures = []
        for name, key, next_run in due:
            kind = self.kinds.get(name)
            if kind is None:
                continue  # a kind this process does not run (another version, or switched off here)
            with self._lock:
                busy = sum(1 for k, _ in self._running if k == name)
            if busy >= kind.concurrency or self._stop.is_set() or not self._claim(kind, key, now):
                continue
            futures.append(self._pool.submit(self._run, kind, key, now - next_run))
        return futures

    @staticmethod
    def _free(conn: sa.Connection, now: float) -> sa.ColumnElement[bool]:
        """Nobody holds the job."""
        return lease_is_free(conn, jobs.c.owner, jobs.c.lease_until, now)

    def _claim(self, kind: JobKind, key: str, now: float) -> bool:
        lease_until = now + kind.lease
        with self.ctx.write() as conn:
            free = self._free(conn, now)
            won = conn.execute(
                sa.update(jobs)
                .where(jobs.c.kind == kind.name, jobs.c.key == key, jobs.c.next_run <= now, free)
                .values(owner=self.owner, lease_until=lease_until)
            ).rowcount
        if won:
            with self._lock:
                self._running[(kind.name, key)] = _Run(lease_until)
        return bool(won)

    def _heartbeat(self) -> None:
        now = self.clock()
        with self._lock:  # renew once a third of the lease has passed
            renew = [
                (job, self.kinds[job[0]].lease)
                for job, run in self._running.items()
                if not run.lost and run.lease_until - now < 2 * self.kinds[job[0]].lease / 3
            ]
        for (kind, key), lease in renew:
            with self.ctx.write() as conn:
                held = conn.execute(
                    sa.update(jobs)
                    .where(jobs.c.kind == kind, jobs.c.key == key, jobs.c.owner == self.owner)
                    .values(lease_until=now + lease)
                ).rowcount
            with self._lock:
                run = self._running.get((kind, key))
                if run is None:
                    continue
                if held:
                    run.lease_until = now + lease
                    continue
                run.lost = True  # no more renewals, and its outcome is not recorded
                run.stop.set()
            log.warning(
                "lost the lease of job %s/%s (another process took it over after a stall); this run stops", kind, key
            )

    def _run(self, kind: JobKind, key: str, lag: float) -> None:
        started, clock_started = time.monotonic(), self.clock()
        error: str | None = None
        with self._lock:
            run = self._running[(kind.name, key)]
        _current.run = run
        try:
            with self._track(kind.name):
                result = kind.run(key)
            if result is not None:
                log.info("job %s%s: %s", kind.name, f"/{key}" if key else "", result)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"[:2000]
            log.exception("job %s%s failed; it is retried after a backoff", kind.name, f"/{key}" if key else "")
        finally:
            _current.run = None
        duration = time.monotonic() - started
        try:
            if run.lost:
                pass  # another process owns the job now: nothing of ours to record
            elif run.cut_short and error is None:
                self._release(kind, key)  # stopped early (shutdown): due again at once, on another process
            else:
                self._finish(kind, key, clock_started, duration, lag, error)
        finally:
            with self._lock:
                self._running.pop((kind.name, key), None)

    def _release(self, kind: JobKind, key: str) -> None:
        with self.ctx.write() as conn:
            conn.execute(
                sa.update(jobs)
                .where(jobs.c.kind == kind.name, jobs.c.key == key, jobs.c.owner == self.owner)
                .values(owner=None, lease_until=None)
            )

    def _finish(self, kind: JobKind, key: str, started: float, duration: float, lag: float, error: str | None) -> None:
        values: dict = {
            "owner": None,
            "lease_until": None,
            "last_run_at": started,
            "last_duration": duration,
            "last_lag": max(lag, 0.0),
        }
        if error is None:
            following = (started // kind.interval + 1) * kind.interval if kind.aligned else started + kind.interval
            # a one-shot job requested again while it ran (kernel.job_queue.enqueue moved next_run past this run's
            # start) runs again at once: the request came after what this run read
            values |= {"next_run": sa.case((jobs.c.next_run > started, jobs.c.next_run), else_=following),
                       "attempts": 0, "last_error": None, "runs": jobs.c.runs + 1}
        with self.ctx.write() as conn:
            if error is not None:
                attempts = (
                    conn.execute(sa.select(jobs.c.attempts).where(jobs.c.kind == kind.name, jobs.c.key == key)).scalar()
                    or 0
                ) + 1
                values |= {
                    "next_run": self.clock() + _backoff(attempts, kind.interval, self._rng),
                    "attempts": attempts,
                    "last_error": error,
                    "failures": jobs.c.failures + 1,
                    "runs": jobs.c.runs + 1,
                }
            conn.execute(
                sa.update(jobs)
                .where(jobs.c.kind == kind.name, jobs.c.key == key, jobs.c.owner == self.owner)
                .values(**values)
            )


def job_table(ctx) -> list[dict]:
    """Every job row, for ``soko jobs`` and ``/metrics``."""
    with ctx.db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(jobs).order_by(jobs.c.kind, jobs.c.key))]
