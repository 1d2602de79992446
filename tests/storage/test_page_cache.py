"""The filesystem writers keep the most recent writes in the page cache up to a budget (storage/page_cache.py)."""

from __future__ import annotations

import os

from soko.storage.filesystem import FilesystemDriver
from soko.storage.page_cache import RecentWrites, write_back

MiB = 1 << 20


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_the_oldest_ranges_leave_the_budget_first(tmp_path):
    recent = RecentWrites(budget=3 * MiB, max_ranges=8)
    fds = [os.open(tmp_path / f"f{i}", os.O_RDWR | os.O_CREAT, 0o600) for i in range(2)]
    before = _open_fds()
    first, second = object(), object()
    recent.add(first, fds[0], 0, MiB)
    recent.add(first, fds[0], MiB, 2 * MiB)  # contiguous: one range, one descriptor
    assert recent.cached == 2 * MiB and _open_fds() == before + 1
    recent.add(second, fds[1], 0, 2 * MiB)
    assert recent.cached == 3 * MiB  # the first file's oldest MiB was dropped
    recent.add(second, fds[1], 2 * MiB, 4 * MiB)
    assert recent.cached == 3 * MiB and _open_fds() == before + 1  # the first file left: its descriptor closed
    recent.forget(second)
    assert recent.cached == 0 and _open_fds() == before
    for fd in fds:
        os.close(fd)


def test_ranges_are_bounded_in_number(tmp_path):
    recent = RecentWrites(budget=1 << 40, max_ranges=2)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    before = _open_fds()
    for i in range(5):
        recent.add(object(), fd, i, i + 1)
    assert recent.cached == 2 and _open_fds() == before + 2
    os.close(fd)


def test_a_written_blob_stays_readable_and_a_cancelled_one_is_let_go(tmp_path):
    driver = FilesystemDriver(str(tmp_path / "root"))
    data = os.urandom(3 * MiB + 5)
    with driver.writer("a/data") as writer:
        for i in range(0, len(data), 100_000):
            writer.write(data[i : i + 100_000])
        writer.commit()
    assert driver.get_content("a/data") == data
    before = _open_fds()
    writer = driver.writer("b/data")
    writer.write(data)
    writer.cancel()
    assert _open_fds() <= before  # no descriptor kept for a file that is gone


def test_write_back_bounds_dirty_data(tmp_path):
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    os.write(fd, b"x" * (2 * MiB))
    write_back(fd, MiB, 2 * MiB, 0)  # starts [1, 2) MiB, waits for [0, 1) MiB: no error either way
    os.close(fd)
