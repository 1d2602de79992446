"""The values of a Berkeley DB hash database, read from its bytes: what RPM before 4.16 keeps in
``var/lib/rpm/Packages`` (one value per installed package: its header blob), as rpm's own read-only reader
(``bdb_ro``) and go-rpmdb read it.

Layout (Berkeley DB 4.x/5.x): page 0 is the metadata page (magic ``0x061561`` at byte 12, in either byte order,
which gives the file's; page size at 20; last page number at 32). Every hash page (type 13, or 2 unsorted) holds an
index of item offsets after its 26-byte header; items alternate key and value, each starting with its kind: 1 the
bytes inline (they run to the previous item's offset), 3 off-page (a chain of overflow pages, type 7, whose header
says how many bytes each holds, linked by next-page numbers, ``tlen`` bytes in all). Every offset, length and page
number is checked against the file, a chain may not revisit a page, a value is at most ``max_value`` bytes and all
values together at most the file's size (values never share pages): a hostile file yields fewer values, never a
crash, a loop or memory beyond its own size.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

MAGIC = 0x061561
_META_TYPE_HASH = 8
_P_HASH_UNSORTED, _P_HASH, _P_OVERFLOW = 2, 13, 7
_H_KEYDATA, _H_OFFPAGE = 1, 3
_PAGE_HEADER = 26


class NotBerkeleyDB(ValueError):
    pass


def values(data: bytes, max_value: int = 64 << 20) -> Iterator[bytes]:
    if len(data) < 512:
        raise NotBerkeleyDB("too short for a Berkeley DB file")
    for order in ("<", ">"):
        if struct.unpack_from(order + "I", data, 12)[0] == MAGIC:
            break
    else:
        raise NotBerkeleyDB("not a Berkeley DB hash database (magic)")
    page_size = struct.unpack_from(order + "I", data, 20)[0]
    if page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
        raise NotBerkeleyDB(f"page size {page_size}")
    pages = min(struct.unpack_from(order + "I", data, 32)[0] + 1, len(data) // page_size)
    u16, u32 = order + "H", order + "I"

    def page(number: int) -> memoryview | None:
        if not 0 < number < pages:
            return None
        return memoryview(data)[number * page_size:(number + 1) * page_size]

    def overflow(first: int, total: int) -> bytes | None:
        if total > max_value:
            return None
        out = bytearray()
        seen: set[int] = set()
        number = first
        while len(out) < total:
            p = page(number)
            if p is None or number in seen or p[25] != _P_OVERFLOW:
                return None
            seen.add(number)
            length = struct.unpack_from(u16, p, 22)[0]  # an overflow page's hf_offset: the bytes it holds
            if length > page_size - _PAGE_HEADER:
                return None
            out += p[_PAGE_HEADER:_PAGE_HEADER + length]
            number = struct.unpack_from(u32, p, 16)[0]
        return bytes(out[:total])

    left = len(data)  # what all values together may take
    for number in range(1, pages):
        p = page(number)
        if p is None or p[25] not in (_P_HASH, _P_HASH_UNSORTED):
            continue
        entries = struct.unpack_from(u16, p, 20)[0]
        if _PAGE_HEADER + 2 * entries > page_size:
            continue
        offsets = [struct.unpack_from(u16, p, _PAGE_HEADER + 2 * i)[0] for i in range(entries)]
        for i in range(1, entries, 2):  # the values: every second item
            start = offsets[i]
            end = offsets[i - 1] if offsets[i - 1] > start else page_size  # items grow down from the page's end
            if not _PAGE_HEADER + 2 * entries <= start < end <= page_size:
                continue
            kind = p[start]
            value = None
            if kind == _H_KEYDATA:
                value = bytes(p[start + 1:end])
            elif kind == _H_OFFPAGE and start + 12 <= end:
                first, total = struct.unpack_from(u32, p, start + 4)[0], struct.unpack_from(u32, p, start + 8)[0]
                value = overflow(first, min(total, left + 1))
            if value is None:
                continue
            left -= len(value)
            if left < 0:
                return
            yield value
