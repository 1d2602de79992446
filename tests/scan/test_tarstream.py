"""The layer reader on its own: formats real tools write, and layers built to hurt."""

from __future__ import annotations

import io
import tarfile
import zlib

import pytest

from soko.scan.limits import ImageUnreadable, Limits
from soko.scan.tarstream import DIRECTORY, HARDLINK, REGULAR, SYMLINK, TarStream
from tests.scan.tars import gz, tar, zst


def entries(data: bytes, limits: Limits | None = None, *, read: bool = True) -> list[tuple]:
    limits = limits or Limits()
    stream = TarStream(io.BytesIO(data), limits, [limits.image_bytes])
    out = []
    for entry in stream:
        content = stream.read(1 << 30) if read else None
        out.append((entry.path, entry.kind, content if entry.kind == REGULAR else entry.linkname))
    return out


FILES = [("etc", None), ("etc/os-release", b"ID=debian\n"), ("etc/link", "->os-release"),
         ("etc/hard", "=>etc/os-release")]
EXPECTED = [("etc", DIRECTORY, ""), ("etc/os-release", REGULAR, b"ID=debian\n"), ("etc/link", SYMLINK, "os-release"),
            ("etc/hard", HARDLINK, "etc/os-release")]


@pytest.mark.parametrize("compress", [lambda d: d, gz, zst], ids=["tar", "gzip", "zstd"])
@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_formats_and_compressions(compress, fmt):
    assert entries(compress(tar(FILES, fmt=fmt))) == EXPECTED


@pytest.mark.parametrize("read", [True, False])
def test_missing_end_of_archive_is_the_end(read):
    """umoci 0.4.7 ends a layer right after the last file's bytes: no padding, no zero blocks."""
    data = tar([("a", b"one"), ("b", b"two")], trailer=False)
    assert len(data) == 3 * 512 + 3
    with pytest.raises(tarfile.ReadError), tarfile.open(fileobj=io.BytesIO(data)) as archive:
        archive.getnames()
    got = entries(gz(data), read=read)
    assert [e[0] for e in got] == ["a", "b"]
    if read:
        assert got[1][2] == b"two"


def test_truncated_file_is_refused():
    data = tar([("a", b"x" * 2000)])[:1024]
    with pytest.raises(ImageUnreadable, match="middle of a file"):
        entries(data)


def test_truncated_gzip_is_refused():
    data = gz(tar([("a", bytes(range(256)) * 400)]))
    with pytest.raises(ImageUnreadable, match="truncated"):
        entries(data[: len(data) // 2])


def test_not_a_tar_is_refused():
    with pytest.raises(ImageUnreadable, match="checksum"):
        entries(b"PK\x03\x04" + bytes(range(256)) * 4)


def test_concatenated_gzip_members():
    """pigz and estargz write several gzip members; they are one stream."""
    data = tar([("a", b"1" * 700), ("b", b"2" * 10)])
    assert entries(gz(data[:1024]) + gz(data[1024:])) == [("a", REGULAR, b"1" * 700), ("b", REGULAR, b"2" * 10)]


def test_long_names_pax_and_gnu():
    name = "/".join(["d" * 50] * 10) + "/METADATA"
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        assert entries(tar([(name, b"x"), ("l", "->" + "t" * 300)], fmt=fmt)) == [
            (name, REGULAR, b"x"), ("l", SYMLINK, "t" * 300)]


def test_paths_are_normalised_and_stay_inside_the_root():
    got = entries(tar([("./etc/./a", b"1"), ("/abs", b"2"), ("../../../etc/passwd", b"3"), ("x/../y", b"4")]))
    assert [e[0] for e in got] == ["etc/a", "abs", "etc/passwd", "y"]


def test_tar_bomb_is_stopped_at_the_layer_limit():
    """64 MiB of zeros in one file: 65 KiB of gzip. The reader stops at the limit, holding a chunk at a time."""
    zeros = zlib.compressobj(9, zlib.DEFLATED, 31)
    header = tarfile.TarInfo("bomb")
    header.size = 64 << 20
    body = header.tobuf(tarfile.USTAR_FORMAT)
    compressed = zeros.compress(body)
    chunk = bytes(1 << 20)
    for _ in range(64):
        compressed += zeros.compress(chunk)
    compressed += zeros.flush()
    assert len(compressed) < 100_000
    with pytest.raises(ImageUnreadable, match="decompresses to more than"):
        entries(compressed, Limits(layer_bytes=8 << 20), read=False)
    assert entries(compressed, read=False) == [("bomb", REGULAR, None)]  # within limits, skipped unread


def test_image_budget_spans_layers():
    limits = Limits(image_bytes=25_000)  # each layer is 10,240 bytes (tarfile pads to a record)
    budget = [limits.image_bytes]
    data = tar([("a", b"x" * 6000)])
    for _ in range(2):
        list(TarStream(io.BytesIO(data), limits, budget))
    with pytest.raises(ImageUnreadable, match="image's layers"):
        list(TarStream(io.BytesIO(data), limits, budget))


def test_entry_count_limit():
    data = tar([(f"f{i}", b"") for i in range(50)])
    with pytest.raises(ImageUnreadable, match="more than 10 entries"):
        entries(data, Limits(entries=10))


def test_deep_and_long_paths_are_refused():
    deep = "/".join(["d"] * 300) + "/f"
    with pytest.raises(ImageUnreadable, match="deeper than"):
        entries(tar([(deep, b"")]))
    with pytest.raises(ImageUnreadable, match="longer than"):
        entries(tar([("a" * 5000, b"")]))


def test_huge_pax_header_is_refused_before_it_is_read():
    info = tarfile.TarInfo("x")
    info.pax_headers = {"comment": "c" * (2 << 20)}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        archive.addfile(info, io.BytesIO(b""))
    with pytest.raises(ImageUnreadable, match="PAX header of"):
        entries(out.getvalue())


def test_pax_headers_that_add_up_past_the_limit_are_refused():
    """Each global header is under the limit; together they are not (they would grow with the layer)."""
    def archive(key: str) -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT, pax_headers={key: "v" * 600}) as a:
            a.addfile(tarfile.TarInfo(key), io.BytesIO(b""))
            end = a.offset
        return out.getvalue()[:end]  # no trailer: the next archive's headers follow in the same layer

    data = b"".join(archive(f"k{i}") for i in range(3))
    assert len(entries(data, Limits(header_bytes=4096), read=False)) == 3
    with pytest.raises(ImageUnreadable, match="add up to more than 1500 bytes"):
        entries(data, Limits(header_bytes=1500), read=False)  # each is about 612 bytes


def test_zstd_window_beyond_the_limit_is_refused():
    import zstandard

    params = zstandard.ZstdCompressionParameters(window_log=28, enable_ldm=True)
    compressor = zstandard.ZstdCompressor(compression_params=params).compressobj()  # size unknown: window kept
    data = compressor.compress(tar([("a", b"x" * 1000)])) + compressor.flush()
    with pytest.raises(ImageUnreadable, match="zstd"):
        entries(data, Limits(zstd_window=1 << 20))


def test_negative_long_name_size_is_refused():
    header = bytearray(tarfile.TarInfo("././@LongLink").tobuf(tarfile.GNU_FORMAT))
    header[124:136] = b"\xff" * 12  # base-256, negative
    header[156:157] = b"L"
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header[:512])
    with pytest.raises(ImageUnreadable, match="negative size"):
        entries(bytes(header[:512]) + bytes(4096))
