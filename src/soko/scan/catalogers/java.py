"""Java packages: the Maven coordinates found in jar, war and ear files (``soko.scan.java``), nested ones
reported with the path inside the archive (``app.jar!BOOT-INF/lib/x.jar``)."""

from __future__ import annotations

import json

from packageurl import PackageURL

from soko.scan.model import OperatingSystem, Package
from soko.scan.rootfs import RootFS


def wants(path: str) -> bool:
    return False  # archives are read as their layer streams (RootFS._read), not kept


def catalog(fs: RootFS, os_release: OperatingSystem | None, owned: set[str]) -> list[Package]:
    packages = []
    for path, versions in fs.files():
        if versions[-1].kind != "javaarchive":
            continue
        for c in json.loads(versions[-1].data):
            purl = PackageURL("maven", c["group"], c["artifact"], c["version"]).to_string()
            where = f"{path}!{c['inner']}" if c["inner"] else path
            packages.append(Package("maven", f"{c['group']}:{c['artifact']}", c["version"], purl,
                                    versions[-1].layer, where))
    return packages
