"""Catalogers: each names the files it needs (``wants``, by path, decided before any byte is read) and turns the
collected files into packages (``catalog``)."""

from __future__ import annotations

from soko.scan.catalogers import apk, cargo, distro, dpkg, gem, golang_binaries, java, npm, python, rpm
from soko.scan.model import OperatingSystem, Package
from soko.scan.rootfs import RootFS

CATALOGERS = (distro, dpkg, apk, rpm, python, npm, gem, cargo, golang_binaries, java)


# Every file a cataloger wants has one of these names or endings (asked of every entry of every layer, so the
# common answer, no, must be cheap); the catalogers' own ``wants`` then decide.
_NAMES = frozenset({"os-release", "status", "installed", "rpmdb.sqlite", "Packages", "METADATA", "PKG-INFO",
                    "package.json", "package-lock.json", "npm-shrinkwrap.json", "Cargo.lock"})
_ENDINGS = (".egg-info", ".gemspec", ".list")


def wants(path: str) -> bool:
    base = path.rpartition("/")[2]
    if base not in _NAMES and not base.endswith(_ENDINGS) and not path.startswith(dpkg.STATUS_D):
        return False
    return any(c.wants(path) for c in CATALOGERS)


def marks(path: str) -> bool:
    """Files noted but not read: an rpm database in a format Soko does not read."""
    return path in rpm.NDB


def catalog(fs: RootFS) -> tuple[OperatingSystem | None, list[Package], list[str]]:
    os_release = distro.read(fs)
    owned = dpkg.owned_files(fs)  # files of Debian packages: their Python and Ruby metadata is the deb, reported once
    packages: list[Package] = []
    for cataloger in (dpkg, apk, rpm, python, npm, gem, cargo, golang_binaries, java):
        packages.extend(cataloger.catalog(fs, os_release, owned))
    packages.sort(key=lambda p: (p.type, p.name, p.version, p.path))
    notes = []
    unread = rpm.unread_format(fs)
    if unread:
        notes.append(f"{unread}: an rpm database in the NDB format is not read; its packages are not in this "
                     "inventory")
    return os_release, packages, notes
