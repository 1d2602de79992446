from __future__ import annotations

from collections.abc import Iterator

import pytest

from soko.events import Delivery, Targets
from tests.clock import Clock
from tests.events.receiver import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    if r.hold is not None:
        r.hold.set()
    r.stop()


@pytest.fixture
def clock(registry) -> Clock:
    clock = Clock(1_800_000_000.0)
    registry.ctx.clock = clock
    return clock


@pytest.fixture
def targets(registry) -> Targets:
    registry.settings.event_target_allow_cidrs = ["127.0.0.1/32"]  # the receiver is on loopback
    return Targets(registry.ctx)


@pytest.fixture
def delivery(registry, targets) -> Delivery:
    return Delivery(registry.ctx, targets, linger=0.0)
