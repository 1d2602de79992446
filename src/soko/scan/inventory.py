"""The inventory of an image: its manifest and blobs come from the ``Registry`` (as any client would see them in
that repository), its layers are streamed once through ``RootFS`` and the catalogers, and the result is stored
under the manifest digest so that later scans (new advisories, rescans) never read the layers again."""

from __future__ import annotations

import json
import logging
import time

import sqlalchemy as sa

from soko.kernel.scan_queue import IMAGE_CONFIGS
from soko.meta.schema import image_inventories, manifests
from soko.registry import Registry
from soko.registry.manifest_format import Descriptor, parse_manifest
from soko.registry.models import RepoRef
from soko.scan import catalogers
from soko.scan.limits import ImageUnreadable, Limits
from soko.scan.model import INVENTORY_VERSION, ImageInventory
from soko.scan.rootfs import RootFS

log = logging.getLogger(__name__)

CONFIG_LIMIT = 4 << 20

COMPLETE, UNSUPPORTED, FAILED = "COMPLETE", "UNSUPPORTED_IMAGE", "FAILED"


def is_filesystem_layer(media_type: str) -> bool:
    return media_type.startswith(("application/vnd.oci.image.layer.", "application/vnd.docker.image.rootfs."))


class Inventories:
    def __init__(self, registry: Registry, limits: Limits | None = None) -> None:
        self.registry = registry
        self.limits = limits or Limits()

    def of(self, ref: RepoRef, reference: str, *, refresh: bool = False) -> list[ImageInventory]:
        """The inventories of the image ``reference`` (tag or digest) names: one, or one per platform of an
        index (attestations and other artifacts in it are skipped)."""
        record = self.registry.manifests.get(ref, reference)
        parsed = parse_manifest(record.payload, record.media_type)
        if not parsed.is_index:
            return [self.image(ref, record.digest, refresh=refresh)]
        out = []
        for child in parsed.children:
            if _is_attestation(child):
                continue
            out.append(self.image(ref, child.digest, refresh=refresh, platform=_platform(child.platform)))
        return out

    def image(self, ref: RepoRef, digest: str, *, refresh: bool = False, platform: str = "") -> ImageInventory:
        if not refresh:
            stored = self.stored(digest)
            if stored is not None:
                return stored
        inventory = self._build(ref, digest, platform)
        self._store(inventory)
        return inventory

    def stored(self, digest: str) -> ImageInventory | None:
        with self.registry.ctx.db.read() as conn:
            row = conn.execute(
                sa.select(image_inventories.c.version, image_inventories.c.document)
                .where(image_inventories.c.manifest_digest == digest)
            ).first()
        if row is None or row.version != INVENTORY_VERSION:
            return None
        return ImageInventory.from_json(row.document)

    def _build(self, ref: RepoRef, digest: str, platform: str) -> ImageInventory:
        record = self.registry.manifests.get(ref, digest)
        parsed = parse_manifest(record.payload, record.media_type)
        if parsed.is_index:
            return ImageInventory(digest, UNSUPPORTED, "an index inside an index is not scanned")
        if parsed.config is None or parsed.config.media_type not in IMAGE_CONFIGS:
            kind = parsed.effective_artifact_type or "unknown"
            return ImageInventory(digest, UNSUPPORTED, f"not a container image (an artifact of type {kind})")
        for layer in parsed.layers:
            if not is_filesystem_layer(layer.media_type):
                return ImageInventory(digest, UNSUPPORTED, f"layer {layer.digest} is not a filesystem layer "
                                      f"({layer.media_type})")
        started = time.monotonic()
        fs = RootFS(catalogers.wants, self.limits, catalogers.marks)
        try:
            platform = platform or self._platform(ref, parsed.config)
            for layer in parsed.layers:
                self._add_layer(fs, ref, layer)
            os_release, packages, notes = catalogers.catalog(fs)
        except ImageUnreadable as exc:
            return ImageInventory(digest, FAILED, exc.message, platform, layers=[x.digest for x in parsed.layers])
        log.info("inventory of %s: %d packages from %d layers in %.2fs", digest, len(packages), len(parsed.layers),
                 time.monotonic() - started)
        return ImageInventory(digest, COMPLETE, "", platform, os_release, packages, [x.digest for x in parsed.layers],
                              notes)

    def _add_layer(self, fs: RootFS, ref: RepoRef, layer: Descriptor) -> None:
        blob = self.registry.blobs.open(ref, layer.digest)
        with self.registry.blobs.reader(blob) as raw:
            fs.add_layer(layer.digest, raw)

    def _platform(self, ref: RepoRef, config: Descriptor) -> str:
        if config.size > CONFIG_LIMIT:
            raise ImageUnreadable(f"the image configuration is {config.size} bytes (limit {CONFIG_LIMIT})")
        blob = self.registry.blobs.open(ref, config.digest)
        with self.registry.blobs.reader(blob) as raw:
            try:
                doc = json.loads(raw.read(CONFIG_LIMIT))
            except ValueError:
                raise ImageUnreadable("the image configuration is not JSON") from None
        return _platform(doc if isinstance(doc, dict) else None)

    def _store(self, inventory: ImageInventory) -> None:
        values = {"version": inventory.version, "status": inventory.status,
                  "created_at": self.registry.ctx.clock(), "document": inventory.to_json()}
        table = image_inventories
        with self.registry.ctx.write() as conn:
            held = sa.select(manifests.c.id).where(manifests.c.digest == inventory.digest).limit(1)
            if conn.execute(held).first() is None:
                return  # deleted from every repository while it was read: a row stored now would never be deleted
            done = conn.execute(
                sa.update(table).where(table.c.manifest_digest == inventory.digest).values(**values)
            ).rowcount
            if not done:
                try:
                    with conn.begin_nested():
                        conn.execute(sa.insert(table).values(manifest_digest=inventory.digest, **values))
                except sa.exc.IntegrityError:
                    pass  # another scan of the same image stored the same inventory first


def _is_attestation(child: Descriptor) -> bool:
    annotations = child.annotations or {}
    platform = child.platform or {}
    return annotations.get("vnd.docker.reference.type") == "attestation-manifest" or platform.get("os") == "unknown"


def _platform(doc: dict | None) -> str:
    if not doc:
        return ""
    parts = [str(doc.get("os", "")), str(doc.get("architecture", ""))]
    if doc.get("variant"):
        parts.append(str(doc["variant"]))
    return "/".join(p for p in parts if p)



