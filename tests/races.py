"""Interleaving two database writers deterministically: hold one inside its transaction before a statement while
the other runs (the interleaving a race needs, without relying on timing)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import sqlalchemy as sa


@contextmanager
def held_before(
    engine: sa.Engine, statement_start: str, thread: threading.Thread
) -> Iterator[tuple[threading.Event, threading.Event]]:
    """Hold ``thread`` before each statement starting with ``statement_start`` until ``release`` is set; yields
    (reached, release)."""
    release, reached = threading.Event(), threading.Event()

    def hold(_conn, _cursor, statement: str, *_args) -> None:
        if threading.current_thread() is thread and statement.lstrip().startswith(statement_start):
            reached.set()
            assert release.wait(30)

    sa.event.listen(engine, "before_cursor_execute", hold)
    try:
        yield reached, release
    finally:
        release.set()
        sa.event.remove(engine, "before_cursor_execute", hold)


def interleaved(engine: sa.Engine, statement_start: str, first: Callable[[], None], second: Callable[[], None]) -> None:
    """Run ``first`` up to its statement starting with ``statement_start``, then ``second`` (to its end, or for half
    a second if it waits for ``first`` — SQLite's single writer), then both to their ends."""
    one = threading.Thread(target=first)
    with held_before(engine, statement_start, one) as (reached, release):
        one.start()
        assert reached.wait(30), f"the first caller never reached {statement_start!r}"
        two = threading.Thread(target=second)
        two.start()
        two.join(0.5)
        release.set()
        one.join(30)
        two.join(30)
    assert not one.is_alive() and not two.is_alive()
