"""RPM packages: the package database in either of the formats RPM has written by default — SQLite
(``rpmdb.sqlite``: RPM 4.16+, Fedora 33+, RHEL/Rocky/Alma 9, Amazon Linux 2023, openSUSE) and Berkeley DB
(``Packages``: RPM before 4.16, CentOS/RHEL 7 and 8, Amazon Linux 2) — under ``var/lib/rpm`` or
``usr/lib/sysimage/rpm`` (Fedora 36+ and openSUSE).

Each row of the SQLite ``Packages`` table, and each value of the Berkeley DB hash (``soko.scan.bdb``), is an RPM
header blob: an index of (tag, type, offset, count) entries and a data store. Only the tags an inventory needs are
read (name, epoch, version, release, arch, source RPM), every offset bounds-checked, so a hostile blob is a package
skipped, never a crash. The SQLite database is opened from memory (``sqlite3`` deserialize, read-only,
``trusted_schema`` off), never written to disk.

The NDB format (``Packages.db``, SUSE's before its switch to SQLite) is not read: an image holding one and no other
database gets no rpm packages, and its inventory says so in ``notes`` (``soko scan`` prints it) rather than passing
for an image without packages.
"""

from __future__ import annotations

import itertools
import re
import sqlite3
import struct

from packageurl import PackageURL

from soko.scan import bdb
from soko.scan.catalogers.distro import distro_qualifier
from soko.scan.catalogers.history import added_by
from soko.scan.model import OperatingSystem, Package
from soko.scan.rootfs import RootFS

SQLITE = ("var/lib/rpm/rpmdb.sqlite", "usr/lib/sysimage/rpm/rpmdb.sqlite")
BERKELEY = ("var/lib/rpm/Packages", "usr/lib/sysimage/rpm/Packages")
NDB = ("var/lib/rpm/Packages.db", "usr/lib/sysimage/rpm/Packages.db")

NAME, VERSION, RELEASE, EPOCH, VENDOR, ARCH, SOURCERPM = 1000, 1001, 1002, 1003, 1011, 1022, 1044
_INT32, _STRING, _STRING_ARRAY, _I18NSTRING = 4, 6, 8, 9
_MAX_ENTRIES = 1 << 16  # a real header has a few hundred tags
_MAX_ROWS = 1 << 17  # packages in one database
_SOURCE_RPM = re.compile(r"^(.+)-([^-]+)-([^-]+)\.(?:no)?src\.rpm$")


def wants(path: str) -> bool:
    return path in SQLITE or path in BERKELEY


def unread_format(fs: RootFS) -> str | None:
    """The path of an NDB rpm database, when the image has one and no database Soko reads."""
    if any(fs.resolve(p) for p in (*SQLITE, *BERKELEY)):
        return None
    for path in NDB:
        if fs.seen(path):
            return path
    return None


def header(blob: bytes) -> dict[int, str | int]:
    """The wanted tags of one RPM header blob (``headerImport``'s layout, big-endian): {} if it is malformed."""
    if len(blob) < 8:
        return {}
    count, size = struct.unpack_from(">II", blob, 0)
    store = 8 + 16 * count
    if count > _MAX_ENTRIES or store + size > len(blob):
        return {}
    out: dict[int, str | int] = {}
    for i in range(count):
        tag, kind, offset, n = struct.unpack_from(">IIiI", blob, 8 + 16 * i)
        if tag not in (NAME, VERSION, RELEASE, EPOCH, VENDOR, ARCH, SOURCERPM) or not 0 <= offset < size or n < 1:
            continue
        at = store + offset
        if kind == _INT32:
            if offset + 4 <= size:
                out[tag] = struct.unpack_from(">I", blob, at)[0]
        elif kind in (_STRING, _STRING_ARRAY, _I18NSTRING):
            end = blob.find(b"\0", at, store + size)
            if end >= 0:
                out[tag] = blob[at:end].decode("utf-8", "replace")
    return out


def _rows(data: bytes) -> list[dict[int, str | int]]:
    if not data.startswith(b"SQLite format 3\0"):
        out = []
        try:
            for blob in itertools.islice(bdb.values(data), _MAX_ROWS):
                h = header(blob)
                if h:
                    out.append(h)
        except bdb.NotBerkeleyDB:
            return []
        return out
    if data[18:20] == b"\2\2":
        # WAL mode (rpm's default): an in-memory copy cannot open a WAL database; the header's read/write versions
        # set to 1 (rollback journal) make it the same database. Rows left in a -wal file rpm did not checkpoint
        # (it does on close) are not seen.
        data = data[:18] + b"\1\1" + data[20:]
    conn = sqlite3.connect(":memory:")
    try:
        conn.deserialize(data)
        conn.execute("PRAGMA query_only = ON")
        conn.execute("PRAGMA trusted_schema = OFF")  # the image's schema may not run functions or views on us
        rows = conn.execute("SELECT blob FROM Packages LIMIT ?", (_MAX_ROWS,)).fetchall()
    except sqlite3.Error:
        return []  # not a database, or no Packages table: no packages from it
    finally:
        conn.close()
    return [h for (blob,) in rows if isinstance(blob, bytes) and (h := header(blob))]


def _parse(data: bytes) -> dict[tuple[str, str], tuple[str, dict[int, str | int]]]:
    out = {}
    for h in _rows(data):
        name, version, release = h.get(NAME), h.get(VERSION), h.get(RELEASE)
        if not isinstance(name, str) or not isinstance(version, str) or not name or not version:
            continue
        if name == "gpg-pubkey":
            continue  # an imported signing key, not software
        full = f"{version}-{release}" if isinstance(release, str) and release else version
        epoch = h.get(EPOCH)
        if isinstance(epoch, int) and epoch:
            full = f"{epoch}:{full}"
        arch = h.get(ARCH)
        out[(name, arch if isinstance(arch, str) else "")] = (full, h)
    return out


def catalog(fs: RootFS, os_release: OperatingSystem | None, owned: set[str]) -> list[Package]:
    packages: list[Package] = []
    for path in (*SQLITE, *BERKELEY):
        real = fs.resolve(path)
        if real is None or real in {p.path for p in packages}:
            continue
        for (name, arch), ((version, h), layer) in added_by(fs.nodes[real].versions, _parse).items():
            packages.append(_package(name, version, arch, h, layer, real, os_release))
    return packages


def _package(name: str, version: str, arch: str, h: dict, layer: str, path: str,
             os_release: OperatingSystem | None) -> Package:
    epoch, _, evr = version.rpartition(":")
    source, source_version = name, version
    match = _SOURCE_RPM.match(str(h.get(SOURCERPM, "")))
    if match:
        source = match.group(1)
        source_version = f"{match.group(2)}-{match.group(3)}"
        if epoch:
            source_version = f"{epoch}:{source_version}"
    qualifiers = {"arch": arch} if arch else {}
    if epoch:
        qualifiers["epoch"] = epoch
    distro = distro_qualifier(os_release)
    if distro:
        qualifiers["distro"] = distro
    if source != name:
        qualifiers["upstream"] = str(h.get(SOURCERPM))
    namespace = os_release.id if os_release else None
    purl = PackageURL("rpm", namespace, name, evr, qualifiers).to_string()
    return Package("rpm", name, version, purl, layer, path, source, source_version, arch)
