"""soko.http.streaming.pump_body: the body's pieces go to the sink's lanes (store, digest, keep) each in order, the
lanes at their own pace (a slow one does not hold the others back beyond ``DEPTH`` pieces), in bounded memory; an
error in any lane, a body longer or shorter than its Content-Length, or a client that goes away, stops every lane
before pump_body raises (nothing is written after it returns)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Sequence

import pytest

from soko.errors import SizeInvalid, UploadInvalid
from soko.http.messages import BodyInterrupted, Request
from soko.http.streaming import DEPTH, PIECE, pump_body


class Sink:
    def __init__(self, keeps: bool = True, slow: str | None = None, fail: str | None = None, fail_at: int = 0):
        self.keeps = keeps
        self.got: dict[str, list[bytes]] = {"store": [], "digest": [], "keep": []}
        self.slow, self.fail, self.fail_at = slow, fail, fail_at
        self.lock = threading.Lock()
        self.running = 0
        self.after_return: list[str] = []
        self.returned = False

    def _step(self, lane: str, pieces: Sequence[bytes]) -> None:
        if self.returned:
            self.after_return.append(lane)
        if lane == self.fail and len(self.got[lane]) >= self.fail_at:
            raise OSError(28, f"{lane} failed")
        if lane == self.slow:
            time.sleep(0.01)
        with self.lock:
            self.got[lane].append(b"".join(pieces))

    def store(self, pieces: Sequence[bytes]) -> None:
        self._step("store", pieces)

    def digest(self, pieces: Sequence[bytes]) -> None:
        self._step("digest", pieces)

    def keep(self, pieces: Sequence[bytes]) -> None:
        self._step("keep", pieces)


def _request(body: AsyncIterator[bytes]) -> Request:
    return Request("PATCH", "/v2/r/blobs/uploads/x", "", {}, "127.0.0.1:1", "127.0.0.1:2", "http", body)


async def _body(pieces: int, size: int = 300_000, *, cut: bool = False) -> AsyncIterator[bytes]:
    for i in range(pieces):
        yield bytes([i % 251]) * size
        await asyncio.sleep(0)
    if cut:
        raise BodyInterrupted("connection reset")


def _pump(sink: Sink, body: AsyncIterator[bytes], expected: int | None) -> int:
    async def run() -> int:
        try:
            return await pump_body(_request(body), sink, expected)
        finally:
            sink.returned = True

    return asyncio.run(run())


def _whole(sink: Sink, lane: str) -> bytes:
    return b"".join(sink.got[lane])


@pytest.mark.parametrize("slow", [None, "store", "digest", "keep"])
def test_every_lane_gets_every_byte_in_order(slow):
    sink = Sink(slow=slow)
    expected = b"".join(bytes([i % 251]) * 300_000 for i in range(40))
    assert _pump(sink, _body(40), len(expected)) == len(expected)
    for lane in ("store", "digest", "keep"):
        assert _whole(sink, lane) == expected
        assert all(len(piece) >= PIECE for piece in sink.got[lane][:-1])  # gathered into ~1 MiB pieces
    assert sink.after_return == []


def test_a_sink_that_keeps_nothing_gets_two_lanes():
    sink = Sink(keeps=False)
    _pump(sink, _body(8), None)
    assert sink.got["keep"] == [] and len(_whole(sink, "store")) == 8 * 300_000


@pytest.mark.parametrize("lane", ["store", "digest", "keep"])
@pytest.mark.parametrize("fail_at", [0, 2])
def test_a_failing_lane_stops_them_all_before_pump_body_raises(lane, fail_at):
    sink = Sink(fail=lane, fail_at=fail_at, slow="digest" if lane != "digest" else "store")
    with pytest.raises(OSError, match=f"{lane} failed"):
        _pump(sink, _body(60), None)
    assert sink.after_return == []
    others = [name for name in ("store", "digest", "keep") if name != lane]
    for name in others:  # the others went at most DEPTH + 1 pieces further
        assert len(sink.got[name]) <= fail_at + DEPTH + 2


def test_a_body_longer_than_its_length_is_refused_and_nothing_written_after():
    sink = Sink(slow="store")
    with pytest.raises(SizeInvalid):
        _pump(sink, _body(20), 10 * 300_000)
    assert sink.after_return == [] and len(_whole(sink, "store")) <= 10 * 300_000 + PIECE


def test_a_body_shorter_than_its_length_is_refused():
    sink = Sink()
    with pytest.raises(SizeInvalid):
        _pump(sink, _body(5), 6 * 300_000)


def test_a_client_going_away_stops_the_lanes():
    sink = Sink(slow="keep")
    with pytest.raises(UploadInvalid, match="stopped sending"):
        _pump(sink, _body(12, cut=True), None)
    assert sink.after_return == []
