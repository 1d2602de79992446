"""SBOMs of images: the stored inventory (``Inventories``, read through the ``Registry`` like any client) written
as CycloneDX 1.6 JSON (``cyclonedx-python-lib``) or SPDX 2.3 JSON (``spdx-tools``), each document validated by its
library before it is returned; optionally pushed beside the image as an OCI artifact whose ``subject`` is the image,
so the referrers API (``/v2/…/referrers/``, ListImageReferrers, ``oras discover``) finds it.

Every package is a component/package with its purl, the layer that added it and the file it was found in
(CycloneDX properties ``soko:layer`` and ``soko:path``; an SPDX package comment), the image itself the document's
subject (a CycloneDX ``container`` in metadata; the SPDX package DESCRIBED by the document, which CONTAINS the
rest). An index has one SBOM per image it lists: ask for a child by its digest.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from soko import __version__
from soko.errors import SokoError, Unsupported
from soko.registry import Registry
from soko.registry.manifest_format import parse_manifest
from soko.registry.models import RepoRef
from soko.scan.inventory import COMPLETE, Inventories
from soko.scan.model import ImageInventory

CYCLONEDX, SPDX = "cyclonedx", "spdx"
FORMATS = (CYCLONEDX, SPDX)
MEDIA_TYPES = {CYCLONEDX: "application/vnd.cyclonedx+json", SPDX: "application/spdx+json"}
EMPTY_CONFIG = b"{}"  # the OCI empty descriptor's content (image-spec 1.1)
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class SbomInvalid(SokoError):
    """The library's own validation refused the document Soko wrote (a bug in Soko, never a half-written SBOM)."""


@dataclass(frozen=True, slots=True)
class Sbom:
    image: str  # the image's manifest digest
    format: str
    media_type: str
    document: bytes
    referrer: str | None = None  # the artifact's manifest digest, when attached


class Sboms:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def of(self, ref: RepoRef, reference: str, fmt: str, *, attach: bool = False) -> Sbom:
        if fmt not in FORMATS:
            raise Unsupported(f"SBOM format {fmt!r} is not supported: use one of {', '.join(FORMATS)}")
        record = self.registry.manifests.get(ref, reference)
        parsed = parse_manifest(record.payload, record.media_type)
        if parsed.is_index:
            children = ", ".join(c.digest for c in parsed.children)
            raise Unsupported(f"{reference} is an image index: an SBOM describes one image; ask for one of the "
                              f"images it lists by digest ({children})")
        [inventory] = Inventories(self.registry).of(ref, record.digest)
        if inventory.status != COMPLETE:
            raise Unsupported(f"no SBOM for {record.digest}: its inventory is {inventory.status} ({inventory.reason})")
        name = ref.name
        document = cyclonedx(inventory, name) if fmt == CYCLONEDX else spdx(inventory, name)
        sbom = Sbom(record.digest, fmt, MEDIA_TYPES[fmt], document)
        if attach:
            sbom = Sbom(sbom.image, fmt, sbom.media_type, document,
                        self._attach(ref, record.digest, record.media_type, len(record.payload), sbom))
        return sbom

    def _attach(self, ref: RepoRef, subject: str, subject_type: str, subject_size: int, sbom: Sbom) -> str:
        """Push the document as an OCI artifact (empty config, one layer) whose subject is the image."""
        config = self._blob(ref, EMPTY_CONFIG)
        layer = self._blob(ref, sbom.document)
        manifest = {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": sbom.media_type,
            "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": config, "size": len(EMPTY_CONFIG),
                       "data": "e30="},
            "layers": [{"mediaType": sbom.media_type, "digest": layer, "size": len(sbom.document),
                        "annotations": {"org.opencontainers.image.title": f"sbom.{sbom.format}.json"}}],
            "subject": {"mediaType": subject_type, "digest": subject, "size": subject_size},
            "annotations": {"org.opencontainers.image.created": _now().strftime("%Y-%m-%dT%H:%M:%SZ"),
                            "dev.soko.sbom.generator": f"soko {__version__}"},
        }
        payload = json.dumps(manifest, separators=(",", ":")).encode()
        digest = "sha256:" + hashlib.sha256(payload).hexdigest()
        return self.registry.manifests.put(ref, digest, payload, OCI_MANIFEST).digest

    def _blob(self, ref: RepoRef, data: bytes) -> str:
        return self.registry.uploads.store_bytes(ref, data).digest


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _ref_id(package_index: int, purl: str) -> str:
    """A bom-ref / SPDX id unique within the document (the same purl can be found at two paths)."""
    return f"pkg-{package_index}-{hashlib.sha256(purl.encode()).hexdigest()[:12]}"


# ---- CycloneDX ----------------------------------------------------------------------------------------------------
def cyclonedx(inventory: ImageInventory, name: str) -> bytes:
    from cyclonedx.model import Property
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.tool import ToolRepository
    from cyclonedx.output.json import JsonV1Dot6
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
    from packageurl import PackageURL

    image = Component(type=ComponentType.CONTAINER, name=name, version=inventory.digest, bom_ref="image",
                      properties=[Property(name="soko:platform", value=inventory.platform)] if inventory.platform
                      else None)
    tools = ToolRepository(components=[Component(type=ComponentType.APPLICATION, name="soko", version=__version__)])
    bom = Bom(serial_number=uuid.uuid4(), metadata=BomMetaData(component=image, tools=tools, timestamp=_now()))
    if inventory.os is not None:
        bom.components.add(Component(type=ComponentType.OPERATING_SYSTEM, name=inventory.os.id,
                                     version=inventory.os.version_id or None, bom_ref="os",
                                     description=inventory.os.pretty_name or None))
    for i, p in enumerate(inventory.packages):
        properties = [Property(name="soko:package:type", value=p.type), Property(name="soko:layer", value=p.layer),
                      Property(name="soko:path", value=p.path)]
        if p.source_name and (p.source_name, p.source_version) != (p.name, p.version):
            properties.append(Property(name="soko:source", value=f"{p.source_name} {p.source_version}"))
        bom.components.add(Component(type=ComponentType.LIBRARY, name=p.name, version=p.version,
                                     purl=PackageURL.from_string(p.purl), bom_ref=_ref_id(i, p.purl),
                                     properties=properties))
    for component in bom.components:
        bom.register_dependency(image, [component])
    text = JsonV1Dot6(bom).output_as_string()
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error is not None:
        raise SbomInvalid(f"the CycloneDX document does not validate: {error}")
    return text.encode()


# ---- SPDX ---------------------------------------------------------------------------------------------------------
def spdx(inventory: ImageInventory, name: str) -> bytes:
    from spdx_tools.spdx.model import (
        Actor,
        ActorType,
        CreationInfo,
        Document,
        ExternalPackageRef,
        ExternalPackageRefCategory,
        Package,
        PackagePurpose,
        Relationship,
        RelationshipType,
        SpdxNoAssertion,
    )
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
    from spdx_tools.spdx.writer.json.json_writer import write_document_to_stream

    created = _now()
    info = CreationInfo(
        spdx_version="SPDX-2.3", spdx_id="SPDXRef-DOCUMENT", name=f"{name}@{inventory.digest}",
        document_namespace=f"https://soko.invalid/spdxdocs/{inventory.digest.replace(':', '-')}-{uuid.uuid4()}",
        creators=[Actor(ActorType.TOOL, f"soko-{__version__}")], created=created, data_license="CC0-1.0",
    )
    image = Package("SPDXRef-image", name, SpdxNoAssertion(), version=inventory.digest, files_analyzed=False,
                    primary_package_purpose=PackagePurpose.CONTAINER,
                    comment=f"platform {inventory.platform}" if inventory.platform else None)
    packages = [image]
    relationships = [Relationship("SPDXRef-DOCUMENT", RelationshipType.DESCRIBES, "SPDXRef-image")]
    if inventory.os is not None:
        packages.append(Package("SPDXRef-os", inventory.os.id, SpdxNoAssertion(),
                                version=inventory.os.version_id or None, files_analyzed=False,
                                primary_package_purpose=PackagePurpose.OPERATING_SYSTEM,
                                description=inventory.os.pretty_name or None))
        relationships.append(Relationship("SPDXRef-image", RelationshipType.CONTAINS, "SPDXRef-os"))
    for i, p in enumerate(inventory.packages):
        spdx_id = "SPDXRef-" + _ref_id(i, p.purl)
        comment = f"layer {p.layer}; found in /{p.path}"
        if p.source_name and (p.source_name, p.source_version) != (p.name, p.version):
            comment += f"; source {p.source_name} {p.source_version}"
        packages.append(Package(
            spdx_id, p.name, SpdxNoAssertion(), version=p.version, files_analyzed=False,
            primary_package_purpose=PackagePurpose.LIBRARY, comment=comment,
            external_references=[ExternalPackageRef(ExternalPackageRefCategory.PACKAGE_MANAGER, "purl", p.purl)],
        ))
        relationships.append(Relationship("SPDXRef-image", RelationshipType.CONTAINS, spdx_id))
    document = Document(info, packages=packages, relationships=relationships)
    problems = validate_full_spdx_document(document)
    if problems:
        raise SbomInvalid("the SPDX document does not validate: " + "; ".join(m.validation_message
                                                                             for m in problems[:5]))
    out = io.StringIO()
    write_document_to_stream(document, out, validate=False)  # validated just above
    return out.getvalue().encode()
