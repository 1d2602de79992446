"""Layers written in the tests: tar bytes from (path, content or link) entries, compressed as asked."""

from __future__ import annotations

import gzip
import io
import tarfile

import zstandard

Entry = tuple  # (path, bytes) file | (path, None) dir | (path, "->target") symlink | (path, "=>target") hardlink


def tar(entries: list[Entry], *, mode: int = 0o644, fmt: int = tarfile.PAX_FORMAT, trailer: bool = True) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as archive:
        for entry in entries:
            path, value = entry[0], entry[1]
            info = tarfile.TarInfo(path)
            info.mode = entry[2] if len(entry) > 2 else mode
            if value is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(info)
            elif isinstance(value, str) and value.startswith("->"):
                info.type, info.linkname = tarfile.SYMTYPE, value[2:]
                archive.addfile(info)
            elif isinstance(value, str) and value.startswith("=>"):
                info.type, info.linkname = tarfile.LNKTYPE, value[2:]
                archive.addfile(info)
            else:
                info.size = len(value)
                archive.addfile(info, io.BytesIO(value))
    data = out.getvalue()
    if not trailer:  # as umoci 0.4.7 writes: no end-of-archive blocks and no padding after the last file
        data = data.rstrip(b"\0")
    return data


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)
