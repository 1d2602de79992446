"""npm packages: installed ones (``node_modules/<name>/package.json`` and ``node_modules/@scope/<name>/package.json``,
at any depth: nested ``node_modules`` hold other versions) and the ones npm lock files name (``package-lock.json``,
``npm-shrinkwrap.json``), so a tree shipped without its ``node_modules`` still has its packages.

A package.json elsewhere (a project's own, a package's test fixtures) is not an installed package. A lock entry whose
installed package.json is in the image is reported once, as the installed package (what is on disk wins over what
the lock says). Lock entries left out, as trivy does by default: the project itself (the root ``""`` and workspace
folders, keys outside ``node_modules``), links (``link: true``, the linked folder is the project's own code) and
development dependencies (``dev: true``: ``npm ci --omit=dev`` does not install them). Lock files inside
``node_modules`` are a dependency's own and not read (trivy skips them too)."""

from __future__ import annotations

import json
import posixpath
import re

from packageurl import PackageURL

from soko.scan.model import OperatingSystem, Package
from soko.scan.rootfs import RootFS

LOCKS = frozenset({"package-lock.json", "npm-shrinkwrap.json"})
NODE_MODULES = "node_modules/"
# a registry package name (scoped or not): anything else in a hostile lock is not a package
_NAME = re.compile(r"(?:@[^/@\s]+/)?[^/@\s.][^/\s]*")


def _installed(path: str) -> bool:
    parts = path.split("/")
    if len(parts) < 3 or parts[-1] != "package.json":
        return False
    if parts[-3] == "node_modules":
        return not parts[-2].startswith((".", "@"))
    return len(parts) >= 4 and parts[-4] == "node_modules" and parts[-3].startswith("@")


def _lock(path: str) -> bool:
    return posixpath.basename(path) in LOCKS and "node_modules" not in path.split("/")


def wants(path: str) -> bool:
    return _installed(path) or _lock(path)


def _json(data: bytes) -> dict | None:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested thousands deep
        return None
    return doc if isinstance(doc, dict) else None


def _purl(name: str, version: str) -> str:
    scope, _, bare = name.rpartition("/")
    return PackageURL("npm", scope or None, bare, version).to_string()


def lock_entries(data: bytes) -> list[tuple[str, str, str]]:
    """(name, version, install path below the lock's folder) of each package a lock file would install."""
    doc = _json(data)
    if doc is None:
        return []
    out = []
    packages = doc.get("packages")
    if isinstance(packages, dict):  # lockfileVersion 2 and 3: keyed by install path
        for key, entry in packages.items():
            if not isinstance(entry, dict) or entry.get("link") is True or entry.get("dev") is True:
                continue
            head, sep, tail = key.rpartition(NODE_MODULES)
            if not sep or (head and not head.endswith("/")):
                continue  # the root "" or a workspace folder: the project itself
            name = entry.get("name")  # an alias's real name; otherwise the folder's
            out.append((name if isinstance(name, str) else tail, entry.get("version"), key))
    else:  # lockfileVersion 1: a tree of "dependencies"
        stack: list[tuple[str, object]] = [("", doc.get("dependencies"))]
        while stack:
            parent, deps = stack.pop()
            if not isinstance(deps, dict):
                continue
            for name, entry in deps.items():
                if not isinstance(entry, dict) or entry.get("dev") is True:
                    continue
                path = f"{parent}{NODE_MODULES}{name}"
                out.append((name, entry.get("version"), path))
                stack.append((path + "/", entry.get("dependencies")))
    # a version with a ':' is not a registry release (file:, git+https:, npm: aliases of v1)
    return [(n, v, p) for n, v, p in out
            if isinstance(v, str) and v and ":" not in v and isinstance(n, str) and _NAME.fullmatch(n)]


def catalog(fs: RootFS, os_release: OperatingSystem | None, owned: set[str]) -> list[Package]:
    packages = []
    locks = []
    for path, versions in fs.files():
        newest = versions[-1]
        if newest.kind != "file":
            continue
        if _lock(path):
            locks.append((path, newest))
            continue
        if not _installed(path):
            continue
        doc = _json(newest.data)
        if doc is None:
            continue
        name, version = doc.get("name"), doc.get("version")
        if not isinstance(name, str) or not isinstance(version, str) or not name or not version:
            continue
        packages.append(Package("npm", name, version, _purl(name, version), newest.layer, path))
    installed = {p.path for p in packages}
    for path, newest in locks:
        folder = posixpath.dirname(path)
        found: dict[tuple[str, str], None] = {}
        for name, version, where in lock_entries(newest.data):
            if posixpath.join(folder, where, "package.json") not in installed:
                found[(name, version)] = None
        for name, version in found:
            packages.append(Package("npm", name, version, _purl(name, version), newest.layer, path))
    return packages
