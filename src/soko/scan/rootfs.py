"""The image's root filesystem as far as the catalogers need it: the layers applied in order (whiteouts, opaque
directories, later entries replacing earlier ones), keeping only the files some cataloger wants.

Nothing is extracted. Each wanted file is kept in memory (bounded per file and per image); package databases keep
every version a layer wrote since the file last appeared, so a package is attributed to the layer that added it,
not to the last layer that rewrote the database.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

from soko.scan import golang, java, rust
from soko.scan.limits import ImageUnreadable, Limits
from soko.scan.tarstream import CHUNK, DIRECTORY, HARDLINK, REGULAR, SYMLINK, TarStream

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


@dataclass(slots=True)
class Version:
    layer: str  # digest of the layer that wrote this content
    data: bytes
    # "file"; "gobuildinfo" (an executable's Go build information); "javaarchive" (coordinates); "rustaudit" (an
    # executable's cargo-auditable dependency list, JSON); "present" (a file noted, not read: see RootFS.marks)
    kind: str = "file"


@dataclass(slots=True)
class _Node:
    versions: list[Version] = field(default_factory=list)  # oldest first; empty for a symlink
    symlink: str | None = None
    layer: str = ""


class RootFS:
    """Apply layers with ``add_layer``; then ``files`` maps each wanted path to its content versions."""

    def __init__(self, wants: Callable[[str], bool], limits: Limits,
                 marks: Callable[[str], bool] = lambda path: False) -> None:
        self.wants = wants
        self.marks = marks  # files whose presence matters but whose content is not read (an rpm Berkeley DB)
        self.limits = limits
        self.nodes: dict[str, _Node] = {}
        self.collected = 0
        self.budget = [limits.image_bytes]
        self.audit_trials = [limits.audit_trials]
        self.layers: list[str] = []

    def add_layer(self, digest: str, raw: BinaryIO) -> None:
        stream = TarStream(raw, self.limits, self.budget)
        try:
            self._add_layer(stream, digest)
        finally:
            stream.close()
        self.layers.append(digest)

    def _add_layer(self, stream: TarStream, digest: str) -> None:
        removed: set[str] = set()  # whiteouts: this path and below
        opaque: set[str] = set()  # opaque directories: below this path
        below: set[str] = set()  # non-directory entries: what was below them is gone
        exact: set[str] = set()  # entries that are not a wanted file: what was at their path is gone
        added: dict[str, _Node] = {}
        watched = self._ancestors()
        for entry in stream:
            path = entry.path
            base = posixpath.basename(path)
            if base.startswith(WHITEOUT):
                # kept only where something collected lies (watched): a layer of a million whiteouts holds no set
                # of a million paths
                parent = posixpath.dirname(path)
                if base == OPAQUE:
                    if not parent or parent in watched:
                        opaque.add(parent)
                elif not base.startswith(WHITEOUT + WHITEOUT):  # .wh..wh.plnk etc.: aufs bookkeeping
                    target = posixpath.join(parent, base[len(WHITEOUT):])
                    if target in watched:
                        removed.add(target)
                continue
            if entry.kind != DIRECTORY and path in watched:
                below.add(path)
            node = self._read(stream, entry, digest, added)
            if node is not None:
                added[path] = node
                if node.symlink is None:
                    exact.discard(path)
                    continue
            if node is None:
                added.pop(path, None)  # a later entry of this layer replaced a wanted one
            if path in watched:
                exact.add(path)
        self._apply(removed, opaque, below, exact, added)

    def _ancestors(self) -> set[str]:
        """Paths whose replacement by a non-directory removes something collected."""
        out: set[str] = set()
        for path in self.nodes:
            while path and path not in out:
                out.add(path)
                path = posixpath.dirname(path)
        return out

    def _read(self, stream: TarStream, entry, digest: str, added: dict[str, _Node]) -> _Node | None:
        path = entry.path
        if entry.kind == SYMLINK:
            return _Node(symlink=entry.linkname, layer=digest) if self.wants(path) else None
        if entry.kind == HARDLINK:
            target = added.get(entry.linkname) or self.nodes.get(entry.linkname)
            if target is None or not self.wants(path):
                return None
            return _Node([Version(digest, v.data, v.kind) for v in target.versions[-1:]], target.symlink, digest)
        if entry.kind != REGULAR:
            return None
        if self.wants(path):
            if entry.size > self.limits.file_bytes:
                raise ImageUnreadable(f"{path} is {entry.size} bytes (limit {self.limits.file_bytes})")
            self._charge(entry.size)
            return _Node([Version(digest, _read_all(stream, entry.size))], layer=digest)
        if self.marks(path):
            return _Node([Version(digest, b"", "present")], layer=digest)
        if java.is_archive(path):
            coordinates = java.read(stream, entry.size, self.limits.binary_bytes)
            if not coordinates:
                return None
            data = json.dumps(coordinates).encode()
            self._charge(len(data))
            return _Node([Version(digest, data, "javaarchive")], layer=digest)
        if entry.mode & 0o111 and entry.size >= 64:
            head = stream.read(4)
            if head == b"\x7fELF":
                search = rust.AuditSearch(self.audit_trials)
                search.feed(head)
                info = golang.find_buildinfo(head, rust.Tee(stream, search), self.limits.binary_bytes)
                if info is not None:
                    self._charge(len(info))
                    return _Node([Version(digest, info, "gobuildinfo")], layer=digest)
                if search.found is not None:  # read to its end by the Go search (no Go build information)
                    self._charge(len(search.found))
                    return _Node([Version(digest, search.found, "rustaudit")], layer=digest)
        return None

    def _charge(self, size: int) -> None:
        self.collected += size
        if self.collected > self.limits.collected_bytes:
            raise ImageUnreadable(f"the files to inventory exceed {self.limits.collected_bytes} bytes")

    def _apply(self, removed: set[str], opaque: set[str], below: set[str], exact: set[str], added) -> None:
        """This layer's whiteouts and replacements act on the layers below; then its own entries land."""
        for path in list(self.nodes):
            gone = path in removed or path in exact
            parent = path
            while not gone and parent:
                parent = posixpath.dirname(parent)
                gone = parent in opaque or (bool(parent) and (parent in removed or parent in below))
            if gone:
                del self.nodes[path]
        for path, node in added.items():
            old = self.nodes.get(path)
            if old is not None and old.symlink is None and node.symlink is None and node.versions[0].kind == "file":
                node.versions = old.versions + node.versions  # history of a database rewritten in place
            self.nodes[path] = node

    # reading the result
    def resolve(self, path: str) -> str | None:
        """The path a wanted path's symlinks lead to, if it is collected (40 hops at most, as Linux)."""
        for _ in range(40):
            node = self.nodes.get(path)
            if node is None:
                return None
            if node.symlink is None:
                return path
            target = node.symlink
            joined = target if target.startswith("/") else posixpath.join(posixpath.dirname(path), target)
            path = posixpath.normpath("/" + joined).lstrip("/")
        return None

    def seen(self, path: str) -> bool:
        """Whether a marked (or wanted) file is in the image."""
        return self.resolve(path) is not None

    def files(self) -> Iterable[tuple[str, list[Version]]]:
        """Every collected regular file (symlinks are reached through ``resolve``)."""
        for path, node in self.nodes.items():
            if node.symlink is None:
                yield path, node.versions


def _read_all(stream: TarStream, size: int) -> bytes:
    parts = []
    while True:
        data = stream.read(CHUNK)
        if not data:
            break
        parts.append(data)
    return b"".join(parts)
