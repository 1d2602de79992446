"""The supervisor of ``soko serve --workers N``: forks the workers, restarts any that die, and stops them on
SIGTERM/SIGINT.

A worker that dies (kill -9, a crash in native code, the OOM killer) is logged with how it died and replaced, after
a delay that doubles while replacements keep dying young (0.5 s up to 30 s), so a worker that cannot start does not
spin. Workers ask the kernel for SIGTERM when the supervisor dies, however it dies (``PR_SET_PDEATHSIG``): they stop
accepting, close their listening sockets so the next ``soko serve`` can bind the port, finish what is in flight and
exit — instead of holding the port as orphans.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import time
from collections.abc import Callable

log = logging.getLogger("soko.server")
PR_SET_PDEATHSIG = 1
FIRST_DELAY = 0.5  # seconds before replacing a worker that died
MAX_DELAY = 30.0
STABLE_AFTER = 60.0  # a worker that lived this long resets the delay


def die_with_parent(parent: int) -> None:
    """In a freshly forked worker: have the kernel send SIGTERM when ``parent`` dies (Linux)."""
    try:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: orphans outlive a killed supervisor
        log.warning("workers cannot follow the supervisor's death on this system (no prctl)")
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        os._exit(1)


def describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = "?"
        return f"was killed by signal {number} ({name})"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


POLL = 0.1  # seconds between looks at the workers (reaping, restarts, shutdown)

class Supervisor:
    """Runs ``count`` workers: ``work(worker_id, first)`` runs in each forked child (``first``: the initial start,
    not a replacement) and returns when the worker stops. ``on_stop`` runs in the supervisor when it is told to
    stop (it closes the supervisor's copies of the listening sockets)."""

    def __init__(
        self,
        count: int,
        work: Callable[[int, bool], None],
        on_stop: Callable[[], None],
        on_death: Callable[[int], None] | None = None,
    ) -> None:
        self.count = count
        self.work = work
        self.on_stop = on_stop
        self.on_death = on_death  # (pid) of each worker that exited, whatever the reason
        self.children: dict[int, tuple[int, float]] = {}  # pid → (worker id, started at)
        self.failures: dict[int, int] = dict.fromkeys(range(1, count + 1), 0)
        self.stopping = False
        self.stop_signal = 0  # the signal forwarded to the workers when stopping

    def run(self) -> int:
        """Until told to stop and every worker has exited; returns the first failing exit code of that shutdown."""
        for worker_id in range(1, self.count + 1):
            self._spawn(worker_id, first=True)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        status = 0
        due: dict[int, float] = {}  # worker id → when its replacement starts
        while self.children or (due and not self.stopping):
            # A short poll, not an Event a signal handler sets: a handler runs between bytecodes of this very thread
            # and could block forever on the Event's lock if the loop held it at that instant.
            soonest = min(due.values(), default=time.monotonic() + POLL)
            time.sleep(min(POLL, max(0.0, soonest - time.monotonic())))
            for pid, code in self._reap():
                worker_id, started = self.children.pop(pid)
                if self.on_death is not None:
                    self.on_death(pid)
                if self.stopping:
                    exit_code = os.waitstatus_to_exitcode(code)
                    # A worker still starting (its own handler not yet installed) dies of the very signal we
                    # forwarded: it had nothing in flight, so that is a clean stop, not a failure.
                    if exit_code == -self.stop_signal:
                        exit_code = 0
                    status = status or exit_code
                    continue
                due[worker_id] = time.monotonic() + self._delay(worker_id, time.monotonic() - started)
                log.error(
                    "worker %d (pid %d) %s after %.0f s; starting a new one in %.1f s",
                    worker_id,
                    pid,
                    describe(code),
                    time.monotonic() - started,
                    due[worker_id] - time.monotonic(),
                )
            if self.stopping:
                due.clear()
                continue
            for worker_id, when in list(due.items()):
                if when <= time.monotonic():
                    del due[worker_id]
                    pid = self._spawn(worker_id, first=False)
                    log.warning("worker %d restarted (pid %d)", worker_id, pid)
        return status

    def _delay(self, worker_id: int, lived: float) -> float:
        failures = 1 if lived >= STABLE_AFTER else self.failures[worker_id] + 1
        self.failures[worker_id] = failures
        return min(MAX_DELAY, FIRST_DELAY * 2 ** (failures - 1))

    def _spawn(self, worker_id: int, first: bool) -> int:
        supervisor = os.getpid()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                die_with_parent(supervisor)
                self.work(worker_id, first)
            except BaseException:
                log.exception("worker %d failed", worker_id)
                code = 1
            os._exit(code)
        self.children[pid] = (worker_id, time.monotonic())
        return pid

    def _reap(self) -> list[tuple[int, int]]:
        reaped = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid in self.children:
                reaped.append((pid, status))
        return reaped

    def _stop(self, signum: int, _frame: object) -> None:
        if not self.stopping:
            self.stop_signal = signum
            self.stopping = True
            self.on_stop()
        for pid in self.children:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
