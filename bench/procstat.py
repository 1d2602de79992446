"""Server-side cost from /proc: CPU seconds and resident memory of a process and all its descendants."""

from __future__ import annotations

import os
import threading
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()  # fields after "pid (comm) "


def process_tree(root: int) -> list[int]:
    """``root`` and every descendant, found through the ppid of each process in /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_seconds(root: int) -> float:
    """utime + stime of the tree (+ reaped children's cutime/cstime), in seconds."""
    ticks = 0
    for pid in process_tree(root):
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        ticks += sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    return ticks / CLOCK_TICKS


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_by_pid(root: int) -> dict[int, int]:
    return {pid: 1024 * _status_kib(pid, "VmRSS") for pid in process_tree(root)}


def pss_bytes(pid: int) -> int:
    """Proportional set size: RSS with each shared page divided among the processes sharing it."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return 1024 * int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_total(root: int) -> int:
    """The tree's memory without double-counting pages its forked workers share."""
    return sum(pss_bytes(pid) for pid in process_tree(root))


def rss_bytes(root: int) -> int:
    """Sum of VmRSS over the tree (shared pages count once per process: conservative)."""
    return sum(rss_by_pid(root).values())


def hwm_bytes(root: int) -> int:
    """The largest VmHWM (lifetime peak RSS) of any single process in the tree."""
    return 1024 * max((_status_kib(pid, "VmHWM") for pid in process_tree(root)), default=0)


class RssSampler:
    """Polls the tree's memory in a thread: ``peak_pss`` / ``peak_rss`` are the largest summed samples,
    ``per_process`` each process's largest RSS, ``idle_pss`` the sum before sampling started."""

    def __init__(self, root: int, interval: float = 0.02) -> None:
        self.root, self.interval = root, interval
        self.peak_rss = self.peak_pss = 0
        self.idle_pss = pss_total(root)
        self.per_process: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def _sample(self) -> None:
        sample = rss_by_pid(self.root)
        self.peak_rss = max(self.peak_rss, sum(sample.values()))
        self.peak_pss = max(self.peak_pss, sum(pss_bytes(pid) for pid in sample))
        for pid, rss in sample.items():
            self.per_process[pid] = max(self.per_process.get(pid, 0), rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
