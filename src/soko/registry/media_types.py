"""Manifest media types Soko stores, and Accept-header negotiation."""

from __future__ import annotations

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
OCI_EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"

IMAGE_MANIFESTS = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEXES = frozenset({OCI_INDEX, DOCKER_LIST})
SUPPORTED = IMAGE_MANIFESTS | INDEXES

# Layers a registry may legitimately not hold (their content lives at descriptor "urls").
NON_DISTRIBUTABLE = frozenset(
    {
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    }
)


def parse_accept(values: list[str]) -> list[str]:
    """Media types from one or more Accept headers, parameters (q=…) dropped."""
    types: list[str] = []
    for value in values:
        for item in value.split(","):
            media_type = item.split(";", 1)[0].strip().lower()
            if media_type:
                types.append(media_type)
    return types


_ACCEPT_CACHE: dict[tuple[str, ...], list[str]] = {}


def parse_accept_cached(values: list[str]) -> list[str]:
    """parse_accept for the few distinct Accept headers clients send, remembered."""
    key = tuple(values)
    parsed = _ACCEPT_CACHE.get(key)
    if parsed is None:
        parsed = parse_accept(values)
        if len(_ACCEPT_CACHE) > 1024:
            _ACCEPT_CACHE.clear()
        _ACCEPT_CACHE[key] = parsed
    return parsed


def acceptable(media_type: str, accepted: list[str]) -> bool:
    """No Accept header, a wildcard, or an exact match accepts the stored manifest."""
    if not accepted:
        return True
    major = media_type.split("/", 1)[0]
    return any(a in ("*/*", f"{major}/*", media_type) for a in accepted)
