"""A layer as a stream of tar entries, read once, front to back, in constant memory.

Soko parses tar itself rather than with ``tarfile`` because a scanner must read what real tools write and refuse
what hostile ones do: a layer that ends without the end-of-archive blocks (umoci 0.4.7 writes such layers) is
complete when its last entry is; PAX headers and GNU long names are bounded; every entry's path is normalised
(no leading ``/``, no ``..`` above the root) and bounded in length and depth. Compression is sniffed from the
first bytes (gzip, zstd or none), whatever the media type says.
"""

from __future__ import annotations

import posixpath
import queue
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

import zstandard
from zlib_ng import zlib_ng  # zlib's API, inflating about twice as fast as zlib

from soko.scan.limits import ImageUnreadable, Limits

BLOCK = 512
CHUNK = 1 << 16

REGULAR, HARDLINK, SYMLINK, DIRECTORY, OTHER = "file", "hardlink", "symlink", "dir", "other"
_TYPES = {b"0": REGULAR, b"\0": REGULAR, b"7": REGULAR, b"1": HARDLINK, b"2": SYMLINK, b"5": DIRECTORY}


class _Decompressed:
    """``read(n)`` of a layer's tar bytes, decompressing gzip (any number of members) or zstd, counting every byte
    produced against the layer's and the image's limits."""

    def __init__(self, raw: BinaryIO, limits: Limits, budget: list[int]) -> None:
        self.raw = raw
        self.limits = limits
        self.budget = budget  # [bytes left for the image], shared by its layers
        self.produced = 0
        head = raw.read(4)
        self._pending = head
        self._zlib: Any = None  # a zlib_ng decompressor
        self._zstd = None
        self._in_member = False  # a gzip member has begun and not ended
        if head[:2] == b"\x1f\x8b":
            self._zlib = zlib_ng.decompressobj(16 + zlib_ng.MAX_WBITS)
            self.kind = "gzip"
        elif head == b"\x28\xb5\x2f\xfd":
            dctx = zstandard.ZstdDecompressor(max_window_size=limits.zstd_window)
            source = cast(BinaryIO, _Prefixed(head, raw))  # a file object as far as zstandard reads it
            self._zstd = dctx.stream_reader(source, read_across_frames=True, closefd=False)
            self.kind = "zstd"
        else:
            self.kind = "tar"

    def _count(self, data: bytes) -> bytes:
        self.produced += len(data)
        self.budget[0] -= len(data)
        if self.produced > self.limits.layer_bytes:
            raise ImageUnreadable(f"a layer decompresses to more than {self.limits.layer_bytes} bytes")
        if self.budget[0] < 0:
            raise ImageUnreadable(f"the image's layers decompress to more than {self.limits.image_bytes} bytes")
        return data

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; b"" only at the end."""
        try:
            if self._zstd is not None:
                return self._count(self._zstd.read(n))
            if self._zlib is None:
                data, self._pending = self._pending, b""
                data += self.raw.read(n - len(data)) if n > len(data) else b""
                return self._count(data)
            return self._count(self._gunzip(n))
        except zstandard.ZstdError as exc:
            raise ImageUnreadable(f"a zstd layer is corrupt: {exc}") from None
        except zlib_ng.error as exc:  # type: ignore[misc]  # its stub types error oddly; a class at run time
            raise ImageUnreadable(f"a gzip layer is corrupt: {exc}") from None

    def _gunzip(self, n: int) -> bytes:
        d = self._zlib
        assert d is not None  # read() calls this for gzip layers only
        while True:
            # max_length bounds what one call may produce: a bomb never lands in memory at once
            data = d.unconsumed_tail or self._pending or self.raw.read(CHUNK)
            self._pending = b""
            if not data:
                if self._in_member:
                    raise ImageUnreadable("a gzip layer is truncated")
                return b""
            if not self._in_member:
                data = data.lstrip(b"\0")  # zero padding after the last member
                if not data:
                    continue
            self._in_member = True
            out = d.decompress(data, n)
            if d.eof:
                self._pending = d.unused_data
                d = self._zlib = zlib_ng.decompressobj(16 + zlib_ng.MAX_WBITS)  # the next member, if any
                self._in_member = False
            if out:
                return out


class _ReadAhead:
    """The decompressed stream produced on a thread of its own, a few chunks ahead of the tar parser: zlib-ng and zstd
    release the GIL while they inflate, so inflating a layer and parsing it overlap on two cores. At most ``depth``
    chunks wait (1 MiB): memory stays bounded whatever the layer's size. An error of the producer (a corrupt or
    oversized layer) is raised to the reader; ``close`` stops and joins the thread before the blob is closed."""

    def __init__(self, src: _Decompressed, depth: int = 4, chunk: int = CHUNK * 4) -> None:
        self.src = src
        self.chunk = chunk
        self.queue: queue.Queue[bytes | BaseException] = queue.Queue(depth)
        self.stopping = threading.Event()
        self.buf = b""
        self.ended = False
        self.thread = threading.Thread(target=self._produce, name="soko-scan-inflate", daemon=True)
        self.thread.start()

    def _produce(self) -> None:
        try:
            while not self.stopping.is_set():
                data = self.src.read(self.chunk)
                self._put(data)
                if not data:
                    return
        except BaseException as exc:  # handed to the reader, raised there
            self._put(exc)

    def _put(self, item: bytes | BaseException) -> None:
        while not self.stopping.is_set():
            try:
                self.queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def read(self, n: int) -> bytes:
        if not self.buf:
            if self.ended:
                return b""
            item = self.queue.get()
            if isinstance(item, BaseException):
                self.ended = True
                raise item
            if not item:
                self.ended = True
                return b""
            self.buf = item
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def close(self) -> None:
        self.stopping.set()
        while self.thread.is_alive():
            try:
                self.queue.get(timeout=0.1)  # unblock a producer waiting to put
            except queue.Empty:
                pass
            self.thread.join(timeout=0.1)


class _Prefixed:
    """A reader that yields ``head`` then the rest of ``raw`` (the sniffed bytes go back in front)."""

    def __init__(self, head: bytes, raw: BinaryIO) -> None:
        self.head = head
        self.raw = raw

    def read(self, n: int = -1) -> bytes:
        if self.head:
            out, self.head = self.head, b""
            return out
        return self.raw.read(n if n and n > 0 else CHUNK)


@dataclass(slots=True)
class Entry:
    path: str  # normalised: relative to the root, no "." or ".." components, no trailing "/"
    kind: str  # REGULAR, HARDLINK, SYMLINK, DIRECTORY or OTHER
    size: int
    mode: int
    linkname: str  # symlink target as written; hardlink target normalised


class TarStream:
    """The entries of one layer. Iterate, and read an entry's content with ``read`` before moving on (what is not
    read is skipped)."""

    def __init__(self, raw: BinaryIO, limits: Limits, budget: list[int], *, read_ahead: bool = True) -> None:
        decompressed = _Decompressed(raw, limits, budget)
        self.src: _Decompressed | _ReadAhead = _ReadAhead(decompressed) if read_ahead else decompressed
        if isinstance(self.src, _ReadAhead):
            weakref.finalize(self, self.src.stopping.set)  # a stream dropped unclosed stops its thread too
        self.limits = limits
        self._left = 0  # content bytes of the current entry not read yet
        self._pad = 0
        self._buf = b""

    def close(self) -> None:
        """Stop reading ahead (the layer is done, or abandoned on an error)."""
        if isinstance(self.src, _ReadAhead):
            self.src.close()

    # raw byte access over the decompressed stream
    def _take(self, n: int) -> bytes:
        """Exactly ``n`` bytes, or fewer only at the end of the stream."""
        parts = []
        want = n
        if self._buf:
            part, self._buf = self._buf[:want], self._buf[want:]
            parts.append(part)
            want -= len(part)
        while want:
            data = self.src.read(max(want, CHUNK))
            if not data:
                break
            if len(data) > want:
                self._buf = data[want:]
                data = data[:want]
            parts.append(data)
            want -= len(data)
        return b"".join(parts)

    def _skip(self, n: int) -> bool:
        while n:
            got = len(self._take(min(n, CHUNK)))
            if not got:
                return False
            n -= got
        return True

    def read(self, n: int = CHUNK) -> bytes:
        """Up to ``n`` bytes of the current entry's content; b"" at its end."""
        n = min(n, self._left)
        if not n:
            return b""
        data = self._take(n)
        if len(data) < n:
            raise ImageUnreadable("a layer ends in the middle of a file")
        self._left -= len(data)
        return data

    def _read_long(self, size: int, what: str) -> bytes:
        if size < 0:  # base-256 allows it; _take would read on to the end of the layer
            raise ImageUnreadable(f"a layer has a {what} of negative size")
        if size > self.limits.header_bytes:
            raise ImageUnreadable(f"a layer has a {what} of {size} bytes (limit {self.limits.header_bytes})")
        data = self._take(size)
        if len(data) < size:
            raise ImageUnreadable(f"a layer ends in the middle of a {what}")
        self._skip(-size % BLOCK)
        return data

    def __iter__(self) -> Iterator[Entry]:
        count = 0
        pax: dict[str, str] = {}
        global_pax: dict[str, str] = {}
        pax_bytes = global_bytes = 0
        long_name = long_link = None
        while True:
            # finish the previous entry: its unread content and its padding (a missing final padding is tolerated)
            if not self._skip(self._left):
                raise ImageUnreadable("a layer ends in the middle of a file")
            padded = self._skip(self._pad)
            self._left = self._pad = 0
            if not padded:
                return
            header = self._take(BLOCK)
            if not header or header == bytes(BLOCK):
                return  # end of archive: its zero blocks, or (umoci 0.4.7) no trailer at all
            if len(header) < BLOCK:
                raise ImageUnreadable("a layer ends in the middle of a tar header")
            _check_sum(header)
            size = _number(header[124:136])
            type_flag = header[156:157]
            if type_flag in (b"x", b"g"):
                # headers add up (an entry's until the entry, global ones for good): their sum is bounded too, else
                # a run of headers, each under the limit, would grow these dicts with the layer
                records = _pax_records(self._read_long(size, "PAX header"))
                held = (pax_bytes if type_flag == b"x" else global_bytes) + size
                if held > self.limits.header_bytes:
                    raise ImageUnreadable(f"a layer's PAX headers add up to more than {self.limits.header_bytes} bytes")
                if type_flag == b"x":
                    pax_bytes = held
                    pax.update(records)
                else:
                    global_bytes = held
                    global_pax.update(records)
                continue
            if type_flag in (b"L", b"K"):
                value = self._read_long(size, "GNU long name").split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                if type_flag == b"L":
                    long_name = value
                else:
                    long_link = value
                continue
            count += 1
            if count > self.limits.entries:
                raise ImageUnreadable(f"a layer has more than {self.limits.entries} entries")
            merged = {**global_pax, **pax}
            name = long_name or merged.get("path") or _ustar_name(header)
            link = long_link or merged.get("linkpath") or _cstr(header[157:257])
            if "size" in merged:
                try:
                    size = int(merged["size"])
                except ValueError:
                    raise ImageUnreadable("a layer has a PAX size that is not a number") from None
            pax, pax_bytes, long_name, long_link = {}, 0, None, None
            kind = _TYPES.get(type_flag, OTHER)
            if type_flag == b"S":  # GNU sparse: its content is a map, not the file
                kind = OTHER
            if type_flag in (b"1", b"2", b"3", b"4", b"5", b"6"):
                size = 0  # these carry no content whatever the header says (as tarfile reads them)
            if size < 0:
                raise ImageUnreadable("a layer has an entry of negative size")
            self._left, self._pad = size, -size % BLOCK
            path = self.normalise(name)
            if kind == HARDLINK:
                link = self.normalise(link)
            yield Entry(path, kind, size, _number(header[100:108]) if header[100:108].strip(b"\0 ") else 0, link)

    def normalise(self, name: str) -> str:
        if len(name.encode("utf-8", "surrogateescape")) > self.limits.path_bytes:
            raise ImageUnreadable(f"a layer has a path longer than {self.limits.path_bytes} bytes")
        parts: list[str] = []
        for part in name.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if parts:
                    parts.pop()  # ".." above the root stays at the root, as when a runtime unpacks it
                continue
            parts.append(part)
        if len(parts) > self.limits.path_depth:
            raise ImageUnreadable(f"a layer has a path deeper than {self.limits.path_depth} directories")
        return "/".join(parts)


def _cstr(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _ustar_name(header: bytes) -> str:
    name = _cstr(header[0:100])
    if header[257:262] == b"ustar":
        prefix = _cstr(header[345:500])
        if prefix:
            return posixpath.join(prefix, name)
    return name


def _number(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # base-256 (GNU) for sizes past 8 GiB
        value = int.from_bytes(field[1:], "big")
        return -value if field[0] & 0x40 else value
    text = field.split(b"\0", 1)[0].strip(b" \0")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise ImageUnreadable("a layer has a tar header with a malformed number: not a tar archive") from None


def _check_sum(header: bytes) -> None:
    stored = _number(header[148:156])
    blanked = header[:148] + b" " * 8 + header[156:]
    if stored != sum(blanked) and stored != sum((b - 256 if b > 127 else b) for b in blanked):
        raise ImageUnreadable("a layer has a tar header whose checksum does not match: corrupt or not a tar archive")


def _pax_records(data: bytes) -> dict[str, str]:
    """``"%d %s=%s\\n"`` records; the length counts the whole record."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos:pos + 1] != b"\0":
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise ImageUnreadable("a layer has a malformed PAX header") from None
        if space < 0 or length <= 0 or pos + length > len(data):
            raise ImageUnreadable("a layer has a malformed PAX header")
        key, _, value = data[space + 1:pos + length - 1].partition(b"=")
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out
