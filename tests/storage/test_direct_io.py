"""Blob files written around the page cache (storage/direct_io.py) by the filesystem driver: exact sizes and bytes
whatever the pieces' sizes, uploads closed and resumed at unaligned offsets, the staging buffers given back, and a
filesystem that refuses O_DIRECT (at open or at the first write) written through the page cache instead. The
driver's whole behaviour is in tests/storage/driver_suite.py."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import random
import threading

import pytest

from soko.storage import direct_io
from soko.storage.filesystem import FilesystemDriver

MiB = 1 << 20
PIECES = [1, 4095, 4096, 4097, 262160, MiB - 1, MiB, MiB + 3, 7, 3 * MiB + 11]


@pytest.fixture
def driver(tmp_path) -> FilesystemDriver:
    return FilesystemDriver(str(tmp_path / "root"))


def _write(driver: FilesystemDriver, path: str, pieces: list[bytes], offset: int = 0, commit: bool = True):
    writer = driver.writer(path, offset)
    for piece in pieces:
        assert writer.write(memoryview(piece)) == len(piece)
    if commit:
        writer.commit()
    else:
        writer.close()
    return writer


def _pieces(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(size) for size in PIECES]


@pytest.mark.skipif(not direct_io.O_DIRECT, reason="no O_DIRECT on this platform")
def test_pieces_of_any_size_make_the_exact_file_written_directly(driver):
    pieces = _pieces(1)
    writer = driver.writer("blobs/a", 0)
    flags = fcntl.fcntl(writer._fd, fcntl.F_GETFL)
    if not flags & direct_io.O_DIRECT:
        pytest.skip("this filesystem refuses O_DIRECT")
    for piece in pieces:
        writer.write(piece)
    assert writer.size == sum(map(len, pieces))
    writer.commit()
    assert driver.get_content("blobs/a") == b"".join(pieces)
    assert driver.stat("blobs/a").size == sum(map(len, pieces))


def test_a_writer_closed_at_an_unaligned_size_is_resumed_there(driver):
    first, second = _pieces(2), _pieces(3)
    _write(driver, "uploads/x", first, commit=False)
    size = sum(map(len, first))
    assert size % direct_io.ALIGN and driver.stat("uploads/x").size == size  # (the padding cut off)
    _write(driver, "uploads/x", second, offset=size)
    assert driver.get_content("uploads/x") == b"".join(first + second)


def test_a_resume_before_the_end_drops_what_follows(driver):
    data = b"".join(_pieces(4))
    _write(driver, "uploads/y", [data], commit=False)
    _write(driver, "uploads/y", [b"tail"], offset=5000)
    assert driver.get_content("uploads/y") == data[:5000] + b"tail"


def test_empty_and_tiny_files(driver):
    _write(driver, "blobs/empty", [])
    _write(driver, "blobs/tiny", [b"x"])
    assert driver.get_content("blobs/empty") == b"" and driver.get_content("blobs/tiny") == b"x"


def test_cancel_removes_the_file_and_buffers_go_back_to_the_pool(driver):
    for i in range(3 * direct_io.KEEP_FREE):
        writer = driver.writer(f"uploads/c{i}", 0)
        writer.write(b"z" * (MiB + 1))
        writer.cancel()
        assert not os.path.exists(os.path.join(driver.root, f"uploads/c{i}"))
    assert len(direct_io.POOL._free) <= direct_io.KEEP_FREE


def test_concurrent_writers_each_get_their_own_bytes(driver):
    expected: dict[str, bytes] = {}
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            pieces = _pieces(100 + i)
            _write(driver, f"blobs/t{i}", pieces)
            expected[f"blobs/t{i}"] = b"".join(pieces)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for path, data in expected.items():
        assert driver.get_content(path) == data


def test_a_filesystem_refusing_o_direct_at_open_is_written_through_the_page_cache(driver, monkeypatch):
    real_open = os.open

    def refusing(path, flags, *args):
        if flags & direct_io.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refusing)
    pieces = _pieces(5)
    writer = _write(driver, "blobs/b", pieces, commit=False)
    assert writer._direct is None
    _write(driver, "blobs/b", [b"more"], offset=sum(map(len, pieces)))
    assert driver.get_content("blobs/b") == b"".join(pieces) + b"more"


@pytest.mark.skipif(not direct_io.O_DIRECT, reason="no O_DIRECT on this platform")
def test_a_direct_write_refused_goes_on_through_the_page_cache(driver, monkeypatch, caplog):
    real_pwrite = os.pwrite
    refused = []

    def refusing(fd, data, offset):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & direct_io.O_DIRECT:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", refusing)
    pieces = _pieces(6)
    with caplog.at_level(logging.WARNING, logger="soko.storage"):
        writer = _write(driver, "blobs/c", pieces)
    if writer._direct is None:
        pytest.skip("this filesystem refuses O_DIRECT")
    assert refused == [0] and not writer._direct.direct
    assert driver.get_content("blobs/c") == b"".join(pieces)
    assert "direct writes refused" in caplog.text


def test_short_writes_through_the_page_cache_write_the_rest(driver, monkeypatch):
    real_open, real_write = os.open, os.write

    def refusing(path, flags, *args):
        if flags & direct_io.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    def short(fd, data):  # at most 1,000 bytes a call, as a write interrupted by a signal may be
        return real_write(fd, memoryview(data)[:1000])

    monkeypatch.setattr(os, "open", refusing)
    pieces = _pieces(7)
    writer = driver.writer("blobs/d", 0)
    monkeypatch.setattr(os, "write", short)
    for piece in pieces[:4]:
        assert writer.write(piece) == len(piece)
    monkeypatch.setattr(os, "write", real_write)
    writer.commit()
    assert driver.get_content("blobs/d") == b"".join(pieces[:4])


def test_a_forked_child_writes_with_writer_threads_of_its_own(driver):
    import time

    for i in range(direct_io.WRITE_THREADS + 1):  # the parent's writer pool has threads now
        _write(driver, f"blobs/parent{i}", [b"p" * (2 * MiB + 1)])
    pid = os.fork()
    if pid == 0:  # the child: its writes must complete (the parent's threads are not here)
        code = 1
        try:
            _write(driver, "blobs/child", [b"c" * (3 * MiB + 5)])
            code = 0 if driver.get_content("blobs/child") == b"c" * (3 * MiB + 5) else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError("the child's write never completed: it handed work to the parent's writer threads")
