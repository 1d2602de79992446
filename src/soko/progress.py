"""Progress of long admin runs (``soko fsck``, ``soko gc``) on stderr: counts, bytes, rate, in human units.

A thread redraws one line from a ``render`` callback while the work runs: on a terminal every half second in place
(carriage return); elsewhere (``--progress`` into a log) a line every ``LOG_INTERVAL`` seconds. The last state is
always written when the run ends. A dozen lines of our own rather than a UI library: the server never needs one.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

TTY_INTERVAL = 0.5
LOG_INTERVAL = 10.0


def human_bytes(n: float) -> str:
    """1536 → '1.50 KiB' (binary units, as `du -h` and `ls -lh`)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            return f"{int(n)} B" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{value:.2f} PiB"


def rate(count: float, seconds: float, unit: str = "") -> str:
    per_second = count / seconds if seconds > 0 else 0.0
    return f"{human_bytes(per_second)}/s" if unit == "bytes" else f"{per_second:,.0f}{unit}/s"


def wanted(flag: bool) -> bool:
    """Progress is shown with --progress, or when stderr is a terminal."""
    return flag or sys.stderr.isatty()


class ProgressLine:
    """``with ProgressLine(render):`` shows ``render(elapsed_seconds)`` while the block runs."""

    def __init__(self, render: Callable[[float], str], stream: TextIO | None = None) -> None:
        self.render = render
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="soko-progress", daemon=True)

    def __enter__(self) -> ProgressLine:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._draw(final=True)

    def _run(self) -> None:
        interval = TTY_INTERVAL if self.tty else LOG_INTERVAL
        while not self._stop.wait(interval):
            self._draw()

    def _draw(self, final: bool = False) -> None:
        line = self.render(time.monotonic() - self._started)
        try:
            if self.tty:
                self.stream.write(f"\r{line}\x1b[K" + ("\n" if final else ""))
            else:
                self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # stderr gone: progress is a courtesy
            pass
