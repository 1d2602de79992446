"""``/etc/os-release`` (or ``/usr/lib/os-release``, where the former usually points): the distribution."""

from __future__ import annotations

import shlex

from soko.scan.model import OperatingSystem
from soko.scan.rootfs import RootFS

PATHS = ("etc/os-release", "usr/lib/os-release")


def wants(path: str) -> bool:
    return path in PATHS


def parse(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep or key.strip().startswith("#"):
            continue
        try:
            words = shlex.split(value, posix=True)
        except ValueError:
            continue
        out[key.strip()] = words[0] if words else ""
    return out


def read(fs: RootFS) -> OperatingSystem | None:
    for path in PATHS:
        real = fs.resolve(path)
        if real is not None:
            fields = parse(fs.nodes[real].versions[-1].data.decode("utf-8", "replace"))
            if fields.get("ID"):
                return OperatingSystem(
                    fields["ID"], fields.get("VERSION_ID", ""), fields.get("PRETTY_NAME", ""),
                    fields.get("VERSION_CODENAME", ""),
                )
    return None


def distro_qualifier(os_release: OperatingSystem | None) -> str | None:
    """purl ``distro`` qualifier: ``debian-12``, ``alpine-3.20.3``."""
    if os_release is None:
        return None
    return f"{os_release.id}-{os_release.version_id}" if os_release.version_id else os_release.id
