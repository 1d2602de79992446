"""Findings as ECR answers them: BASIC ``ImageScanFinding`` and ENHANCED ``EnhancedImageScanFinding`` (the shapes of
botocore's ecr model; in AWS the enhanced ones come from Amazon Inspector, whose field values are followed here:
``type`` PACKAGE_VULNERABILITY, ``status`` ACTIVE, ``packageManager`` OS for distribution packages, severity
UNTRIAGED where there is none, remediation "None Provided" without a fix)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from soko.access import repository_arn
from soko.scan.model import Package
from soko.scan.vulndb.matcher import Finding

# Inspector's PackageManager values for Soko's package types
PACKAGE_MANAGERS = {"deb": "OS", "apk": "OS", "rpm": "OS", "pypi": "PYTHONPKG", "npm": "NODEPKG",
                    "golang": "GOBINARY", "maven": "JAR", "gem": "GEMSPEC", "cargo": "CARGO"}


def basic(f: Finding) -> dict:
    """ECR's BASIC ImageScanFinding: name, description, uri, severity, attributes (key/value strings)."""
    attributes = [{"key": "package_version", "value": f.package.version},
                  {"key": "package_name", "value": f.package.name}]
    if f.cvss3_vector:
        attributes.append({"key": "CVSS3_VECTOR", "value": f.cvss3_vector})
    if f.cvss3_score is not None:
        attributes.append({"key": "CVSS3_SCORE", "value": str(f.cvss3_score)})
    attributes.append({"key": "package_type", "value": f.package.type})
    attributes.append({"key": "purl", "value": f.package.purl})
    if f.package.source_name and f.package.source_name != f.package.name:
        attributes.append({"key": "source_package", "value": f"{f.package.source_name} {f.package.source_version}"})
    if f.aliases:
        attributes.append({"key": "aliases", "value": ",".join(f.aliases)[:256]})
    out = {"name": f.name, "uri": f.uri, "severity": f.severity, "attributes": attributes}
    if f.description:
        out["description"] = f.description
    return out


@dataclass(frozen=True, slots=True)
class ImageContext:
    """What an enhanced finding says about the image it was found in."""

    region: str
    account_id: str
    repository: str
    digest: str
    tags: list[str]
    pushed_at: float | None
    architecture: str  # "amd64"
    os_id: str  # os-release ID ("debian"), "" without one
    os_version: str  # os-release VERSION_ID ("12", "3.20.3")

    @property
    def platform(self) -> str:
        """Inspector's platform name: DEBIAN_12, ALPINE_LINUX_3_20, UBUNTU_22_04 ("" without an OS)."""
        name = {"alpine": "ALPINE_LINUX"}.get(self.os_id, self.os_id.upper())
        release = ".".join(self.os_version.split(".")[:2]) if self.os_id == "alpine" else self.os_version
        return f"{name}_{release.replace('.', '_')}" if name and release else name


def finding_arn(image: ImageContext, f: Finding) -> str:
    """Stable across rescans, so a finding keeps its firstObservedAt while it lasts (Inspector's ARNs are too)."""
    key = "\0".join((image.account_id, image.repository, image.digest, f.name, *f.package.key))
    finding_id = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"arn:aws:inspector2:{image.region}:{image.account_id}:finding/{finding_id}"


def enhanced(f: Finding, image: ImageContext, now: float, first_observed: dict[str, float]) -> dict:
    """ECR's EnhancedImageScanFinding for one finding. ``first_observed`` maps the previous result's finding ARNs
    to their firstObservedAt (a finding seen before keeps it)."""
    arn = finding_arn(image, f)
    arch = image.architecture
    version, epoch, release = split_version(f.package)
    package = {"name": f.package.name, "version": version, "epoch": epoch, "packageManager":
               PACKAGE_MANAGERS.get(f.package.type, f.package.type.upper()), "filePath": f.package.path,
               "sourceLayerHash": f.package.layer, "fixedInVersion": f.fixed_in or "NotAvailable"}
    if release:
        package["release"] = release
    if f.package.arch or arch:
        package["arch"] = f.package.arch or arch
    cvss = []
    if f.cvss3_vector and f.cvss3_score is not None:
        cvss_version = f.cvss3_vector.split("/", 1)[0].removeprefix("CVSS:") or "3.1"
        cvss = [{"baseScore": f.cvss3_score, "scoringVector": f.cvss3_vector, "source": _source(f, image),
                 "version": cvss_version}]
    details: dict = {"vulnerabilityId": f.name, "source": _source(f, image), "vendorSeverity": f.severity,
                     "vulnerablePackages": [package], "cvss": cvss, "referenceUrls": [f.uri] if f.uri else [],
                     "relatedVulnerabilities": f.aliases}
    if f.uri:
        details["sourceUrl"] = f.uri
    if f.modified is not None:
        details["vendorUpdatedAt"] = f.modified
    out: dict = {
        "awsAccountId": image.account_id, "findingArn": arn, "description": f.description or f.name,
        "title": f"{f.name} - {f.package.name}", "type": "PACKAGE_VULNERABILITY", "status": "ACTIVE",
        "severity": "UNTRIAGED" if f.severity == "UNDEFINED" else f.severity,
        "firstObservedAt": first_observed.get(arn, now), "lastObservedAt": now, "updatedAt": now,
        "packageVulnerabilityDetails": details,
        "remediation": {"recommendation": {"text": (f"Upgrade {f.package.name} to version {f.fixed_in} or later."
                                                    if f.fixed_in else "None Provided")}},
        "fixAvailable": "YES" if f.fixed_in else "NO",
        "resources": [{
            "id": f"{repository_arn(image.region, image.account_id, image.repository)}/{image.digest}",
            "type": "AWS_ECR_CONTAINER_IMAGE",
            "details": {"awsEcrContainerImage": {
                "architecture": arch, "imageHash": image.digest, "imageTags": image.tags, "platform": image.platform,
                "registry": image.account_id, "repositoryName": image.repository,
                **({"pushedAt": image.pushed_at} if image.pushed_at is not None else {}),
            }},
        }],
    }
    if f.cvss3_score is not None:
        out["score"] = f.cvss3_score
        out["scoreDetails"] = {"cvss": {"score": f.cvss3_score, "scoreSource": _source(f, image),
                                        "scoringVector": f.cvss3_vector, "version": cvss[0]["version"] if cvss
                                        else "3.1", "adjustments": []}}
    return out


def split_version(package: Package) -> tuple[str, int, str]:
    """(version, epoch, release) as Inspector reports a distribution package: dpkg ``[epoch:]upstream[-revision]``,
    apk ``version-rN``; other packages keep their version whole."""
    version, epoch = package.version, 0
    if package.type == "deb":
        head, sep, rest = version.partition(":")
        if sep and head.isdigit():
            epoch, version = int(head), rest
    if package.type in ("deb", "apk", "rpm") and "-" in version:
        upstream, _, release = version.rpartition("-")
        return upstream, epoch, release
    return version, epoch, ""


def _source(f: Finding, image: ImageContext) -> str:
    """The vulnerability data's source, named as Inspector names its feeds where one applies."""
    if f.package.type == "deb" and image.os_id in ("debian", "ubuntu"):
        return f"{image.os_id.upper()}_CVE"
    if f.package.type == "apk":
        return "ALPINE_SECDB"
    return "OSV"


def counts(rendered: list[dict]) -> dict[str, int]:
    """findingSeverityCounts: a key per severity present."""
    out: dict[str, int] = {}
    for finding in rendered:
        out[finding["severity"]] = out.get(finding["severity"], 0) + 1
    return out
