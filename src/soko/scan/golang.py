"""Go module build information in executables, read as ``debug/buildinfo`` does for Go 1.18+ binaries.

The linker writes a 32-byte header at a 16-byte-aligned offset (``"\\xff Go buildinf:"``, pointer size, flags);
with flag 2 the Go version and the module information follow inline as varint-prefixed strings. Older binaries
(flag clear) hold pointers into the data segment instead; they are not read (Go 1.17 and earlier, out of support
since 2022). The search streams the file once and keeps a few KiB, whatever the binary's size.
"""

from __future__ import annotations

from dataclasses import dataclass

MAGIC = b"\xff Go buildinf:"
_HEADER = 32
_MAX_INFO = 1 << 20  # version + module information
_SENTINEL = 16  # modinfo is wrapped in 16 bytes of framing on each side


def find_buildinfo(head: bytes, stream, limit: int) -> bytes | None:
    """Read an executable (``head`` = its first bytes) until its build information; ``b"version\\0modinfo"``."""
    window = head
    offset = 0  # file offset of window[0]
    read = len(head)
    while True:
        pos = window.find(MAGIC)
        while pos >= 0 and (offset + pos) % 16:
            pos = window.find(MAGIC, pos + 1)
        if pos >= 0:
            return _inline(window[pos:], stream)
        keep = len(MAGIC) - 1
        offset += max(len(window) - keep, 0)
        window = window[-keep:]
        if read >= limit:
            return None
        data = stream.read(1 << 16)
        if not data:
            return None
        read += len(data)
        window += data


def _inline(buf: bytes, stream) -> bytes | None:
    def ensure(n: int) -> bytes:
        nonlocal buf
        while len(buf) < n:
            data = stream.read(max(n - len(buf), 1 << 16))
            if not data:
                break
            buf += data
        return buf

    ensure(_HEADER + 20)
    if len(buf) < _HEADER or not buf[15] & 2:
        return None  # pre-1.18 pointer format
    pos = _HEADER
    values = []
    for _ in range(2):
        ensure(pos + 10)
        length, pos = _uvarint(buf, pos)
        if length is None or length > _MAX_INFO:
            return None
        ensure(pos + length)
        if len(buf) < pos + length:
            return None
        values.append(buf[pos:pos + length])
        pos += length
    return values[0] + b"\0" + values[1]


def _uvarint(buf: bytes, pos: int) -> tuple[int | None, int]:
    value = shift = 0
    for i in range(pos, min(pos + 10, len(buf))):
        b = buf[i]
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i + 1
        shift += 7
    return None, pos


@dataclass(frozen=True, slots=True)
class Module:
    path: str
    version: str
    main: bool = False


@dataclass(frozen=True, slots=True)
class BuildInfo:
    go_version: str  # "go1.19.8"
    main_package: str
    modules: list[Module]


def parse(info: bytes) -> BuildInfo:
    version, _, modinfo = info.partition(b"\0")
    text = modinfo.decode("utf-8", "replace")
    if len(modinfo) >= 2 * _SENTINEL + 1 and modinfo[-_SENTINEL - 1:-_SENTINEL] == b"\n":
        text = modinfo[_SENTINEL:-_SENTINEL].decode("utf-8", "replace")
    main_package = ""
    modules: list[Module] = []
    for line in text.splitlines():
        fields = line.split("\t")
        if fields[0] == "path" and len(fields) > 1:
            main_package = fields[1]
        elif fields[0] in ("mod", "dep") and len(fields) >= 3:
            modules.append(Module(fields[1], fields[2], main=fields[0] == "mod"))
        elif fields[0] == "=>" and len(fields) >= 2 and modules:
            # a replacement: the module actually built in; a local directory has no version and keeps the name
            last = modules.pop()
            if fields[1].startswith((".", "/")):
                modules.append(Module(last.path, "(devel)", last.main))
            else:
                modules.append(Module(fields[1], fields[2] if len(fields) > 2 and fields[2] else "(devel)", last.main))
    return BuildInfo(version.decode("utf-8", "replace"), main_package, modules)
