"""Debian packages: ``var/lib/dpkg/status`` and distroless images' ``var/lib/dpkg/status.d/<name>``.

Each package keeps its *source* package and version (``Source: name (version)``), which Debian and Ubuntu
advisories are keyed by. A package whose status is ``not-installed`` or ``config-files`` (removed, not purged)
has no files left and is not reported.
"""

from __future__ import annotations

import posixpath
import re

from packageurl import PackageURL

from soko.scan.catalogers.distro import distro_qualifier
from soko.scan.catalogers.history import added_by
from soko.scan.model import OperatingSystem, Package
from soko.scan.rootfs import RootFS

STATUS = "var/lib/dpkg/status"
STATUS_D = "var/lib/dpkg/status.d/"
INFO = "var/lib/dpkg/info/"
GONE = {"not-installed", "config-files"}
_SOURCE = re.compile(r"^(\S+)(?:\s+\((\S+)\))?")


def wants(path: str) -> bool:
    if path == STATUS:
        return True
    if path.startswith(STATUS_D):
        return "/" not in path[len(STATUS_D):] and not path.endswith(".md5sums")
    return path.startswith(INFO) and path.endswith(".list") and "/" not in path[len(INFO):]


def stanzas(text: str) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if not line.strip():
            if fields:
                out.append(fields)
            fields, key = {}, None
        elif line[0] in " \t":
            if key:
                fields[key] += "\n" + line.strip()
        else:
            key, _, value = line.partition(":")
            key = key.strip()
            fields[key] = value.strip()
    if fields:
        out.append(fields)
    return out


def _parse(data: bytes) -> dict[tuple[str, str], tuple[str, dict[str, str]]]:
    out = {}
    for fields in stanzas(data.decode("utf-8", "replace")):
        name, version = fields.get("Package"), fields.get("Version")
        status = fields.get("Status", "install ok installed").split()
        if not name or not version or (status and status[-1] in GONE):
            continue
        out[(name, fields.get("Architecture", ""))] = (version, fields)
    return out


def catalog(fs: RootFS, os_release: OperatingSystem | None, owned: set[str]) -> list[Package]:
    packages = []
    for path, versions in fs.files():
        if path == STATUS or (path.startswith(STATUS_D) and wants(path)):
            for (name, arch), ((version, fields), layer) in added_by(versions, _parse).items():
                packages.append(_package(name, version, arch, fields, layer, path, os_release))
    return packages


def _package(name, version, arch, fields, layer, path, os_release) -> Package:
    source, source_version = name, version
    match = _SOURCE.match(fields.get("Source", ""))
    if match:
        source, source_version = match.group(1), match.group(2) or version
    qualifiers = {"arch": arch} if arch else {}
    distro = distro_qualifier(os_release)
    if distro:
        qualifiers["distro"] = distro
    if source != name or source_version != version:
        qualifiers["upstream"] = source if source_version == version else f"{source}@{source_version}"
    namespace = os_release.id if os_release else "debian"
    purl = PackageURL("deb", namespace, name, version, qualifiers).to_string()
    return Package("deb", name, version, purl, layer, path, source, source_version, arch)


def owned_files(fs: RootFS) -> set[str]:
    """Python metadata files and directories and gemspecs that Debian packages installed (from ``info/*.list``)."""
    owned: set[str] = set()
    for path, versions in fs.files():
        if path.startswith(INFO) and path.endswith(".list"):
            for line in versions[-1].data.decode("utf-8", "replace").splitlines():
                if ".dist-info" in line or ".egg-info" in line or line.endswith(".gemspec"):
                    owned.add(posixpath.normpath("/" + line.strip()).lstrip("/"))
    return owned
