"""The sealing wrapper passes the shared driver suite (filesystem and S3), stores no plaintext, reads plaintext of
earlier versions, and detects every kind of tampering before handing out a byte of it."""

from __future__ import annotations

import os

import pytest

from soko.crypto.driver import SealedDriver
from soko.crypto.keys import KeyRing
from soko.crypto.segments import HEADER, OVERHEAD, SEALED_SEGMENT, SEGMENT, KeyUnavailable, SealBroken, sealed_size
from soko.storage import FilesystemDriver, PathNotFound
from soko.storage.base import InvalidPath
from tests.s3 import moto, rgw, s3_driver, s3_server  # noqa: F401 - fixtures
from tests.storage.driver_suite import DriverSuite

MASTER = bytes(range(32))


def sealed_fs(root: str) -> SealedDriver:
    return SealedDriver(FilesystemDriver(root), KeyRing.service(MASTER))


class TestSealedFilesystem(DriverSuite):
    @pytest.fixture
    def driver(self, tmp_path) -> SealedDriver:
        return sealed_fs(str(tmp_path / "root"))


class TestSealedS3(DriverSuite):
    @pytest.fixture
    def driver(self, s3_driver) -> SealedDriver:  # noqa: F811
        return SealedDriver(s3_driver, KeyRing.service(MASTER))


@pytest.fixture
def driver(tmp_path) -> SealedDriver:
    return sealed_fs(str(tmp_path / "root"))


def _files(root: str) -> dict[str, bytes]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as f:
                out[os.path.relpath(os.path.join(dirpath, name), root)] = f.read()
    return out


def test_nothing_stored_holds_the_plaintext(driver, tmp_path):
    data = os.urandom(3 * SEGMENT + 1234)
    writer = driver.writer("uploads/u/data")
    writer.write(data[:1000])
    writer.commit()
    writer = driver.writer("uploads/u/data", offset=1000)  # a resume re-seals its segment
    writer.write(data[1000:])
    writer.commit()
    driver.move("uploads/u/data", "blobs/sha256/ab/abcd")
    driver.put_content("small", b"a secret manifest")
    stored = _files(driver.inner.root)
    assert sorted(stored) == ["sealed/blobs/sha256/ab/abcd", "sealed/small"]
    for content in stored.values():
        for i in range(0, len(data) - 64, 4096):
            assert data[i : i + 64] not in content
        assert b"secret" not in content
    assert len(stored["sealed/blobs/sha256/ab/abcd"]) == sealed_size(len(data))
    assert driver.stat("blobs/sha256/ab/abcd").size == len(data)
    assert driver.get_content("blobs/sha256/ab/abcd") == data


def test_range_reads_decrypt_from_any_offset(driver):
    data = os.urandom(4 * SEGMENT)  # a multiple of the segment: an empty final segment follows
    driver.put_content("blobs/sha256/aa/aa", data)
    for offset in (0, 1, SEGMENT - 1, SEGMENT, 2 * SEGMENT + 7, len(data) - 1, len(data)):
        with driver.reader("blobs/sha256/aa/aa", offset) as f:
            assert f.read(100) == data[offset : offset + 100]
            assert f.read() == data[offset + 100 :]


def test_plaintext_of_earlier_versions_reads_and_is_dropped_when_sealed(driver):
    driver.inner.put_content("blobs/sha256/bb/bb", b"old plaintext")
    assert driver.get_content("blobs/sha256/bb/bb") == b"old plaintext"
    assert driver.stat("blobs/sha256/bb/bb").size == 13
    assert [info.path for info in driver.walk("blobs")] == ["blobs/sha256/bb/bb"]
    driver.put_content("blobs/sha256/bb/bb", b"old plaintext")
    assert driver.get_content("blobs/sha256/bb/bb") == b"old plaintext"
    with pytest.raises(PathNotFound):
        driver.inner.stat("blobs/sha256/bb/bb")
    driver.delete("blobs/sha256/bb/bb")
    assert list(driver.inner.walk("")) == []


def test_the_reserved_prefix_is_refused(driver):
    for bad in ("sealed", "sealed/x"):
        with pytest.raises(InvalidPath):
            driver.put_content(bad, b"x")


def _stored(driver: SealedDriver, path: str) -> str:
    return os.path.join(driver.inner.root, "sealed", path)


def _patch(file: str, offset: int, data: bytes) -> None:
    with open(file, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _read_all(driver: SealedDriver, path: str, offset: int = 0) -> bytes:
    with driver.reader(path, offset) as f:
        return f.read()


DATA = bytes(range(256)) * (3 * SEGMENT // 256) + b"tail"
PATH = "blobs/sha256/cc/cc"


@pytest.fixture
def stored(driver) -> str:
    driver.put_content(PATH, DATA)
    return _stored(driver, PATH)


@pytest.mark.parametrize("where", [0, 30, HEADER - 1, HEADER, HEADER + 20, HEADER + SEALED_SEGMENT + 5, -1])
def test_a_flipped_byte_anywhere_is_detected(driver, stored, where):
    size = os.path.getsize(stored)
    position = where % size
    with open(stored, "rb") as f:
        f.seek(position)
        byte = f.read(1)
    _patch(stored, position, bytes([byte[0] ^ 1]))
    with pytest.raises(SealBroken):
        _read_all(driver, PATH)


@pytest.mark.parametrize("cut", [1, OVERHEAD, SEGMENT, SEALED_SEGMENT, SEALED_SEGMENT + 1, 2 * SEALED_SEGMENT + 4])
def test_truncation_is_detected(driver, stored, cut):
    os.truncate(stored, os.path.getsize(stored) - cut)
    with pytest.raises(SealBroken):
        _read_all(driver, PATH)


def test_appended_data_is_detected(driver, stored):
    with open(stored, "ab") as f:
        f.write(b"more")
    with pytest.raises(SealBroken):
        _read_all(driver, PATH)


def test_swapped_segments_are_detected(driver, stored):
    with open(stored, "rb") as f:
        content = f.read()
    first = content[HEADER : HEADER + SEALED_SEGMENT]
    second = content[HEADER + SEALED_SEGMENT : HEADER + 2 * SEALED_SEGMENT]
    _patch(stored, HEADER, second + first)
    with pytest.raises(SealBroken, match="segment 0"):
        _read_all(driver, PATH)
    with pytest.raises(SealBroken, match="segment 1"):
        _read_all(driver, PATH, SEGMENT)  # a Range read into the damage fails too
    assert _read_all(driver, PATH, 2 * SEGMENT) == DATA[2 * SEGMENT :]  # and one past it still decrypts


def test_a_segment_from_another_object_is_detected(driver, stored):
    driver.put_content("other", DATA)
    with open(_stored(driver, "other"), "rb") as f:
        foreign = f.read()[HEADER : HEADER + SEALED_SEGMENT]
    _patch(stored, HEADER, foreign)  # same key, same position, same plaintext: another object id
    with pytest.raises(SealBroken, match="segment 0"):
        _read_all(driver, PATH)


def test_a_header_of_another_key_is_unavailable_not_corrupt(tmp_path, stored, driver):
    other = SealedDriver(driver.inner, KeyRing.service(os.urandom(32)))
    with pytest.raises(SealBroken):
        _read_all(other, PATH)
    renamed = SealedDriver(driver.inner, KeyRing({"service/v2": os.urandom(32)}, "service/v2"))
    with pytest.raises(KeyUnavailable):
        _read_all(renamed, PATH)


def test_a_broken_read_hands_out_no_byte_of_the_damaged_segment(driver, stored):
    _patch(stored, HEADER + SEALED_SEGMENT + 100, b"\0\0\0\0")
    with driver.reader(PATH) as f:
        assert f.read(SEGMENT) == DATA[:SEGMENT]  # the intact first segment
        with pytest.raises(SealBroken):
            f.read(1)


def test_two_objects_swapped_are_detected_through_their_recorded_identity(driver):
    first, second = os.urandom(1000), os.urandom(1000)
    driver.put_content("blobs/sha256/11/11", first)
    driver.put_content("blobs/sha256/22/22", second)
    ids = {path: driver.seal_id(path) for path in ("blobs/sha256/11/11", "blobs/sha256/22/22")}
    with driver.sealed_reader("blobs/sha256/11/11", 0, ids["blobs/sha256/11/11"]) as f:
        assert f.read() == first
    a, b = _stored(driver, "blobs/sha256/11/11"), _stored(driver, "blobs/sha256/22/22")
    os.rename(a, a + ".x")
    os.rename(b, a)
    os.rename(a + ".x", b)
    for path, seal_id in ids.items():
        with pytest.raises(SealBroken, match="another object"):
            driver.sealed_reader(path, 0, seal_id)
    os.unlink(a)
    driver.inner.put_content("blobs/sha256/11/11", first)  # plaintext put where sealed content was
    with pytest.raises(SealBroken, match="plaintext"):
        driver.sealed_reader("blobs/sha256/11/11", 0, ids["blobs/sha256/11/11"])
    assert driver.seal_id("blobs/sha256/11/11") is None


def test_storage_redirect_is_refused_as_it_would_hand_out_ciphertext(tmp_path):
    from soko.config import load_settings
    from soko.registry import Registry

    settings = load_settings(overrides={"data_dir": str(tmp_path / "data"), "storage_redirect": True}, env={})
    with pytest.raises(ValueError, match="storage_redirect cannot be used: blobs are encrypted at rest"):
        Registry.open(settings)
