"""Parsing and structural validation of image manifests and indexes (OCI image-spec and Docker schema 2).

Only structure is checked here; whether referenced blobs and manifests exist is the service's job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from soko.digest import Digest
from soko.errors import DigestInvalid, ManifestInvalid
from soko.registry import media_types as mt


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    artifact_type: str | None = None
    annotations: dict | None = None
    platform: dict | None = None
    has_urls: bool = False


@dataclass(slots=True)
class ParsedManifest:
    media_type: str
    config: Descriptor | None = None
    layers: list[Descriptor] = field(default_factory=list)
    children: list[Descriptor] = field(default_factory=list)  # index entries
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: dict | None = None

    @property
    def is_index(self) -> bool:
        return self.media_type in mt.INDEXES

    @property
    def blob_descriptors(self) -> list[Descriptor]:
        return ([self.config] if self.config else []) + self.layers

    @property
    def effective_artifact_type(self) -> str | None:
        """artifactType for the referrers API: the manifest's own, else its config media type (image-spec)."""
        if self.artifact_type:
            return self.artifact_type
        return self.config.media_type if self.config else None


def _descriptor(value: object, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise ManifestInvalid(f"{where} must be a descriptor object")
    media_type, digest, size = value.get("mediaType"), value.get("digest"), value.get("size")
    if not isinstance(media_type, str) or not media_type or len(media_type) > 255:
        raise ManifestInvalid(f"{where}: mediaType must be a non-empty string")
    if not isinstance(digest, str):
        raise ManifestInvalid(f"{where}: digest must be a string")
    try:
        Digest.parse(digest)
    except DigestInvalid as exc:
        raise ManifestInvalid(f"{where}: {exc.message}") from None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestInvalid(f"{where}: size must be a non-negative integer")
    artifact_type = value.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise ManifestInvalid(f"{where}: artifactType must be a string")
    annotations = _annotations(value.get("annotations"), where)
    platform = value.get("platform")
    if platform is not None and not isinstance(platform, dict):
        raise ManifestInvalid(f"{where}: platform must be an object")
    urls = value.get("urls")
    if urls is not None and (not isinstance(urls, list) or not all(isinstance(u, str) for u in urls)):
        raise ManifestInvalid(f"{where}: urls must be a list of strings")
    return Descriptor(media_type, digest, size, artifact_type, annotations, platform, bool(urls))


def _annotations(value: object, where: str) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ManifestInvalid(f"{where}: annotations must map strings to strings")
    return value


def parse_manifest(payload: bytes, content_type: str | None) -> ParsedManifest:
    """Parse ``payload``; ``content_type`` is the request's Content-Type (or ECR's imageManifestMediaType)."""
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        raise ManifestInvalid("manifest is not valid JSON") from None
    if b"\\u" in payload:
        try:  # an escaped lone surrogate: stored, it could never be sent back as UTF-8 (e.g. in ListImageReferrers)
            json.dumps(doc, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise ManifestInvalid("manifest contains an unpaired UTF-16 surrogate (\\ud800-\\udfff)") from None
    if not isinstance(doc, dict):
        raise ManifestInvalid("manifest must be a JSON object")
    declared = doc.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise ManifestInvalid("mediaType must be a string")
    content_type = (content_type or "").split(";", 1)[0].strip().lower() or None
    if content_type in mt.DOCKER_SCHEMA1 or declared in mt.DOCKER_SCHEMA1 or doc.get("schemaVersion") == 1:
        raise ManifestInvalid("Docker schema 1 manifests are deprecated and not accepted; push schema 2 or OCI")
    if (
        declared
        and content_type
        and content_type not in ("application/json", "application/octet-stream")
        and declared != content_type
    ):
        raise ManifestInvalid(f"manifest mediaType '{declared}' does not match Content-Type '{content_type}'")
    media_type = declared or content_type or _guess(doc)
    if media_type not in mt.SUPPORTED:
        raise ManifestInvalid(
            f"unsupported manifest media type '{media_type}'; Soko stores OCI image manifests and indexes and "
            "Docker schema 2 manifests and manifest lists"
        )
    if doc.get("schemaVersion") != 2:
        raise ManifestInvalid("schemaVersion must be 2")
    if media_type in mt.INDEXES:
        return _parse_index(doc, media_type)
    return _parse_image(doc, media_type)


def _guess(doc: dict) -> str:
    # OCI allows omitting mediaType; tell an index from an image manifest by its fields.
    return mt.OCI_INDEX if "manifests" in doc else mt.OCI_MANIFEST


def _parse_image(doc: dict, media_type: str) -> ParsedManifest:
    if "manifests" in doc:
        raise ManifestInvalid("an image manifest must not have 'manifests'")
    config = _descriptor(doc.get("config"), "config")
    layers_raw = doc.get("layers")
    if not isinstance(layers_raw, list):
        raise ManifestInvalid("layers must be a list")
    layers = [_descriptor(layer, f"layers[{i}]") for i, layer in enumerate(layers_raw)]
    artifact_type = doc.get("artifactType")
    if artifact_type is not None and (not isinstance(artifact_type, str) or media_type != mt.OCI_MANIFEST):
        raise ManifestInvalid("artifactType must be a string, and only OCI manifests carry it")
    if config.media_type == mt.OCI_EMPTY_CONFIG and not artifact_type:
        raise ManifestInvalid("a manifest with the empty config must set artifactType (OCI image-spec)")
    subject = _descriptor(doc["subject"], "subject") if doc.get("subject") is not None else None
    return ParsedManifest(
        media_type=media_type,
        config=config,
        layers=layers,
        subject=subject,
        artifact_type=artifact_type,
        annotations=_annotations(doc.get("annotations"), "annotations"),
    )


def _parse_index(doc: dict, media_type: str) -> ParsedManifest:
    if "layers" in doc or "config" in doc:
        raise ManifestInvalid("an index must not have 'config' or 'layers'")
    entries = doc.get("manifests")
    if not isinstance(entries, list):
        raise ManifestInvalid("manifests must be a list")
    children = [_descriptor(entry, f"manifests[{i}]") for i, entry in enumerate(entries)]
    artifact_type = doc.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise ManifestInvalid("artifactType must be a string")
    subject = _descriptor(doc["subject"], "subject") if doc.get("subject") is not None else None
    return ParsedManifest(
        media_type=media_type,
        children=children,
        subject=subject,
        artifact_type=artifact_type,
        annotations=_annotations(doc.get("annotations"), "annotations"),
    )
