"""The sealing wrapper passes the shared driver suite (filesystem and S3), stores no plaintext, reads plaintext of
earlier versions, and detects every kind of tampering before handing out a byte of it."""

from __future__ import annotations

import os
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from soko.crypto.driver import LayerDriver, SealedDriver
from soko.crypto.keys import KeyRing
from soko.crypto.segments import HEADER, OVERHEAD, SEALED_SEGMENT, SEGMENT, KeyUnavailable, SealBroken, sealed_size
from soko.storage import FilesystemDriver, PathNotFound
from soko.storage.base import InvalidPath
from tests.s3 import TEST_LIST_PAGE, moto, rgw, s3_driver, s3_server  # noqa: F401 - fixtures
from tests.storage.driver_suite import DriverSuite

MASTER = bytes(range(32))


def sealed_fs(root: str) -> SealedDriver:
    return SealedDriver(FilesystemDriver(root), KeyRing.service(MASTER))


class TestSealedFilesystem(DriverSuite):
    @pytest.fixture
    def driver(self, tmp_path) -> SealedDriver:
        return sealed_fs(str(tmp_path / "root"))


class TestLayeredFilesystem(DriverSuite):
    """KMS_DSSE's two layers: sealed by one key, then by another, at the same paths."""

    @pytest.fixture
    def driver(self, tmp_path) -> LayerDriver:
        outer = SealedDriver(FilesystemDriver(str(tmp_path / "root")), KeyRing({"kms": bytes(32)}, "kms"))
        return LayerDriver(outer, KeyRing.service(MASTER))


class TestSealedS3(DriverSuite):
    listing_page = TEST_LIST_PAGE

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


# ---- the format, decoded and encoded independently of soko.crypto (the layout in segments.py's docstring) --------
_FIXED = struct.Struct(">8sBBH16s32s")


def _decode(sealed: bytes, kek: bytes) -> bytes:
    fixed, rest = sealed[: _FIXED.size], sealed[_FIXED.size :]
    magic, version, shift, _, object_id, _ = _FIXED.unpack(fixed)
    assert (magic, version, shift) == (b"SOKOSEAL", 1, 18)
    data_key = AESGCM(kek).decrypt(rest[:12], rest[12:60], fixed)
    body, plain, index = rest[60:], [], 0
    while True:
        segment = body[: (1 << 18) + 28]
        body = body[len(segment) :]
        final = len(segment) < (1 << 18) + 28
        aad = struct.pack(">16sQB", object_id, index, final)
        plain.append(AESGCM(data_key).decrypt(segment[:12], segment[12:], aad))
        index += 1
        if final:
            assert not body
            return b"".join(plain)


def _encode(plain: bytes, kek: bytes, key_id: bytes) -> bytes:
    object_id, data_key = os.urandom(16), os.urandom(32)
    fixed = _FIXED.pack(b"SOKOSEAL", 1, 18, 0, object_id, key_id.ljust(32, b"\0"))
    nonce = os.urandom(12)
    out = [fixed, nonce, AESGCM(kek).encrypt(nonce, data_key, fixed)]
    pieces = [plain[i : i + (1 << 18)] for i in range(0, len(plain) + 1, 1 << 18)]
    if len(pieces[-1]) == 1 << 18:
        pieces.append(b"")
    for index, piece in enumerate(pieces):
        nonce = os.urandom(12)
        aad = struct.pack(">16sQB", object_id, index, index == len(pieces) - 1)
        out += [nonce, AESGCM(data_key).encrypt(nonce, piece, aad)]
    return b"".join(out)


@pytest.mark.parametrize("size", [0, 1, SEGMENT - 1, SEGMENT, 3 * SEGMENT + 77])
def test_the_format_is_the_documented_one_both_ways(tmp_path, size):
    """Objects sealed by earlier versions stay readable: what the writer stores decodes by the documented layout,
    and an object encoded by it (as any earlier version wrote it) reads back, whole and from any offset."""
    kek = os.urandom(32)
    driver = SealedDriver(FilesystemDriver(str(tmp_path / "root")), KeyRing({"k1": kek}, "k1"))
    data = os.urandom(size)
    writer = driver.writer("blobs/sha256/dd/dd")
    for i in range(0, size, 100_000):
        writer.write(data[i : i + 100_000])
    writer.commit()
    assert _decode(driver.inner.get_content("sealed/blobs/sha256/dd/dd"), kek) == data
    driver.put_content("small", data)
    assert _decode(driver.inner.get_content("sealed/small"), kek) == data
    driver.inner.put_content("sealed/blobs/sha256/ee/ee", _encode(data, kek, b"k1"))
    assert driver.get_content("blobs/sha256/ee/ee") == data
    for offset in {0, 1, SEGMENT - 5, SEGMENT + 3, size - 1, size}:
        if 0 <= offset <= size:
            with driver.reader("blobs/sha256/ee/ee", offset) as f:
                assert f.read() == data[offset:]


def test_readinto_of_any_size_from_any_offset(driver):
    data = os.urandom(3 * SEGMENT + 999)
    driver.put_content("blobs/sha256/ff/ff", data)
    for offset in (0, 5, SEGMENT, SEGMENT + 1):
        for size in (1, 1000, SEGMENT - 1, SEGMENT, SEGMENT + 1, 2 * SEGMENT + 3, 5 * SEGMENT):
            with driver.reader("blobs/sha256/ff/ff", offset) as f:
                got, buffer = [], bytearray(size)
                while n := f.readinto(buffer):
                    got.append(bytes(buffer[:n]))
            assert b"".join(got) == data[offset:], (offset, size)


def test_a_damaged_segment_leaves_no_plaintext_in_the_callers_buffer(driver, stored):
    _patch(stored, HEADER + SEALED_SEGMENT + 100, b"\0\0\0\0")  # segment 1, decrypted straight into the buffer
    buffer = bytearray(b"x" * 2 * SEGMENT)
    with driver.reader(PATH, SEGMENT) as f, pytest.raises(SealBroken):
        f.readinto(buffer)
    assert buffer[:SEGMENT] == bytes(SEGMENT)  # (GCM writes plaintext before it checks the tag: zeroed again)
