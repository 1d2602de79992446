"""Rust crates: ``Cargo.lock`` files (every ``[[package]]``: registry, git and workspace crates), and the dependency
list cargo-auditable embeds in executables (``soko.scan.rust``: the ``.dep-v0`` section's zlib-compressed JSON), the
crates actually built in (build-time-only crates left out, as cargo-auditable marks them)."""

from __future__ import annotations

import json
import posixpath
import tomllib

from packageurl import PackageURL

from soko.scan.model import OperatingSystem, Package
from soko.scan.rootfs import RootFS

LOCK = "Cargo.lock"


def wants(path: str) -> bool:
    return posixpath.basename(path) == LOCK


def _purl(name: str, version: str) -> str:
    return PackageURL("cargo", None, name, version).to_string()


def lock_packages(data: bytes) -> list[tuple[str, str]]:
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    entries = doc.get("package")
    if not isinstance(entries, list):
        return []
    out = []
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str) and isinstance(entry.get("version"), str):
            out.append((entry["name"], entry["version"]))
    return out


def audit_packages(data: bytes) -> list[tuple[str, str]]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return []
    entries = doc.get("packages") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        return []
    out = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kind") == "build":
            continue  # build-dependencies run at compile time and are not in the executable
        name, version = entry.get("name"), entry.get("version")
        if isinstance(name, str) and isinstance(version, str) and name and version:
            out.append((name, version))
    return out


def catalog(fs: RootFS, os_release: OperatingSystem | None, owned: set[str]) -> list[Package]:
    packages = []
    for path, versions in fs.files():
        newest = versions[-1]
        if newest.kind == "rustaudit":
            found = audit_packages(newest.data)
        elif newest.kind == "file" and wants(path):
            found = lock_packages(newest.data)
        else:
            continue
        for name, version in dict.fromkeys(found):
            packages.append(Package("cargo", name, version, _purl(name, version), newest.layer, path))
    return packages
