"""Bounds that keep a hostile image from exhausting memory, disk or time while it is inventoried."""

from __future__ import annotations

from dataclasses import dataclass

from soko.errors import SokoError


class ImageUnreadable(SokoError):
    """A layer is not a readable tar (corrupt, truncated, unknown compression) or breaks a limit: the scan fails
    with this message as its reason."""


@dataclass(frozen=True, slots=True)
class Limits:
    layer_bytes: int = 64 << 30  # decompressed bytes of one layer (a tar bomb costs time only until here)
    image_bytes: int = 256 << 30  # decompressed bytes of all layers of one image
    entries: int = 2_000_000  # tar entries of one layer
    path_bytes: int = 4096  # one path (PATH_MAX)
    path_depth: int = 256  # components of one path
    header_bytes: int = 1 << 20  # one PAX header or GNU long name
    file_bytes: int = 64 << 20  # one collected file (package databases, metadata)
    collected_bytes: int = 512 << 20  # everything collected from one image
    binary_bytes: int = 2 << 30  # an executable searched for Go build information
    audit_trials: int = 1 << 22  # trial inflations searching executables for cargo-auditable data (soko.scan.rust)
    zstd_window: int = 1 << 27  # zstd's default decoder limit (ZSTD_WINDOWLOG_LIMIT_DEFAULT = 27)
