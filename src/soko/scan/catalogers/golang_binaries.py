"""Go executables: the modules in their build information (``soko.scan.golang``), and the standard library of
the Go release that built them (Go's advisories name it ``stdlib``)."""

from __future__ import annotations

from packageurl import PackageURL

from soko.scan import golang
from soko.scan.model import OperatingSystem, Package
from soko.scan.rootfs import RootFS


def wants(path: str) -> bool:
    return False  # found by content (any ELF executable), not by name: see RootFS._read


def _purl(module: str, version: str) -> str:
    namespace, _, name = module.rpartition("/")
    return PackageURL("golang", namespace or None, name, version).to_string()


def catalog(fs: RootFS, os_release: OperatingSystem | None, owned: set[str]) -> list[Package]:
    packages = []
    for path, versions in fs.files():
        if versions[-1].kind != "gobuildinfo":
            continue
        info = golang.parse(versions[-1].data)
        layer = versions[-1].layer
        for module in info.modules:
            packages.append(Package("golang", module.path, module.version, _purl(module.path, module.version),
                                    layer, path))
        if info.go_version.startswith("go"):
            version = info.go_version[2:].split(" ", 1)[0]
            packages.append(Package("golang", "stdlib", version, _purl("stdlib", version), layer, path))
    return packages
