"""Alpine packages: ``lib/apk/db/installed`` (``P:`` name, ``V:`` version, ``A:`` arch, ``o:`` origin)."""

from __future__ import annotations

from packageurl import PackageURL

from soko.scan.catalogers.distro import distro_qualifier
from soko.scan.catalogers.history import added_by
from soko.scan.model import OperatingSystem, Package
from soko.scan.rootfs import RootFS

INSTALLED = "lib/apk/db/installed"


def wants(path: str) -> bool:
    return path == INSTALLED


def _parse(data: bytes) -> dict[tuple[str, str], tuple[str, dict[str, str]]]:
    out = {}
    fields: dict[str, str] = {}
    for line in [*data.decode("utf-8", "replace").splitlines(), ""]:
        if not line.strip():
            if fields.get("P") and fields.get("V"):
                out[(fields["P"], fields.get("A", ""))] = (fields["V"], fields)
            fields = {}
        elif len(line) > 1 and line[1] == ":":
            fields.setdefault(line[0], line[2:].strip())  # the first of repeated keys (F:, R: repeat)
    return out


def catalog(fs: RootFS, os_release: OperatingSystem | None, owned: set[str]) -> list[Package]:
    real = fs.resolve(INSTALLED)
    if real is None:
        return []
    packages = []
    for (name, arch), ((version, fields), layer) in added_by(fs.nodes[real].versions, _parse).items():
        origin = fields.get("o", name)
        qualifiers = {"arch": arch} if arch else {}
        distro = distro_qualifier(os_release)
        if distro:
            qualifiers["distro"] = distro
        if origin != name:
            qualifiers["upstream"] = origin
        purl = PackageURL("apk", os_release.id if os_release else "alpine", name, version, qualifiers).to_string()
        packages.append(Package("apk", name, version, purl, layer, real, origin, version, arch))
    return packages
