"""Image inventories: the packages found in an image, keyed by its manifest digest (content-addressed, so one row
serves every repository holding the image). Scans match advisories against these rows; layers are read once. A row
is deleted with the image's last manifest row (soko.kernel.scan_queue)."""

from __future__ import annotations

import sqlalchemy as sa

from soko.meta.schema.base import DIGEST_LENGTH, Id, Timestamp, metadata

image_inventories = sa.Table(
    "image_inventories",
    metadata,
    sa.Column("manifest_digest", sa.String(DIGEST_LENGTH), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),  # soko.scan.model.INVENTORY_VERSION that built it
    sa.Column("status", sa.String(32), nullable=False),  # COMPLETE | UNSUPPORTED_IMAGE | FAILED
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("document", sa.Text, nullable=False),  # ImageInventory as JSON
)

# Advisories imported with ``soko vulndb import`` (soko.scan.vulndb): one row per advisory, one per package it
# affects (looked up by ecosystem and name when an inventory is matched).
advisories = sa.Table(
    "advisories",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),  # PYSEC-…, GO-…, GHSA-…, ALPINE-CVE-…
    sa.Column("source", sa.String(255), nullable=False),  # osv:<ecosystems> | alpine-secdb:<release>/<repo>
    sa.Column("aliases", sa.Text, nullable=False),  # JSON list
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("uri", sa.String(1024), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),  # ECR's label
    sa.Column("cvss3_score", sa.Float, nullable=True),
    sa.Column("cvss3_vector", sa.String(255), nullable=False),
    sa.Column("modified", Timestamp, nullable=True),
    sa.Column("withdrawn", Timestamp, nullable=True),
    sa.Column("imported_at", Timestamp, nullable=False),
)

advisory_packages = sa.Table(
    "advisory_packages",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("advisory_id", sa.String(255), nullable=False, index=True),
    sa.Column("ecosystem", sa.String(64), nullable=False),
    sa.Column("name", sa.String(512), nullable=False),
    sa.Column("affected", sa.Text, nullable=False),  # JSON {"ranges": […], "versions": […]}
    sa.Index("ix_advisory_packages_name_ecosystem", "name", "ecosystem"),
)

# One image's scan in one repository (ECR's imageScanStatus and findings): requested by StartImageScan or a push,
# run as a leased job ("scan", keyed by this row's id), its findings stored as rendered: BASIC ``findings`` or, for
# an ENHANCED scan (registry scanning configuration), ``enhancedFindings``.
image_scans = sa.Table(
    "image_scans",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("repository_id", Id, sa.ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
    sa.Column("manifest_digest", sa.String(DIGEST_LENGTH), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),  # IN_PROGRESS | COMPLETE | ACTIVE | FAILED | UNSUPPORTED_IMAGE
    sa.Column("scan_type", sa.String(16), nullable=False, server_default="BASIC"),  # BASIC | ENHANCED
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("requested_at", Timestamp, nullable=False),  # the one-scan-per-24-hours quota counts from here
    sa.Column("completed_at", Timestamp, nullable=True),
    sa.Column("source_updated_at", Timestamp, nullable=True),  # newest advisory import the findings saw
    sa.Column("counts", sa.Text, nullable=False),  # JSON {severity: count}
    sa.Column("findings", sa.Text, nullable=False),  # JSON list of ImageScanFinding | EnhancedImageScanFinding
    sa.UniqueConstraint("repository_id", "manifest_digest"),
)
