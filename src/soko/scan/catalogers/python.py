"""Python distributions: ``*.dist-info/METADATA`` (wheels, pip) and ``*.egg-info`` (``PKG-INFO`` in a directory,
or the single file distutils wrote). Metadata installed by a Debian package is that deb's, reported once (as the
deb, which Debian's advisories cover)."""

from __future__ import annotations

import posixpath
import re
from email.parser import HeaderParser

from packageurl import PackageURL

from soko.scan.model import OperatingSystem, Package
from soko.scan.rootfs import RootFS


def wants(path: str) -> bool:
    parent = posixpath.basename(posixpath.dirname(path))
    base = posixpath.basename(path)
    return (
        (base == "METADATA" and parent.endswith(".dist-info"))
        or (base == "PKG-INFO" and parent.endswith(".egg-info"))
        or base.endswith(".egg-info")
    )


def normalise(name: str) -> str:
    """PEP 503: what pip and advisories compare."""
    return re.sub(r"[-_.]+", "-", name).lower()


def catalog(fs: RootFS, os_release: OperatingSystem | None, owned: set[str]) -> list[Package]:
    packages = []
    for path, versions in fs.files():
        if versions[-1].kind != "file" or not wants(path):
            continue
        if path in owned or posixpath.dirname(path) in owned:
            continue
        # metadata is UTF-8 (core metadata spec); parsed as bytes, a header with other bytes came back as an
        # email Header object, not a str, and broke the scan
        headers = HeaderParser().parsestr(versions[-1].data.decode("utf-8", "replace"))
        name, version = (headers.get("Name") or "").strip(), (headers.get("Version") or "").strip()
        if not name or not version:
            continue
        purl = PackageURL("pypi", None, normalise(name), version).to_string()
        packages.append(Package("pypi", name, version, purl, versions[-1].layer, path))
    return packages
