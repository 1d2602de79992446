"""The one conformance suite every storage driver passes (like Distribution's driver/testsuites).

A driver's test module subclasses ``DriverSuite`` and provides a ``driver`` fixture.
"""

from __future__ import annotations

import hashlib
import os
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from soko.storage import InvalidOffset, PathNotFound, StorageDriver
from soko.storage.base import InvalidPath

MiB = 1 << 20


def check_listing_past_a_page(driver: StorageDriver, page: int) -> None:
    """list and walk (from the start, from a key, and as a sweep resuming page by page) over ``page`` + 10 % keys,
    more than one listing page of ``page`` keys."""
    names = [f"many/{i:05d}" for i in range(page + page // 10)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda name: driver.put_content(name, b"."), names))
    assert driver.list("many") == names
    assert [info.path for info in driver.walk("many")] == names
    middle = page + page // 20  # in the second page
    assert [info.path for info in driver.walk("many", start_after=names[middle - 1])] == names[middle:]
    # a sweep page by page: resume each page after the last path it saw
    seen: list[str] = []
    while True:
        swept = []
        for info in driver.walk("many", start_after=seen[-1] if seen else ""):
            swept.append(info.path)
            if len(swept) == page * 2 // 5:
                break
        if not swept:
            break
        seen += swept
    assert seen == names


def _chunks(data: bytes, sizes: tuple[int, ...] = (1, 65_536, 3 * MiB + 7, 1000)):
    """``data`` cut in irregular pieces, as network reads arrive."""
    i = n = 0
    while i < len(data):
        size = sizes[n % len(sizes)]
        yield data[i : i + size]
        i += size
        n += 1


def _write(driver: StorageDriver, path: str, data: bytes, offset: int = 0) -> None:
    writer = driver.writer(path, offset)
    for piece in _chunks(data):
        writer.write(piece)
    assert writer.size == offset + len(data)
    writer.commit()


class DriverSuite:
    def test_put_get_roundtrip(self, driver: StorageDriver) -> None:
        driver.put_content("a/b/c", b"hello")
        assert driver.get_content("a/b/c") == b"hello"
        driver.put_content("a/b/c", b"replaced")
        assert driver.get_content("a/b/c") == b"replaced"

    def test_missing_paths(self, driver: StorageDriver) -> None:
        driver.put_content("exists/file", b"x")
        for missing in ("no/such/thing", "exists/fil", "exists/file/below"):
            for call in (driver.get_content, driver.stat, driver.delete, driver.list, driver.reader):
                with pytest.raises(PathNotFound):
                    call(missing)
            with pytest.raises(PathNotFound):
                driver.move(missing, "dest")
            with pytest.raises(InvalidOffset):
                driver.writer(missing, offset=1)
            assert list(driver.walk(missing)) == []
        assert driver.get_content("exists/file") == b"x"

    def test_hostile_paths_are_refused(self, driver: StorageDriver) -> None:
        for bad in ("../escape", "a/../../b", "/abs", "a//b", "a/./b", "", "a\x00b", "a/b/"):
            with pytest.raises(InvalidPath):
                driver.put_content(bad, b"x")

    def test_writer_streams_and_commits(self, driver: StorageDriver) -> None:
        writer = driver.writer("up/1/data")
        for _ in range(10):
            writer.write(os.urandom(1000))
        assert writer.size == 10_000
        writer.commit()
        assert driver.stat("up/1/data").size == 10_000

    def test_writer_resumes_and_truncates_a_failed_chunk(self, driver: StorageDriver) -> None:
        writer = driver.writer("up/2/data")
        writer.write(b"0123456789")
        writer.commit()
        broken = driver.writer("up/2/data", offset=10)
        broken.write(b"garbage that never got recorded")
        broken.close()
        resumed = driver.writer("up/2/data", offset=10)
        resumed.write(b"abc")
        resumed.commit()
        assert driver.get_content("up/2/data") == b"0123456789abc"
        with pytest.raises(InvalidOffset):
            driver.writer("up/2/data", offset=100)

    def test_writer_cancel_discards(self, driver: StorageDriver) -> None:
        writer = driver.writer("up/3/data")
        writer.write(b"x" * 100)
        writer.cancel()
        with pytest.raises(PathNotFound):
            driver.stat("up/3/data")

    def test_reader_offsets(self, driver: StorageDriver) -> None:
        driver.put_content("r/file", bytes(range(256)))
        with driver.reader("r/file", offset=200) as f:
            assert f.read() == bytes(range(200, 256))

    def test_move_replaces_atomically(self, driver: StorageDriver) -> None:
        driver.put_content("m/src", b"new")
        driver.put_content("m/dst", b"old")
        driver.move("m/src", "m/dst")
        assert driver.get_content("m/dst") == b"new"
        with pytest.raises(PathNotFound):
            driver.stat("m/src")

    def test_list_walk_and_delete_prefix(self, driver: StorageDriver) -> None:
        for name in ("d/x/1", "d/x/2", "d/y/3"):
            driver.put_content(name, name.encode())
        assert driver.list("d") == ["d/x", "d/y"]
        assert sorted(info.path for info in driver.walk("d")) == ["d/x/1", "d/x/2", "d/y/3"]
        driver.delete("d/x")
        assert driver.list("d") == ["d/y"]

    def test_walk_is_in_path_order_and_resumes_after_a_path(self, driver: StorageDriver) -> None:
        names = ["w/a-b", "w/a.b", "w/a/c", "w/a/d/e", "w/a0", "w/b", "w/z/1"]
        for name in reversed(names):
            driver.put_content(name, name.encode())
        walked = list(driver.walk("w"))
        assert [info.path for info in walked] == sorted(names)  # byte order: "a-b" < "a.b" < "a/c" < "a0"
        assert all(info.size == len(info.path) and info.modified > 0 and not info.is_dir for info in walked)
        for i, name in enumerate(sorted(names)):
            assert [info.path for info in driver.walk("w", start_after=name)] == sorted(names)[i + 1 :]
        assert list(driver.walk("w/nothing-here")) == []
        assert {info.path for info in driver.walk("")} >= set(names)

    def test_capabilities_are_declared(self, driver: StorageDriver) -> None:
        caps = driver.capabilities
        if not caps.redirect:
            driver.put_content("cap/x", b"x")
            assert driver.redirect_url("cap/x") is None

    def test_empty_files_exist(self, driver: StorageDriver) -> None:
        driver.put_content("e/put", b"")
        driver.writer("e/written").commit()
        for path in ("e/put", "e/written"):
            assert driver.get_content(path) == b""
            assert driver.stat(path).size == 0
        assert [info.path for info in driver.walk("e")] == ["e/put", "e/written"]

    def test_large_streams_round_trip(self, driver: StorageDriver) -> None:
        data = os.urandom(21 * MiB + 12_345)  # several parts on an object store, and an odd tail
        _write(driver, "big/stream", data)
        assert driver.stat("big/stream").size == len(data)
        for offset in (0, 1, 8 * MiB - 1, 8 * MiB, 13 * MiB + 5, len(data) - 1, len(data)):
            with driver.reader("big/stream", offset) as f:
                got = hashlib.sha256()
                while piece := f.read(MiB + 3):
                    got.update(piece)
            assert got.hexdigest() == hashlib.sha256(data[offset:]).hexdigest(), offset

    def test_resume_at_an_offset_after_a_reopen_then_move(self, driver: StorageDriver) -> None:
        pieces = [os.urandom(6 * MiB + 1), os.urandom(100), os.urandom(5 * MiB), os.urandom(9 * MiB + 3)]
        held = 0
        for piece in pieces:  # one writer per chunk, as each PATCH (on any node) opens its own
            _write(driver, "resume/data", piece, offset=held)
            held += len(piece)
            assert driver.stat("resume/data").size == held
        whole = b"".join(pieces)
        with driver.reader("resume/data", 6 * MiB) as f:
            assert f.read() == whole[6 * MiB :]
        driver.move("resume/data", "resume/final")
        assert hashlib.sha256(driver.get_content("resume/final")).digest() == hashlib.sha256(whole).digest()
        with pytest.raises(PathNotFound):
            driver.stat("resume/data")

    def test_resume_drops_what_lies_past_the_offset(self, driver: StorageDriver) -> None:
        first = os.urandom(9 * MiB)
        _write(driver, "trunc/data", first)
        _write(driver, "trunc/data", b"x" * (7 * MiB), offset=2 * MiB)  # rewrites from byte 2 MiB on
        assert driver.get_content("trunc/data") == first[: 2 * MiB] + b"x" * (7 * MiB)
        _write(driver, "trunc/data", b"", offset=MiB)  # a resume that writes nothing just truncates
        assert driver.get_content("trunc/data") == first[:MiB]

    def test_concurrent_writers_on_different_paths(self, driver: StorageDriver) -> None:
        payloads = {f"cw/{i}/data": os.urandom(MiB * (i % 3) + 1000 * i) for i in range(8)}

        def write(path: str) -> None:
            _write(driver, path, payloads[path])

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(write, payloads))
        for path, data in payloads.items():
            assert driver.get_content(path) == data

    def test_concurrent_readers_of_one_file(self, driver: StorageDriver) -> None:
        data = os.urandom(3 * MiB)
        driver.put_content("cr/file", data)

        def read(offset: int) -> bytes:
            with driver.reader("cr/file", offset) as f:
                return f.read()

        with ThreadPoolExecutor(8) as pool:
            offsets = [i * 300_000 for i in range(10)]
            assert list(pool.map(read, offsets)) == [data[o:] for o in offsets]

    def test_move_into_a_new_directory_and_of_written_files(self, driver: StorageDriver) -> None:
        _write(driver, "mv/up/data", b"streamed")
        driver.move("mv/up/data", "mv/new/dir/blob")
        assert driver.get_content("mv/new/dir/blob") == b"streamed"
        assert driver.list("mv/new") == ["mv/new/dir"]

    def test_stat_of_a_directory(self, driver: StorageDriver) -> None:
        driver.put_content("sd/x/file", b"abc")
        assert driver.stat("sd/x").is_dir
        info = driver.stat("sd/x/file")
        assert (info.size, info.is_dir, info.path) == (3, False, "sd/x/file")

    def test_delete_of_a_prefix_spares_its_siblings(self, driver: StorageDriver) -> None:
        for name in ("del/a/1", "del/a/b/2", "del/ab", "del/a-b/3", "del/a.txt"):
            driver.put_content(name, b"x")
        _write(driver, "del/a/up", os.urandom(MiB))
        driver.delete("del/a")
        assert [info.path for info in driver.walk("del")] == ["del/a-b/3", "del/a.txt", "del/ab"]
        with pytest.raises(PathNotFound):
            driver.delete("del/a")
        driver.delete("del/ab")  # a file
        assert driver.list("del") == ["del/a-b", "del/a.txt"]

    #: a listing page of the driver under test: S3's ListObjectsV2 page (the S3 suites set a smaller one)
    listing_page = 1000

    def test_listing_and_walking_past_a_page(self, driver: StorageDriver) -> None:
        check_listing_past_a_page(driver, self.listing_page)

    def test_walk_reports_written_files_once(self, driver: StorageDriver) -> None:
        _write(driver, "wp/u/data", os.urandom(9 * MiB))
        driver.put_content("wp/u/data2", b"x")
        driver.put_content("wp/u/info", b"x")
        walked = [(info.path, info.size) for info in driver.walk("wp")]
        assert sorted(walked) == [("wp/u/data", 9 * MiB), ("wp/u/data2", 1), ("wp/u/info", 1)]
        for path, _ in walked:  # resuming after any entry, written files included, neither repeats nor skips
            rest = [info.path for info in driver.walk("wp", start_after=path)]
            assert rest == [p for p, _ in walked][[p for p, _ in walked].index(path) + 1 :]

    def test_redirect_url_serves_the_content(self, driver: StorageDriver) -> None:
        data = os.urandom(1000)
        driver.put_content("rd/blob", data)
        url = driver.redirect_url("rd/blob")
        if not driver.capabilities.redirect:
            assert url is None
            return
        assert url is not None
        with urllib.request.urlopen(url, timeout=10) as answer:
            assert answer.read() == data
        head = driver.redirect_url("rd/blob", method="HEAD")
        assert head is not None
        with urllib.request.urlopen(urllib.request.Request(head, method="HEAD"), timeout=10) as answer:
            assert int(answer.headers["Content-Length"]) == len(data)

    def test_concurrent_put_same_path_never_tears(self, driver: StorageDriver) -> None:
        payloads = [bytes([i]) * 200_000 for i in range(8)]
        threads = [threading.Thread(target=driver.put_content, args=("c/same", p)) for p in payloads]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert driver.get_content("c/same") in payloads
