"""soko.pullthrough.live: pulls that follow a fetch under way, with bounded memory."""

from __future__ import annotations

import threading

import pytest

from soko.pullthrough.live import FellBehind, LiveFetch


def start(pieces: list[bytes], *, window: int, patience: float, fail: BaseException | None = None) -> LiveFetch:
    def source():
        yield from pieces
        if fail is not None:
            raise fail

    live = LiveFetch(
        "sha256:" + "0" * 64, sum(map(len, pieces)), source(), lambda: None, window=window, patience=patience
    )
    return live


def test_followers_get_every_piece_and_the_error() -> None:
    pieces = [bytes([i]) * 10 for i in range(20)]
    live = start(pieces, window=1000, patience=5)
    first, second = live.follow(starter=True), live.follow()
    ended = threading.Event()
    threading.Thread(target=live.pump, args=(lambda _: ended.set(),)).start()
    assert first is not None and second is not None
    assert list(first) == pieces == list(second)
    assert ended.wait(5) and live.done
    assert live.follow() is None  # over: the stored blob is what later pulls get

    broken = start(pieces[:3], window=1000, patience=5, fail=RuntimeError("cut"))
    follower = broken.follow(starter=True)
    broken.pump(lambda _: None)
    assert follower is not None
    with pytest.raises(RuntimeError, match="cut"):
        list(follower)


def test_memory_is_bounded_without_followers_and_for_a_stalled_one() -> None:
    pieces = [b"x" * 10 for _ in range(50)]
    live = start(pieces, window=30, patience=0.05)
    stalled = live.follow()
    assert stalled is not None
    pump = threading.Thread(target=live.pump, args=(lambda _: None,))
    pump.start()
    assert next(stalled) == pieces[0]  # then stops reading
    pump.join(10)  # the pump waits for it at most `patience` past the window, then goes on alone
    assert live.done
    with pytest.raises(FellBehind):
        list(stalled)
    late = start(pieces, window=30, patience=0.01)
    late.pump(lambda _: None)
    assert late.follow() is None  # the first pieces are gone: wait for the stored blob
