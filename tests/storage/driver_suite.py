"""The one conformance suite every storage driver passes (like Distribution's driver/testsuites).

A driver's test module subclasses ``DriverSuite`` and provides a ``driver`` fixture.
"""

from __future__ import annotations

import os
import threading

import pytest

from soko.storage import InvalidOffset, PathNotFound, StorageDriver
from soko.storage.base import InvalidPath


class DriverSuite:
    def test_put_get_roundtrip(self, driver: StorageDriver) -> None:
        driver.put_content("a/b/c", b"hello")
        assert driver.get_content("a/b/c") == b"hello"
        driver.put_content("a/b/c", b"replaced")
        assert driver.get_content("a/b/c") == b"replaced"

    def test_missing_paths(self, driver: StorageDriver) -> None:
        for call in (driver.get_content, driver.stat, driver.delete, driver.list, driver.reader):
            with pytest.raises(PathNotFound):
                call("no/such/thing")
        with pytest.raises(PathNotFound):
            driver.move("no/such", "dest")

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
        assert {type(caps.cheap_rename), type(caps.append), type(caps.redirect)} == {bool}
        if not caps.redirect:
            driver.put_content("cap/x", b"x")
            assert driver.redirect_url("cap/x") is None

    def test_concurrent_put_same_path_never_tears(self, driver: StorageDriver) -> None:
        payloads = [bytes([i]) * 200_000 for i in range(8)]
        threads = [threading.Thread(target=driver.put_content, args=("c/same", p)) for p in payloads]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert driver.get_content("c/same") in payloads
