"""What an inventory holds: the image's OS and its packages, each with a purl and the layer that added it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

# Bump when catalogers change what they find: stored inventories of an older version are rebuilt.
INVENTORY_VERSION = 4  # 2: Java archives; 3: rpm, Ruby gems, Rust, notes; 4: npm lock files


@dataclass(frozen=True, slots=True)
class Package:
    type: str  # deb, apk, rpm, pypi, npm, golang, maven, gem, cargo
    name: str
    version: str
    purl: str
    layer: str  # digest of the layer that added it
    path: str  # the file it was found in
    source_name: str = ""  # deb: the source package (Debian advisories name it); apk: the origin
    source_version: str = ""
    arch: str = ""

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.type, self.name, self.version, self.path)


@dataclass(frozen=True, slots=True)
class OperatingSystem:
    id: str  # os-release ID: debian, alpine, ubuntu…
    version_id: str  # "12", "3.20.3"; empty for rolling releases
    pretty_name: str = ""
    codename: str = ""


@dataclass(slots=True)
class ImageInventory:
    digest: str  # the image manifest's digest
    status: str  # COMPLETE, UNSUPPORTED_IMAGE or FAILED
    reason: str = ""
    platform: str = ""  # "linux/amd64"
    os: OperatingSystem | None = None
    packages: list[Package] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was seen and not inventoried (an older rpm database)
    version: int = INVENTORY_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ImageInventory:
        doc = json.loads(text)
        os_doc = doc.pop("os")
        packages = [Package(**p) for p in doc.pop("packages")]
        return cls(os=OperatingSystem(**os_doc) if os_doc else None, packages=packages, **doc)
