"""Which layer added each entry of a package database that several layers rewrote."""

from __future__ import annotations

from soko.scan.rootfs import Version


def added_by(versions: list[Version], parse) -> dict:
    """For a package database written by several layers: each entry of the newest version, with the layer that
    added it (the oldest version of the unbroken run, ending at the newest, that has the same entry)."""
    parsed = [parse(v.data) for v in versions]
    newest = parsed[-1]
    out = {}
    for key, entry in newest.items():
        layer = versions[-1].layer
        for i in range(len(parsed) - 2, -1, -1):
            older = parsed[i].get(key)
            if older is None or older[0] != entry[0]:
                break
            layer = versions[i].layer
        out[key] = (entry, layer)
    return out
