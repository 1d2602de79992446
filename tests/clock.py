"""A clock tests set by hand: assign it to ``registry.ctx.clock`` and move ``now``."""

from __future__ import annotations


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now
