"""``SealedDriver``: a storage driver that encrypts everything it stores in another driver.

Content written through it lives in the inner driver at ``sealed/<path>`` (``storage/paths.py``) in the sealed
format of ``crypto/segments.py``; nothing it writes is plaintext. Content an earlier version wrote in plaintext at
``<path>`` is still read, transparently, until ``soko encrypt-existing`` seals it (a sealed copy always wins over a
plaintext one; writing a blob drops the plaintext copy at its path).

What changes for callers (declared in ``capabilities``): no redirects (a presigned URL would hand out ciphertext,
so encrypted blobs stream through Soko, which decrypts them) and no ``local_path`` (the page cache/sendfile fast path
would send ciphertext). A read that meets tampered, truncated or swapped ciphertext raises ``SealBroken`` (a
``StorageError``) before handing out any byte of the damaged segment: callers never see wrong bytes.
"""

from __future__ import annotations

import heapq
import io
from collections.abc import Iterator
from typing import BinaryIO

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from soko.crypto.keys import KeyRing
from soko.crypto.segments import (
    HEADER,
    SEALED_SEGMENT,
    SEGMENT,
    Header,
    SealBroken,
    new_header,
    open_segment,
    open_segment_into,
    plain_size,
    seal,
    seal_into,
    sealed_size,
    segment_offset,
    stored_plain,
    unwrap,
)
from soko.storage import paths
from soko.storage.base import (
    Capabilities,
    FileInfo,
    FileWriter,
    InvalidOffset,
    InvalidPath,
    PathNotFound,
    StorageDriver,
    check_path,
)

_PREFIX = paths.SEALED + "/"
_SCRATCH = 4 * SEGMENT  # the largest read whose buffer a reader keeps for the next ones


def _read_exact(f: BinaryIO, size: int) -> bytes:
    data = f.read(size)
    if len(data) == size or not data:
        return data
    pieces = [data]
    got = len(data)
    while got < size:
        more = f.read(size - got)
        if not more:
            break
        pieces.append(more)
        got += len(more)
    return b"".join(pieces)


class _SealedReader(io.RawIOBase):
    """Plaintext from ``offset`` on, decrypting one segment at a time (constant memory).

    Segments are read into one reused ciphertext buffer and decrypted with ``decrypt_into``: straight into the
    caller's buffer when a whole segment fits there, else into a reused plaintext buffer whose rest the next reads
    take. So a layer sealed twice (KMS_DSSE) is decrypted by the outer layer into the inner one's ciphertext buffer,
    with no copy between them for most of each segment; no buffer is allocated per segment."""

    def __init__(self, inner: BinaryIO, cipher: AESGCM, header: Header, index: int, skip: int, path: str) -> None:
        self._inner = inner
        self._cipher = cipher
        self._object_id = header.object_id
        self._index = index
        self._skip = skip
        self._path = path
        self._ended = False
        self._sealed = memoryview(bytearray(SEALED_SEGMENT))
        self._plain = memoryview(bytearray(SEGMENT))
        self._at = 0  # the next unread byte of the current segment's plaintext in ``_plain``
        self._held = 0  # the plaintext bytes in ``_plain``
        self._scratch = memoryview(b"")
        # every driver's reader has readinto; a plain file object might not
        self._readinto = getattr(inner, "readinto", None)

    def readable(self) -> bool:
        return True

    def _fill(self) -> memoryview:
        """The next sealed segment (or less, at the end), read into the reused buffer."""
        if self._readinto is None:
            return memoryview(_read_exact(self._inner, SEALED_SEGMENT))
        view, got = self._sealed, 0
        while got < SEALED_SEGMENT:
            n = self._readinto(view[got:])
            if not n:
                break
            got += n
        return view[:got]

    def _open_next(self, out: memoryview) -> int:
        """Decrypt the next segment into ``out`` (room for a whole segment); its plaintext size (0: the end)."""
        if self._ended:
            return 0
        sealed = self._fill()
        if not sealed:
            raise SealBroken(self._path, f"it ends before its final segment (segment {self._index} is missing)")
        final = len(sealed) < SEALED_SEGMENT
        size = open_segment_into(self._cipher, self._object_id, self._index, final, sealed, out, self._path)
        if final:
            if self._inner.read(1):
                out[:size] = bytes(size)  # (authentic, but the object around it is not: hand out none of it)
                raise SealBroken(self._path, "data follows its final segment")
            self._ended = True
        self._index += 1
        return size

    def readinto(self, buffer) -> int:
        out = memoryview(buffer).cast("B")
        wanted, got = len(out), 0
        while got < wanted:
            if self._at < self._held:
                take = min(self._held - self._at, wanted - got)
                out[got : got + take] = self._plain[self._at : self._at + take]
                self._at += take
                got += take
            elif self._ended:
                break
            elif not self._skip and wanted - got >= SEGMENT:
                got += self._open_next(out[got : got + SEGMENT])
            else:
                self._held = self._open_next(self._plain)
                self._at = min(self._skip, self._held)
                self._skip = 0
        return got

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        if self._held - self._at >= size:  # (within the current segment: one copy)
            piece = bytes(self._plain[self._at : self._at + size])
            self._at += size
            return piece
        # Into a buffer kept for the next reads, then one copy out: a fresh large buffer per read costs fresh pages
        # (the allocator maps and unmaps it), six times the decryption itself.
        scratch = self._scratch
        if len(scratch) < size:
            scratch = memoryview(bytearray(size))
            if size <= _SCRATCH:
                self._scratch = scratch
        return bytes(scratch[: self.readinto(scratch[:size])])

    def readall(self) -> bytes:
        pieces = []
        while piece := self.read(4 * SEGMENT):
            pieces.append(piece)
        return b"".join(pieces)

    def close(self) -> None:
        self._inner.close()
        super().close()


class _SealedWriter(FileWriter):
    """Seals whole segments as they fill. The inner writer is opened (and the file truncated where the resumed
    segment starts) only when the first segment is sealed, so a writer that writes little and is closed without a
    commit touches nothing; ``close`` keeps the whole segments written so far and drops the partial one (an upload's
    size only moves on ``commit``), and never writes itself: a writer whose claim was taken over writes no more."""

    def __init__(self, driver: SealedDriver, path: str, offset: int) -> None:
        self._driver = driver
        self._path = path
        # the segment being filled, and the sealed one: reused for every segment (the inner writer is done with
        # what it is given when its write returns, as every driver's is)
        self._pending = memoryview(bytearray(SEGMENT))
        self._held = 0
        self._out = memoryview(bytearray(SEALED_SEGMENT))
        self._done = False
        self._writer: FileWriter | None = None
        self._prefix = b""
        inner, self._sealed_path = driver.inner, driver.sealed(path)
        if offset == 0:
            self._header, self._cipher = new_header(driver.ring.current, driver.ring.cipher(driver.ring.current, path))
            self._index = 0
            self._prefix = self._header.encode()
        else:
            try:
                held = stored_plain(inner.stat(self._sealed_path).size)
            except PathNotFound:
                raise InvalidOffset(f"cannot resume {path} at {offset}: no such file") from None
            if held is None or held < offset:
                raise InvalidOffset(f"cannot resume {path} at {offset}: it holds only {held or 0} bytes")
            self._header, self._cipher = driver.open_header(self._sealed_path, path)
            self._index, keep = divmod(offset, SEGMENT)
            if keep:  # the segment we resume in is sealed again with what follows (under a fresh nonce)
                with inner.reader(self._sealed_path, segment_offset(self._index)) as f:
                    sealed = _read_exact(f, SEALED_SEGMENT)
                final = len(sealed) < SEALED_SEGMENT
                plain = open_segment(self._cipher, self._header.object_id, self._index, final, sealed, path)
                self._pending[:keep] = plain[:keep]
                self._held = keep
        self._start = segment_offset(self._index) if offset else 0
        self._size = offset

    def _seal(self, plain: bytes | memoryview | bytearray, final: bool) -> None:
        if self._writer is None:
            self._writer = self._driver.inner.writer(self._sealed_path, self._start)
            if self._prefix:
                self._writer.write(self._prefix)
        self._writer.write(seal_into(self._cipher, self._header.object_id, self._index, final, plain, self._out))
        self._index += 1

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data).cast("B")
        length = len(view)
        if self._held:
            take = min(SEGMENT - self._held, length)
            self._pending[self._held : self._held + take] = view[:take]
            self._held += take
            view = view[take:]
            if self._held < SEGMENT:
                self._size += length
                return length
            self._seal(self._pending, final=False)
            self._held = 0
        while len(view) >= SEGMENT:  # whole segments sealed from the caller's buffer, with no copy
            self._seal(view[:SEGMENT], final=False)
            view = view[SEGMENT:]
        self._pending[: len(view)] = view
        self._held = len(view)
        self._size += length
        return length

    @property
    def size(self) -> int:
        return self._size

    def commit(self) -> None:
        if not self._done:
            self._done = True
            self._seal(self._pending[: self._held], final=True)
            self._held = 0
        assert self._writer is not None
        self._writer.commit()

    def cancel(self) -> None:
        self._done = True
        if self._writer is not None:  # (nothing written yet: nothing to discard)
            self._writer.cancel()

    def close(self) -> None:
        self._done = True
        if self._writer is not None:
            self._writer.close()


class SealedDriver(StorageDriver):
    name = "sealed"

    def __init__(self, inner: StorageDriver, ring: KeyRing) -> None:
        self.inner = inner
        self.ring = ring

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(redirect=False)

    def sealed(self, path: str) -> str:
        check_path(path)
        if path == paths.SEALED or path.startswith(_PREFIX):
            raise InvalidPath(f"storage path {path!r} is reserved for encrypted content")
        return _PREFIX + path

    def open_header(self, sealed_path: str, path: str) -> tuple[Header, AESGCM]:
        with self.inner.reader(sealed_path) as f:
            header = Header.decode(_read_exact(f, HEADER), path)
        return header, unwrap(header, self.ring.cipher(header.key_id, path), path)

    def check(self) -> None:
        self.inner.check()

    def get_content(self, path: str) -> bytes:
        with self.reader(path) as f:
            return f.read()

    def put_content(self, path: str, data: bytes) -> None:
        header, cipher = new_header(self.ring.current, self.ring.cipher(self.ring.current, path))
        view = memoryview(data)
        count = len(data) // SEGMENT + 1
        sealed = [header.encode()]
        for index in range(count):
            piece = view[index * SEGMENT : (index + 1) * SEGMENT]
            sealed.append(seal(cipher, header.object_id, index, index == count - 1, piece))
        self.inner.put_content(self.sealed(path), b"".join(sealed))
        self._drop_plaintext(path)

    def _drop_plaintext(self, path: str) -> None:
        """Remove the plaintext an earlier version stored at ``path`` (blobs only: elsewhere it is shadowed, and
        goes with its upload session)."""
        if paths.whole_object(path):
            try:
                self.inner.delete(path)
            except PathNotFound:
                pass

    def reader(self, path: str, offset: int = 0) -> BinaryIO:
        return self.sealed_reader(path, offset, None)

    def sealed_reader(self, path: str, offset: int, seal_id: str | None) -> BinaryIO:
        sealed_path = self.sealed(path)
        try:
            header, cipher = self.open_header(sealed_path, path)
        except PathNotFound:
            if seal_id is not None:  # the metadata knows it was sealed: plaintext in its place is an impostor
                try:
                    self.inner.stat(path)
                except PathNotFound:
                    raise PathNotFound(path) from None
                raise SealBroken(path, "plaintext lies where sealed content was stored") from None
            return self.inner.reader(path, offset)  # plaintext of an earlier version
        return self._open_sealed(sealed_path, path, header, cipher, offset, seal_id)

    def _open_sealed(
        self, sealed_path: str, path: str, header: Header, cipher: AESGCM, offset: int, seal_id: str | None
    ) -> BinaryIO:
        """A reader of the sealed object whose header was read, checked against the seal the metadata recorded."""
        if seal_id is not None and header.object_id.hex() != seal_id:
            raise SealBroken(path, f"it holds another object ({header.object_id.hex()}, not {seal_id})")
        index, skip = divmod(offset, SEGMENT)
        inner = self.inner.reader(sealed_path, segment_offset(index))
        return _SealedReader(inner, cipher, header, index, skip, path)  # type: ignore[return-value]

    def seal_id(self, path: str) -> str | None:
        try:
            with self.inner.reader(self.sealed(path)) as f:
                return Header.decode(_read_exact(f, HEADER), path).object_id.hex()
        except PathNotFound:
            return None

    def key_id(self, path: str) -> str | None:
        """The key id the sealed object at ``path`` names in its header; None when it is plaintext or missing."""
        try:
            with self.inner.reader(self.sealed(path)) as f:
                return Header.decode(_read_exact(f, HEADER), path).key_id
        except PathNotFound:
            return None

    def writer(self, path: str, offset: int = 0) -> FileWriter:
        return _SealedWriter(self, path, offset)

    def stat(self, path: str) -> FileInfo:
        try:
            info = self.inner.stat(self.sealed(path))
        except PathNotFound:
            return self.inner.stat(path)
        if info.is_dir:
            return FileInfo(path, 0, info.modified, is_dir=True)
        return FileInfo(path, self._plain(info.size), info.modified)

    @staticmethod
    def _plain(size: int) -> int:
        plain = plain_size(size)
        return size if plain is None else plain  # a torn object: its size matches nothing (fsck reports it)

    def list(self, path: str) -> list[str]:
        top = path in ("", "/")
        found: set[str] = set()
        missing = 0
        try:
            found.update(p[len(_PREFIX) :] for p in self.inner.list(paths.SEALED if top else self.sealed(path)))
        except PathNotFound:
            missing += 1
        try:
            found.update(p for p in self.inner.list("" if top else path) if p != paths.SEALED)
        except PathNotFound:
            missing += 1
        if missing == 2 and not top:
            raise PathNotFound(path)
        return sorted(found)

    def walk(self, path: str, start_after: str = "") -> Iterator[FileInfo]:
        top = path in ("", "/")
        sealed_root = paths.SEALED if top else self.sealed(path)
        sealed = (
            (info.path[len(_PREFIX) :], 0, FileInfo(info.path[len(_PREFIX) :], self._plain(info.size), info.modified))
            for info in self.inner.walk(sealed_root, _PREFIX + start_after if start_after else "")
        )
        plain = (
            (info.path, 1, info) for info in self.inner.walk(path, start_after) if not info.path.startswith(_PREFIX)
        )
        previous = None
        for key, _, info in heapq.merge(sealed, plain, key=lambda item: (item[0].encode(), item[1])):
            if key != previous:  # a path held both sealed and in plaintext: the sealed copy is the content
                yield info
            previous = key

    def move(self, source: str, dest: str) -> None:
        sealed_dest = self.sealed(dest)
        try:
            self.inner.move(self.sealed(source), sealed_dest)
        except PathNotFound:
            self.inner.move(source, dest)  # plaintext of an earlier version stays so until encrypt-existing
            try:
                self.inner.delete(sealed_dest)
            except PathNotFound:
                pass
            return
        self._drop_plaintext(dest)

    def delete(self, path: str) -> None:
        found = False
        for target in (self.sealed(path), path):
            try:
                self.inner.delete(target)
                found = True
            except PathNotFound:
                pass
        if not found:
            raise PathNotFound(path)


class LayerDriver(SealedDriver):
    """One more sealed layer over a ``SealedDriver``, at the same paths: what it stores is sealed by it, then again
    by the driver below (KMS_DSSE: the service key inside, the customer key outside). No plaintext of earlier
    versions lives at its paths, so none is looked for, shadowed or dropped."""

    name = "layer"

    def sealed(self, path: str) -> str:
        return check_path(path)

    def _drop_plaintext(self, path: str) -> None:
        pass

    def sealed_reader(self, path: str, offset: int, seal_id: str | None) -> BinaryIO:
        header, cipher = self.open_header(path, path)
        return self._open_sealed(path, path, header, cipher, offset, seal_id)

    def stat(self, path: str) -> FileInfo:
        info = self.inner.stat(path)
        return info if info.is_dir else FileInfo(path, self._plain(info.size), info.modified)

    def list(self, path: str) -> list[str]:
        return self.inner.list(path)

    def walk(self, path: str, start_after: str = "") -> Iterator[FileInfo]:
        for info in self.inner.walk(path, start_after):
            yield FileInfo(info.path, self._plain(info.size), info.modified)

    def move(self, source: str, dest: str) -> None:
        self.inner.move(source, dest)

    def delete(self, path: str) -> None:
        self.inner.delete(path)


__all__ = ["LayerDriver", "SealBroken", "SealedDriver", "sealed_size"]
