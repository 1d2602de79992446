"""Ruby gems: the specifications RubyGems writes for each installed gem (``…/specifications/NAME-VERSION.gemspec``,
default gems under ``specifications/default/``), wherever the gem home is (``/usr/local/bundle``,
``/var/lib/gems/3.1.0``, ``/usr/lib/ruby/gems/3.1.0``). A gemspec elsewhere is a project's source, not an installed
gem. The file is Ruby but RubyGems writes it in a fixed shape (``s.name = "rack".freeze``); it is read with patterns,
never run. Gems a Debian package installed (its ``info/*.list`` names the gemspec) are that deb's, reported once."""

from __future__ import annotations

import posixpath
import re

from packageurl import PackageURL

from soko.scan.model import OperatingSystem, Package
from soko.scan.rootfs import RootFS

_NAME = re.compile(rb"""^\s*s\.name\s*=\s*["']([^"'\n]{1,214})["']""", re.M)
_VERSION = re.compile(rb"""^\s*s\.version\s*=\s*["']([^"'\n]{1,128})["']""", re.M)
_STUB = re.compile(rb"^# stub: (\S{1,214}) (\S{1,128}) ", re.M)  # "# stub: debug 1.4.0 ruby lib"


def wants(path: str) -> bool:
    if not path.endswith(".gemspec"):
        return False
    parent = posixpath.dirname(path)
    if posixpath.basename(parent) == "default":
        parent = posixpath.dirname(parent)
    return posixpath.basename(parent) == "specifications"


def parse(data: bytes) -> tuple[str, str] | None:
    name, version = _NAME.search(data), _VERSION.search(data)
    if name and version:
        return name.group(1).decode("utf-8", "replace"), version.group(1).decode("utf-8", "replace")
    stub = _STUB.search(data)
    if stub:
        return stub.group(1).decode("utf-8", "replace"), stub.group(2).decode("utf-8", "replace")
    return None


def catalog(fs: RootFS, os_release: OperatingSystem | None, owned: set[str]) -> list[Package]:
    packages = []
    for path, versions in fs.files():
        if versions[-1].kind != "file" or not wants(path) or path in owned:
            continue
        found = parse(versions[-1].data)
        if found is None:
            continue
        name, version = found
        purl = PackageURL("gem", None, name, version).to_string()
        packages.append(Package("gem", name, version, purl, versions[-1].layer, path))
    return packages
