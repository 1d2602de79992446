"""npm packages: ``node_modules/<name>/package.json`` and ``node_modules/@scope/<name>/package.json``, at any
depth (nested ``node_modules`` hold other versions). A package.json elsewhere (a project's own, a package's test
fixtures) is not an installed package."""

from __future__ import annotations

import json

from packageurl import PackageURL

from soko.scan.model import OperatingSystem, Package
from soko.scan.rootfs import RootFS


def wants(path: str) -> bool:
    parts = path.split("/")
    if len(parts) < 3 or parts[-1] != "package.json":
        return False
    if parts[-3] == "node_modules":
        return not parts[-2].startswith((".", "@"))
    return len(parts) >= 4 and parts[-4] == "node_modules" and parts[-3].startswith("@")


def catalog(fs: RootFS, os_release: OperatingSystem | None, owned: set[str]) -> list[Package]:
    packages = []
    for path, versions in fs.files():
        if versions[-1].kind != "file" or not wants(path):
            continue
        try:
            doc = json.loads(versions[-1].data)
        except (ValueError, UnicodeDecodeError):
            continue
        if not isinstance(doc, dict):
            continue
        name, version = doc.get("name"), doc.get("version")
        if not isinstance(name, str) or not isinstance(version, str) or not name or not version:
            continue
        scope, _, bare = name.rpartition("/")
        purl = PackageURL("npm", scope or None, bare, version).to_string()
        packages.append(Package("npm", name, version, purl, versions[-1].layer, path))
    return packages
