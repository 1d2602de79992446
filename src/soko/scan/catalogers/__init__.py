"""Catalogers: each names the files it needs (``wants``, by path, decided before any byte is read) and turns the
collected files into packages (``catalog``)."""

from __future__ import annotations

from soko.scan.catalogers import apk, distro, dpkg, golang_binaries, java, npm, python
from soko.scan.model import OperatingSystem, Package
from soko.scan.rootfs import RootFS

CATALOGERS = (distro, dpkg, apk, python, npm, golang_binaries, java)


def wants(path: str) -> bool:
    return any(c.wants(path) for c in CATALOGERS)


def catalog(fs: RootFS) -> tuple[OperatingSystem | None, list[Package]]:
    os_release = distro.read(fs)
    owned = dpkg.owned_files(fs)  # files of Debian packages: their Python metadata is the deb, reported once
    packages: list[Package] = []
    for cataloger in (dpkg, apk, python, npm, golang_binaries, java):
        packages.extend(cataloger.catalog(fs, os_release, owned))
    packages.sort(key=lambda p: (p.type, p.name, p.version, p.path))
    return os_release, packages
